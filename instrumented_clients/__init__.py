"""instrumented-clients: resilient RabbitMQ, Redis and SQL clients that show what they are doing.

Every retry, connection-state change, circuit-breaker trip, buffered and dropped event and
publisher confirm is a Prometheus metric and OpenTelemetry trace data.

The names of the in-house retry helpers (``RetryConfig``, ``with_db_retry``, ...) live in
:mod:`instrumented_clients.compat`.
"""

import warnings
from typing import TYPE_CHECKING, Any

from instrumented_clients._lazy import lazy_names
from instrumented_clients.client import HealthReport, ResilientClient
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
    RetryPolicy,
    is_transient,
    retry,
)
from instrumented_clients.telemetry import Telemetry, get_default_telemetry, set_default_telemetry

__version__ = "0.1.0"

# The clients need their driver extras; they are imported on first access so that
# ``import instrumented_clients`` works with the core dependencies alone.
_LAZY_MODULES: dict[str, tuple[str, ...]] = {
    "instrumented_clients.db": (
        "AsyncResilientDatabase", "CommitOutcomeUnknownError", "DatabaseUnavailableError",
        "ExecuteResult", "ResilientDatabase", "is_transient_db_error",
    ),
    "instrumented_clients.redis": ("AsyncResilientRedis", "ResilientRedis",
                                   "ResilientRedisCluster"),
    "instrumented_clients.rabbitmq": (
        "AsyncResilientConsumer", "AsyncResilientPublisher", "IncomingMessage", "PublishResult",
        "RejectMessage", "ResilientConsumer", "ResilientPublisher", "Topology",
        "is_transient_rmq_error",
    ),
    "instrumented_clients.health": (
        "HealthRegistry", "MetricsServer", "clear_multiprocess_dir", "make_asgi_app",
        "make_wsgi_app", "serve_metrics_and_health",
    ),
}
_load, _names = lazy_names(__name__, _LAZY_MODULES, globals())

# Importable from here for one more release, with a DeprecationWarning.
_MOVED_TO_COMPAT = frozenset({
    "DatabaseConnectionRetry", "RedisConnectionRetry", "ResilientConnection", "RetryConfig",
    "get_db_connection_retry", "get_redis_connection_retry", "is_transient_http_error",
    "retry_async", "with_db_retry", "with_redis_retry",
})

if TYPE_CHECKING:
    from instrumented_clients.db import (
        AsyncResilientDatabase,
        CommitOutcomeUnknownError,
        DatabaseUnavailableError,
        ExecuteResult,
        ResilientDatabase,
        is_transient_db_error,
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
        AsyncResilientConsumer,
        AsyncResilientPublisher,
        IncomingMessage,
        PublishResult,
        RejectMessage,
        ResilientConsumer,
        ResilientPublisher,
        Topology,
        is_transient_rmq_error,
    )
    from instrumented_clients.redis import (
        AsyncResilientRedis,
        ResilientRedis,
        ResilientRedisCluster,
    )


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_COMPAT:
        warnings.warn(
            f"instrumented_clients.{name} is deprecated and will be removed in the next release: "
            f"import it from instrumented_clients.compat",
            DeprecationWarning, stacklevel=2)
        from instrumented_clients import compat

        return getattr(compat, name)
    return _load(name)


def __dir__() -> list[str]:
    return _names()


__all__ = [
    "AsyncResilientConsumer",
    "AsyncResilientDatabase",
    "AsyncResilientPublisher",
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
    "DatabaseUnavailableError",
    "ErrorCategory",
    "EventBuffer",
    "ExecuteResult",
    "Guard",
    "HealthRegistry",
    "HealthReport",
    "IllegalTransitionError",
    "IncomingMessage",
    "JitterMode",
    "MetricsServer",
    "OverflowPolicy",
    "PublishResult",
    "RejectMessage",
    "ResilienceError",
    "ResilientClient",
    "ResilientConsumer",
    "ResilientDatabase",
    "ResilientPublisher",
    "ResilientRedis",
    "ResilientRedisCluster",
    "RetryBudget",
    "RetryPolicy",
    "Telemetry",
    "Topology",
    "__version__",
    "clear_multiprocess_dir",
    "get_default_telemetry",
    "is_transient",
    "is_transient_db_error",
    "is_transient_rmq_error",
    "make_asgi_app",
    "make_wsgi_app",
    "retry",
    "serve_metrics_and_health",
    "set_default_telemetry",
]
