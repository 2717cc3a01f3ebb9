"""The resilience core: retry, budget, circuit breaker, connection state, buffer, clock, errors.

Pure Python: no driver and no telemetry backend is imported here. Components report through the
:class:`~instrumented_clients.resilience.events.Instrumentation` protocol.
"""

from instrumented_clients.resilience.breaker import BreakerState, CircuitBreaker
from instrumented_clients.resilience.budget import RetryBudget
from instrumented_clients.resilience.buffer import BufferStats, EventBuffer, OverflowPolicy
from instrumented_clients.resilience.clock import SYSTEM_CLOCK, Clock, SystemClock
from instrumented_clients.resilience.compat import RetryConfig, retry_async
from instrumented_clients.resilience.context import ClientContext
from instrumented_clients.resilience.errors import (
    BufferFullError,
    CircuitOpenError,
    Classifier,
    ErrorCategory,
    IllegalTransitionError,
    ResilienceError,
    classify_exception,
    is_transient,
    is_transient_http_error,
)
from instrumented_clients.resilience.retry import Guard, JitterMode, RetryPolicy, retry
from instrumented_clients.resilience.state import ConnectionState, ConnectionStateMachine
from instrumented_clients.resilience.tracker import ConnectionTracker

__all__ = [
    "SYSTEM_CLOCK",
    "BreakerState",
    "BufferFullError",
    "BufferStats",
    "CircuitBreaker",
    "CircuitOpenError",
    "Classifier",
    "ClientContext",
    "Clock",
    "ConnectionState",
    "ConnectionStateMachine",
    "ConnectionTracker",
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
    "SystemClock",
    "classify_exception",
    "is_transient",
    "is_transient_http_error",
    "retry",
    "retry_async",
]
