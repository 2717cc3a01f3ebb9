"""What the resilience core reports, and the protocol it reports through.

The core imports no telemetry backend. It calls an :class:`Instrumentation` — the Prometheus,
OpenTelemetry and logging sinks in :mod:`instrumented_clients.telemetry` implement it — with frozen,
slotted events. The success path is the exception: it calls
:meth:`OperationObserver.finish` with plain values, so no event object is allocated per call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeAlias

__all__ = [
    "NULL_INSTRUMENTATION",
    "BreakerRejected",
    "BreakerStateChanged",
    "ConnectionBlocked",
    "ConnectionStateChanged",
    "Event",
    "EventBuffered",
    "EventsDropped",
    "EventsFlushed",
    "IllegalTransition",
    "Instrumentation",
    "MessageConsumed",
    "MessagesResent",
    "NullInstrumentation",
    "OperationObserver",
    "Outcome",
    "PublishConfirmed",
    "ReconnectAttempt",
    "ReconnectFinished",
    "RetriesExhausted",
    "RetryBudgetDenied",
    "RetryScheduled",
    "SpanKindName",
    "get_default_instrumentation",
    "set_default_instrumentation",
]

# The OpenTelemetry span kind of an operation, named without importing OpenTelemetry here.
SpanKindName: TypeAlias = Literal["client", "producer", "consumer", "internal"]

Outcome: TypeAlias = Literal[
    "success", "success_after_retry", "failure", "failure_after_retry", "rejected", "buffered"
]
DropReason: TypeAlias = Literal["overflow", "expired", "shutdown"]
ConfirmOutcome: TypeAlias = Literal["ack", "nack", "returned", "timeout"]
ConsumeOutcome: TypeAlias = Literal["ack", "requeue", "reject"]


@dataclass(frozen=True, slots=True)
class RetryScheduled:
    """An attempt failed with a retryable error; the next one starts after ``delay``."""

    system: str
    client: str
    operation: str
    attempt: int
    max_attempts: int | None
    delay: float
    error_type: str
    error: BaseException
    target: str


@dataclass(frozen=True, slots=True)
class RetriesExhausted:
    """The last allowed attempt failed (or the deadline left no room for another)."""

    system: str
    client: str
    operation: str
    attempts: int
    error_type: str
    error: BaseException
    target: str


@dataclass(frozen=True, slots=True)
class RetryBudgetDenied:
    """A retry was refused because the client's retry budget is spent."""

    system: str
    client: str
    operation: str
    error_type: str


@dataclass(frozen=True, slots=True)
class ConnectionStateChanged:
    """A connection moved between states; ``from_state`` is None for the initial state."""

    system: str
    client: str
    from_state: str | None
    to_state: str
    at: float
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class IllegalTransition:
    """A transition was refused by the state table (a bug, counted and logged)."""

    system: str
    client: str
    from_state: str
    to_state: str


@dataclass(frozen=True, slots=True)
class ReconnectAttempt:
    """One attempt of a reconnect cycle."""

    system: str
    client: str
    attempt: int
    outcome: Literal["success", "failure"]
    error_type: str | None = None
    error: BaseException | None = None
    next_delay: float | None = None


@dataclass(frozen=True, slots=True)
class ReconnectFinished:
    """A reconnect cycle ended: connected again (``success``) or the policy is spent."""

    system: str
    client: str
    outcome: Literal["success", "failure"]
    duration: float
    attempts: int


@dataclass(frozen=True, slots=True)
class ConnectionBlocked:
    """The broker blocked (memory or disk alarm) or unblocked the connection."""

    system: str
    client: str
    blocked: bool
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class BreakerStateChanged:
    """A circuit breaker moved between ``closed``, ``open`` and ``half_open``."""

    system: str
    client: str
    from_state: str | None
    to_state: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class BreakerRejected:
    """An open breaker refused a call; ``remaining`` is the cool-down left."""

    system: str
    client: str
    operation: str
    remaining: float


@dataclass(frozen=True, slots=True)
class EventBuffered:
    """An event was taken into the buffer."""

    system: str
    client: str
    depth: int
    capacity: int


@dataclass(frozen=True, slots=True)
class EventsFlushed:
    """``count`` events left the buffer for delivery."""

    system: str
    client: str
    count: int
    depth: int


