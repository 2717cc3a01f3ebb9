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
_LAZY_MODULES: dict[str, tuple[str, ...]] = {
    "instrumented_clients.db": (
        "AsyncResilientDatabase", "CommitOutcomeUnknownError", "DatabaseConnectionRetry",
        "DatabaseUnavailableError",
        "ExecuteResult", "ResilientDatabase", "get_db_connection_retry", "is_transient_db_error",
        "with_db_retry",
    ),
    "instrumented_clients.redis": (
        "AsyncResilientRedis", "RedisConnectionRetry", "ResilientRedis",
        "get_redis_connection_retry", "with_redis_retry",
    ),
    "instrumented_clients.rabbitmq": (
        "IncomingMessage", "PublishResult", "RejectMessage", "ResilientConnection",
        "ResilientConsumer", "ResilientPublisher", "Topology", "is_transient_rmq_error",
    ),
    "instrumented_clients.health": (
        "HealthRegistry", "MetricsServer", "clear_multiprocess_dir", "make_asgi_app",
        "make_wsgi_app", "serve_metrics_and_health",
    ),
}
_LAZY: dict[str, str] = {
    name: module for module, names in _LAZY_MODULES.items() for name in names
}

if TYPE_CHECKING:
    from instrumented_clients.db import (
        AsyncResilientDatabase,
        CommitOutcomeUnknownError,
        DatabaseConnectionRetry,
        DatabaseUnavailableError,
        ExecuteResult,
        ResilientDatabase,
        get_db_connection_retry,
        is_transient_db_error,
        with_db_retry,
    )
    from instrumented_clients.health import (
        HealthRegistry,
        MetricsServer,
        clear_multiprocess_dir,
        make_asgi_app,
        make_wsgi_app,
        serve_metrics_and_health,
    )
    from instrumented_clients.rabbitmq import (
        IncomingMessage,
        PublishResult,
        RejectMessage,
        ResilientConnection,
        ResilientConsumer,
        ResilientPublisher,
        Topology,
        is_transient_rmq_error,
    )
    from instrumented_clients.redis import (
        AsyncResilientRedis,
        RedisConnectionRetry,
        ResilientRedis,
        get_redis_connection_retry,
        with_redis_retry,
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
    "AsyncResilientDatabase",
    "AsyncResilientRedis",
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
    "HealthRegistry",
    "IllegalTransitionError",
    "IncomingMessage",
    "JitterMode",
    "MetricsServer",
    "OverflowPolicy",
    "PublishResult",
    "RedisConnectionRetry",
    "RejectMessage",
    "ResilienceError",
    "ResilientConnection",
    "ResilientConsumer",
    "ResilientDatabase",
    "ResilientPublisher",
    "ResilientRedis",
    "RetryBudget",
    "RetryConfig",
    "RetryPolicy",
    "Telemetry",
    "Topology",
    "__version__",
    "clear_multiprocess_dir",
    "get_db_connection_retry",
    "get_default_telemetry",
    "get_redis_connection_retry",
    "is_transient",
    "is_transient_db_error",
    "is_transient_http_error",
    "is_transient_rmq_error",
    "make_asgi_app",
    "make_wsgi_app",
    "retry",
    "retry_async",
    "serve_metrics_and_health",
    "set_default_telemetry",
    "with_db_retry",
    "with_redis_retry",
]
