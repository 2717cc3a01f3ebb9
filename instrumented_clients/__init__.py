"""instrumented-clients: resilient RabbitMQ, Redis and SQL clients that show what they are doing.

Every retry, connection-state change, circuit-breaker trip, buffered and dropped event and
publisher confirm is a Prometheus metric and OpenTelemetry trace data.
"""

from instrumented_clients.config import ConfigError
from instrumented_clients.resilience import (
    BreakerState,
    BufferFullError,
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

__all__ = [
    "BreakerState",
    "BufferFullError",
    "CircuitBreaker",
    "CircuitOpenError",
    "ConfigError",
    "ConnectionState",
    "ConnectionStateMachine",
    "ErrorCategory",
    "EventBuffer",
    "Guard",
    "IllegalTransitionError",
    "JitterMode",
    "OverflowPolicy",
    "ResilienceError",
    "RetryBudget",
    "RetryConfig",
    "RetryPolicy",
    "Telemetry",
    "__version__",
    "get_default_telemetry",
    "is_transient",
    "is_transient_http_error",
    "retry",
    "retry_async",
    "set_default_telemetry",
]
