"""instrumented-clients: resilient RabbitMQ, Redis and SQL clients that show what they are doing.

Every retry, connection-state change, circuit-breaker trip, buffered and dropped event and
publisher confirm is a Prometheus metric and OpenTelemetry trace data.
"""

from typing import TYPE_CHECKING, Any

from instrumented_clients.config import ConfigError
from instrumented_clients.resilience import (
    BreakerState,
    BufferFullError,
    BufferStats,
    CircuitBreaker,
    CircuitOpenError,
    ConnectionState,
    ConnectionStateMachine,
    ErrorCategory,
    EventBuffer,
    Guard,
    IllegalTransitionError,
    JitterMode,
    OverflowPolicy,
    ResilienceError,
    RetryBudget,
    RetryConfig,
    RetryPolicy,
    is_transient,
    is_transient_http_error,
    retry,
    retry_async,
)
from instrumented_clients.telemetry import Telemetry, get_default_telemetry, set_default_telemetry

__version__ = "0.1.0"

# The clients need their driver extras; they are imported on first access so that
# ``import instrumented_clients`` works with the core dependencies alone.
_LAZY: dict[str, str] = {
    # SQL (extra: db, postgres, mysql)
    "ResilientDatabase": "instrumented_clients.db",
    "DatabaseConnectionRetry": "instrumented_clients.db",
    "with_db_retry": "instrumented_clients.db",
    "get_db_connection_retry": "instrumented_clients.db",
    "CommitOutcomeUnknownError": "instrumented_clients.db",
    "DatabaseUnavailableError": "instrumented_clients.db",
    "ExecuteResult": "instrumented_clients.db",
    "is_transient_db_error": "instrumented_clients.db",
}

if TYPE_CHECKING:
    from instrumented_clients.db import (
        CommitOutcomeUnknownError,
        DatabaseConnectionRetry,
        DatabaseUnavailableError,
        ExecuteResult,
        ResilientDatabase,
        get_db_connection_retry,
        is_transient_db_error,
        with_db_retry,
    )


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'instrumented_clients' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "BreakerState",
    "BufferFullError",
    "BufferStats",
    "CircuitBreaker",
    "CircuitOpenError",
    "CommitOutcomeUnknownError",
    "ConfigError",
    "ConnectionState",
    "ConnectionStateMachine",
    "DatabaseConnectionRetry",
    "DatabaseUnavailableError",
    "ErrorCategory",
    "EventBuffer",
    "ExecuteResult",
    "Guard",
    "IllegalTransitionError",
    "JitterMode",
    "OverflowPolicy",
    "ResilienceError",
    "ResilientDatabase",
    "RetryBudget",
    "RetryConfig",
    "RetryPolicy",
    "Telemetry",
    "__version__",
    "get_db_connection_retry",
    "get_default_telemetry",
    "is_transient",
    "is_transient_db_error",
    "is_transient_http_error",
    "retry",
    "retry_async",
    "set_default_telemetry",
    "with_db_retry",
]
