"""Logging sink: one line per retry in the in-house helpers' form, rate-limited.

``Attempt 2/5 failed for create_worker with ConnectionError: refused. Retrying in 2.1s...``

Lines are limited per (client, kind, error type): ``burst`` lines per ``interval`` seconds; the
next line let through says how many were suppressed (also in ``extra["suppressed"]``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from instrumented_clients.redaction import error_text, redact_text
from instrumented_clients.resilience import events as ev
from instrumented_clients.resilience.clock import SYSTEM_CLOCK, Clock

__all__ = ["LoggingSink", "RateLimiter"]


class RateLimiter:
    """At most ``burst`` admissions per key per ``interval``; counts what it refuses."""

    def __init__(self, burst: int = 5, interval: float = 60.0, clock: Clock = SYSTEM_CLOCK) -> None:
        self.burst = burst
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, ...], list[float | int]] = {}

    def admit(self, key: tuple[str, ...]) -> tuple[bool, int]:
        """(admitted, lines suppressed since the last admitted one)."""
        now = self._clock.monotonic()
        with self._lock:
            window = self._windows.get(key)
            if window is None or now - window[0] >= self.interval:
                suppressed = int(window[2]) if window else 0
                self._windows[key] = [now, 1, 0]
                return True, suppressed
            if window[1] < self.burst:
                window[1] += 1
                suppressed, window[2] = int(window[2]), 0
                return True, suppressed
            window[2] += 1
            return False, 0


class LoggingSink:
    """Writes the core's events as log records with structured ``extra`` fields."""

    def __init__(
        self,
        logger: logging.Logger | None = None,
        *,
        burst: int = 5,
        interval: float = 60.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.logger = logger or logging.getLogger("instrumented_clients")
        self.limiter = RateLimiter(burst, interval, clock)
        self._handlers: dict[type[Any], Callable[[Any], None]] = {
            ev.RetryScheduled: self._on_retry,
            ev.RetriesExhausted: self._on_exhausted,
            ev.RetryBudgetDenied: self._on_budget_denied,
            ev.ConnectionStateChanged: self._on_connection_state,
            ev.IllegalTransition: self._on_illegal,
            ev.ReconnectAttempt: self._on_reconnect_attempt,
            ev.BreakerStateChanged: self._on_breaker_state,
            ev.EventsDropped: self._on_dropped,
            ev.ConnectionBlocked: self._on_blocked,
        }

    def emit(self, event: ev.Event) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def _limited(
        self, level: int, key: tuple[str, ...], message: str, *args: object, **extra: Any
    ) -> None:
        if not self.logger.isEnabledFor(level):
            return
        admitted, suppressed = self.limiter.admit(key)
        if not admitted:
            return
        if suppressed:
            message += " (%d similar lines suppressed)"
            args = (*args, suppressed)
        self.logger.log(level, message, *args, extra={**extra, "suppressed": suppressed})

    def _on_retry(self, e: ev.RetryScheduled) -> None:
        total = "?" if e.max_attempts is None else str(e.max_attempts)
        self._limited(
            logging.WARNING, ("retry", e.client, e.error_type),
            "Attempt %d/%s failed for %s with %s: %s. Retrying in %.1fs...",
            e.attempt, total, e.target, type(e.error).__name__, redact_text(str(e.error)), e.delay,
            system=e.system, client=e.client, operation=e.operation, attempt=e.attempt,
            error_type=e.error_type, delay=e.delay,
        )

    def _on_exhausted(self, e: ev.RetriesExhausted) -> None:
        self._limited(
            logging.ERROR, ("exhausted", e.client, e.error_type),
            "All %d attempts failed for %s with %s: %s",
            e.attempts, e.target, type(e.error).__name__, redact_text(str(e.error)),
            system=e.system, client=e.client, operation=e.operation, attempts=e.attempts,
            error_type=e.error_type,
        )

    def _on_budget_denied(self, e: ev.RetryBudgetDenied) -> None:
        self._limited(
            logging.WARNING, ("budget", e.client),
            "Retry budget of %s/%s spent; failing %s without retrying",
            e.system, e.client, e.operation, system=e.system, client=e.client,
        )

    def _on_connection_state(self, e: ev.ConnectionStateChanged) -> None:
        if e.from_state is None:
            return
        level = logging.WARNING if e.to_state in ("failed", "disconnected") else logging.INFO
        self._limited(
            level, ("state", e.client, e.to_state),
            "%s/%s connection %s -> %s%s",
            e.system, e.client, e.from_state, e.to_state,
            f" ({redact_text(e.reason)})" if e.reason else "",
            system=e.system, client=e.client, from_state=e.from_state, to_state=e.to_state,
        )

    def _on_illegal(self, e: ev.IllegalTransition) -> None:
        self.logger.error(
            "%s/%s illegal connection state transition %s -> %s (ignored)",
            e.system, e.client, e.from_state, e.to_state,
            extra={"system": e.system, "client": e.client},
        )

    def _on_reconnect_attempt(self, e: ev.ReconnectAttempt) -> None:
        if e.outcome == "success":
            self.logger.info("%s/%s reconnected after %d attempt(s)", e.system, e.client,
                             e.attempt, extra={"system": e.system, "client": e.client})
            return
        self._limited(
            logging.WARNING, ("reconnect", e.client, e.error_type or ""),
            "%s/%s reconnect attempt %d failed with %s: %s%s",
            e.system, e.client, e.attempt, e.error_type,
            error_text(e.error) if e.error is not None else "",
            f"; next attempt in {e.next_delay:.1f}s" if e.next_delay is not None else "",
            system=e.system, client=e.client, attempt=e.attempt, error_type=e.error_type,
        )

    def _on_breaker_state(self, e: ev.BreakerStateChanged) -> None:
        if e.from_state is None:
            return
        level = logging.WARNING if e.to_state == "open" else logging.INFO
        self.logger.log(
            level, "%s/%s circuit breaker %s -> %s (%s)",
            e.system, e.client, e.from_state, e.to_state, e.reason or "",
            extra={"system": e.system, "client": e.client, "to_state": e.to_state},
        )

    def _on_dropped(self, e: ev.EventsDropped) -> None:
        self._limited(
            logging.WARNING, ("dropped", e.client, e.reason),
            "%s/%s dropped %d buffered event(s): %s",
            e.system, e.client, e.count, e.reason,
            system=e.system, client=e.client, reason=e.reason, count=e.count,
        )

    def _on_blocked(self, e: ev.ConnectionBlocked) -> None:
        self.logger.warning(
            "%s/%s connection %s by the broker%s", e.system, e.client,
            "blocked" if e.blocked else "unblocked", f": {e.reason}" if e.reason else "",
            extra={"system": e.system, "client": e.client, "blocked": e.blocked},
        )