@dataclass(frozen=True, slots=True)
class EventsDropped:
    """``count`` events were lost, for ``reason``."""

    system: str
    client: str
    reason: DropReason
    count: int
    depth: int


@dataclass(frozen=True, slots=True)
class PublishConfirmed:
    """The broker settled ``count`` publishes (one ack frame may settle many)."""

    system: str
    client: str
    outcome: ConfirmOutcome
    count: int = 1


@dataclass(frozen=True, slots=True)
class MessagesResent:
    """Unconfirmed messages were published again after a reconnect."""

    system: str
    client: str
    count: int


@dataclass(frozen=True, slots=True)
class MessageConsumed:
    """A consumer settled a delivery after its handler ran for ``duration`` seconds."""

    system: str
    client: str
    outcome: ConsumeOutcome
    duration: float


Event: TypeAlias = (
    RetryScheduled
    | RetriesExhausted
    | RetryBudgetDenied
    | ConnectionStateChanged
    | IllegalTransition
    | ReconnectAttempt
    | ReconnectFinished
    | ConnectionBlocked
    | BreakerStateChanged
    | BreakerRejected
    | EventBuffered
    | EventsFlushed
    | EventsDropped
    | PublishConfirmed
    | MessagesResent
    | MessageConsumed
)


class OperationObserver(Protocol):
    """Bound to one (system, client, operation); called once per logical operation."""

    @property
    def tracing(self) -> bool:
        """Whether :meth:`begin` should be called (a tracer is configured)."""
        ...

    def begin(self) -> Any:
        """Open the operation's span and make it current; returns an opaque scope."""
        ...

    @property
    def record_success(self) -> Callable[[float], object]:
        """Records a success at the first attempt, without a span, taking its duration: the same
        as ``finish("success", duration, 1)``, in one call for the hot path."""
        ...

    def finish(
        self,
        outcome: Outcome,
        duration: float,
        attempts: int,
        scope: Any = None,
        error: BaseException | None = None,
    ) -> None:
        """Record the finished operation (and close the scope from :meth:`begin`)."""
        ...


class Instrumentation(Protocol):
    """The one protocol the core reports through."""

    def emit(self, event: Event) -> None:
        """Handle one event; must never raise."""
        ...

    def observe_operation(
        self,
        system: str,
        client: str,
        operation: str,
        *,
        span_name: str | None = None,
        span_attributes: dict[str, Any] | None = None,
        span_kind: SpanKindName = "client",
        describe_error: Callable[[BaseException], Mapping[str, Any]] | None = None,
    ) -> OperationObserver:
        """The hot-path observer for one operation, created once and cached by the caller."""
        ...


def _ignore(duration: float) -> None:
    return None


class _NullObserver:
    __slots__ = ()
    tracing = False
    record_success = staticmethod(_ignore)

    def begin(self) -> None:
        return None

    def finish(
        self,
        outcome: Outcome,
        duration: float,
        attempts: int,
        scope: Any = None,
        error: BaseException | None = None,
    ) -> None:
        return None


class NullInstrumentation:
    """Reports nothing."""

    __slots__ = ()
    _observer = _NullObserver()

    def emit(self, event: Event) -> None:
        return None

    def observe_operation(
        self,
        system: str,
        client: str,
        operation: str,
        *,
        span_name: str | None = None,
        span_attributes: dict[str, Any] | None = None,
        span_kind: SpanKindName = "client",
        describe_error: Callable[[BaseException], Mapping[str, Any]] | None = None,
    ) -> OperationObserver:
        return self._observer


NULL_INSTRUMENTATION = NullInstrumentation()

_default_factory: Callable[[], Instrumentation] = lambda: NULL_INSTRUMENTATION  # noqa: E731


def set_default_instrumentation(factory: Callable[[], Instrumentation]) -> None:
    """Set what components use when no instrumentation is passed (the package's default
    :class:`~instrumented_clients.telemetry.Telemetry`, installed on import)."""
    global _default_factory
    _default_factory = factory


def get_default_instrumentation() -> Instrumentation:
    """The instrumentation components fall back to; resolved once, at their construction."""
    return _default_factory()
