"""Connection state of a ResilientRedis, followed from the outcome of its attempts.

redis-py connects lazily and per pooled connection, so there is no connection object to watch;
the state is inferred from the calls instead:

- CONNECTED after a command (or PING) succeeds, or the server answered with an error;
- DISCONNECTED when an attempt fails on the connection (connection error, timeout); the reconnect
  cycle starts there, and every later attempt that connects (or fails to) is a
  :class:`ReconnectAttempt` — commands that were in flight on the same dropped link are one loss,
  not many attempts;
- CONNECTING while a further attempt of that cycle is under way (the first connection of a
  healthy start goes straight to CONNECTED: it is not a reconnection);
- FAILED when a call gave up on a connection error its policy would have retried (attempts,
  deadline or budget spent), or connecting failed for good (authentication, a TLS certificate
  that does not verify); CONNECTED again on the next success;
- CLOSING/CLOSED on ``close()``.

All of this runs on slow paths only: the hot path reads one boolean, ``_connected``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Final

import redis

from instrumented_clients.redaction import describe_error
from instrumented_clients.redis.errors import StaleConnectionError, classify, was_unsent
from instrumented_clients.redis.pool_metrics import bind_pool_gauges_to
from instrumented_clients.resilience import (
    CircuitOpenError,
    Clock,
    ConnectionState,
    ConnectionStateMachine,
    ErrorCategory,
    Guard,
)
from instrumented_clients.resilience.events import (
    ReconnectAttempt,
    ReconnectFinished,
    RetryScheduled,
)
from instrumented_clients.telemetry import Telemetry

__all__ = ["ConnectionTracking"]

_log = logging.getLogger("instrumented_clients.redis")

SYSTEM: Final = "redis"
_CONNECTION_TROUBLE: Final = frozenset({ErrorCategory.CONNECTION, ErrorCategory.TIMEOUT})
# Failures while connecting that no retry heals: the state goes to FAILED at once.
_REFUSED_AT_CONNECT: Final = {
    ErrorCategory.AUTH: "authentication failed",
    ErrorCategory.CONFIGURATION: "configuration error",  # e.g. a certificate that does not verify
}


class ConnectionTracking:
    """Mixin of :class:`~instrumented_clients.redis.ResilientRedis`: state, reconnect cycles,
    last error."""

    name: str
    _telemetry: Telemetry
    _clock: Clock

    def _init_tracking(self, pool: Any) -> None:
        self._tracked_pool = pool
        self._lock = threading.Lock()
        self._state = ConnectionStateMachine(
            SYSTEM, self.name, clock=self._clock, instrumentation=self._telemetry
        )
        self._closed = False
        self._connected = False
        self._cycle_started: float | None = None
        self._cycle_attempts = 0
        self._reconnect_attempts = 0
        self._consecutive_failures = 0
        self._last_error: str | None = None

    def _reopen(self) -> None:
        """A command after ``close()``: like ``redis.Redis``, the client connects again."""
        self._state = ConnectionStateMachine(
            SYSTEM, self.name, clock=self._clock, instrumentation=self._telemetry
        )
        self._closed = False
        self._cycle_started = None
        bind_pool_gauges_to(self._telemetry, SYSTEM, self.name, self._tracked_pool)

    @property
    def state(self) -> ConnectionState:
        """The connection state (see the module docstring for what moves it)."""
        return self._state.state

    def _on_retry(self, event: RetryScheduled) -> None:
        """An attempt failed and another follows (the policies' ``on_retry`` hook)."""
        try:
            self._attempt_failed(event.error)
            with self._lock:
                if (self._state.state is ConnectionState.DISCONNECTED
                        and self._cycle_started is not None and not self._closed):
                    self._state.transition(ConnectionState.CONNECTING, "reconnect attempt")
        except Exception:  # bookkeeping must never change the outcome of a call
            _log.exception("redis client %r: connection state bookkeeping failed", self.name)

    def _before_attempt(self) -> None:
        with self._lock:
            if self._closed:
                self._reopen()
            # Only a reconnection shows CONNECTING (and opens a reconnect span): the first
            # connection of a healthy start goes straight from DISCONNECTED to CONNECTED.
            if (self._state.state is ConnectionState.DISCONNECTED
                    and self._cycle_started is not None):
                self._state.transition(ConnectionState.CONNECTING, "reconnect attempt")

    def _attempt_succeeded(self) -> None:
        events: list[Any] = []
        with self._lock:
            if self._connected or self._closed:
                return
            if self._cycle_started is not None:
                self._cycle_attempts += 1
                self._reconnect_attempts += 1
                duration = self._clock.monotonic() - self._cycle_started
                events.append(ReconnectAttempt(SYSTEM, self.name, self._cycle_attempts, "success"))
                events.append(ReconnectFinished(SYSTEM, self.name, "success", duration,
                                                self._cycle_attempts))
                self._cycle_started = None
            for event in events:  # before the transition, which ends the reconnect span
                self._telemetry.emit(event)
            self._consecutive_failures = 0
            self._connected = True
            try:
                self._state.transition(ConnectionState.CONNECTED, "command succeeded")
            except Exception:  # a successful call must not fail on bookkeeping
                _log.exception("redis client %r: connection state bookkeeping failed", self.name)

    def _attempt_failed(self, error: BaseException) -> None:
        if isinstance(error, StaleConnectionError):
            # Its idle siblings were opened to the same server and are most likely dead too.
            self._tracked_pool.disconnect(inuse_connections=False)
        category = classify(error)
        if category in _CONNECTION_TROUBLE:
            self._connection_lost(error, category)
        elif category in _REFUSED_AT_CONNECT and was_unsent(error):
            self._give_up(error, _REFUSED_AT_CONNECT[category])
        elif isinstance(error, (redis.exceptions.ResponseError,
                                redis.exceptions.BusyLoadingError)) and not self._connected:
            self._attempt_succeeded()  # the server answered: the connection works

    def _connection_lost(self, error: BaseException, category: ErrorCategory) -> None:
        with self._lock:
            self._connected = False
            self._consecutive_failures += 1
            self._last_error = describe_error(error, 300)
            if self._closed:
                return
            state = self._state.state
            if state is ConnectionState.CONNECTED:
                self._cycle_started = self._clock.monotonic()
                self._cycle_attempts = 0
                self._state.transition(ConnectionState.DISCONNECTED, f"{category}: connection lost")
                return
            # Not connected. A failure while connecting is a (re)connection attempt; a command
            # that was in flight on the same dropped link, or another dead idle connection, is
            # not (one blip fails every concurrent command: it is one loss, not N attempts).
            if isinstance(error, StaleConnectionError) or not was_unsent(error):
                return
            if self._cycle_started is None:
                self._cycle_started = self._clock.monotonic()
                self._cycle_attempts = 0
            self._cycle_attempts += 1
            self._reconnect_attempts += 1
            self._telemetry.emit(ReconnectAttempt(SYSTEM, self.name, self._cycle_attempts,
                                                  "failure", category.value, error))
            if state is ConnectionState.CONNECTING:
                self._state.transition(ConnectionState.DISCONNECTED, f"{category}")

    def _call_failed(self, guard: Guard, error: BaseException) -> None:
        """The last attempt failed: account for it, then FAILED when the policy would have
        retried the error (attempts, deadline or budget are spent)."""
        if isinstance(error, CircuitOpenError) or not isinstance(error, Exception):
            return
        try:
            self._attempt_failed(error)
            category = classify(error)
            if category in _CONNECTION_TROUBLE and guard.policy.should_retry(error, category):
                self._give_up(error, "retry policy spent")
        except Exception:  # the caller must see the original error, not a bookkeeping one
            _log.exception("redis client %r: connection state bookkeeping failed", self.name)

    def _give_up(self, error: BaseException, reason: str) -> None:
        with self._lock:
            self._last_error = describe_error(error, 300)
            self._connected = False
            state = self._state.state
            if self._closed or state in (ConnectionState.FAILED, ConnectionState.CONNECTED):
                return  # already failed, or another thread got through meanwhile
            self._state.transition(ConnectionState.FAILED, reason)
            if self._cycle_started is not None:
                self._telemetry.emit(ReconnectFinished(
                    SYSTEM, self.name, "failure",
                    self._clock.monotonic() - self._cycle_started, self._cycle_attempts,
                ))
        _log.error("redis client %r: %s: %s", self.name, reason, self._last_error)

