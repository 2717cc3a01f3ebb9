"""How many messages the circuit breaker lets a publisher send now.

Transport-agnostic and free of I/O; used from the thread that owns the channel. While the
breaker is closed the whole confirm window is open. While it is open nothing is sent (the caller
schedules a wake-up after the cool-down); when the cool-down is over exactly one message goes out
as the half-open probe, and its confirm (or refusal) decides whether the breaker closes again.
"""

from __future__ import annotations

from instrumented_clients.resilience.breaker import BreakerState, CircuitBreaker

__all__ = ["BreakerGate"]

_PENDING = object()  # the probe slot is granted; the next message sent is the probe


class BreakerGate:
    """The publish window as the breaker allows it, and the one probe message of half-open."""

    __slots__ = ("_probe", "breaker")

    def __init__(self, breaker: CircuitBreaker | None) -> None:
        self.breaker = breaker
        self._probe: object | None = None

    def budget(self, room: int, has_work: bool) -> tuple[int, float]:
        """``(messages that may be sent now, seconds until asking again is worth it)``; the
        second is 0 unless the breaker is open and cooling down."""
        breaker = self.breaker
        if breaker is None or breaker.state is BreakerState.CLOSED:
            return room, 0.0
        if self._probe is not None or room <= 0 or not has_work:
            return 0, 0.0  # the probe slot is asked for only with a message to probe with
        remaining = breaker.remaining()
        if remaining > 0:
            return 0, remaining
        try:
            breaker.before_call("publish")
        except Exception:
            return 0, 0.0
        self._probe = _PENDING
        return 1, 0.0

    @property
    def idle(self) -> bool:
        """No probe is granted or in flight (settling a message needs no look at it)."""
        return self._probe is None

    @property
    def probing(self) -> bool:
        """The probe slot is granted and no message took it yet."""
        return self._probe is _PENDING

    def sent(self, message: object) -> None:
        """A message went out: if the probe slot was granted, it is the probe."""
        if self._probe is _PENDING:
            self._probe = message

    def refused(self, error: BaseException) -> None:
        """The message meant as the probe was refused before it was sent (the broker answered,
        so the breaker hears of a failure)."""
        if self._probe is _PENDING:
            self._probe = None
            if self.breaker is not None:
                self.breaker.on_failure(error)

    def settled(self, message: object) -> None:
        """A message was resolved: if it was the probe, the slot is free again."""
        if self._probe is message:
            self._probe = None

    def reset(self) -> None:
        """The channel is gone: a probe in flight is lost with it."""
        self._probe = None
