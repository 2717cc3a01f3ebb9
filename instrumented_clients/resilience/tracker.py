"""``ConnectionTracker``: a client's connection state, reconnect cycles and last error, kept once.

Every client reports what happens to its connection through the same few calls, and the tracker
turns them into state transitions and reconnect events:

- :meth:`~ConnectionTracker.connecting` — an explicit connection attempt starts (a client that
  dials, such as the RabbitMQ connection or a database's start-up probe);
- :meth:`~ConnectionTracker.attempt_started` — a call is about to try a link that is down (a
  client that connects lazily, such as Redis): CONNECTING only within a reconnect cycle;
- :meth:`~ConnectionTracker.succeeded` — the dependency answered: CONNECTED;
- :meth:`~ConnectionTracker.failed` — the connection failed: a working connection that dropped
  is a *loss* (DISCONNECTED, a reconnect cycle starts); a failure while not connected is a
  reconnect *attempt* when the caller says it was one;
- :meth:`~ConnectionTracker.give_up` — the reconnect policy is spent: FAILED, which holds until
  the next success.

The rules, the same for every client:

- A reconnect cycle runs from the loss of the connection (or the first failed attempt) to
  CONNECTED; every attempt in it is a :class:`ReconnectAttempt` and its end a
  :class:`ReconnectFinished` — emitted before the transition to CONNECTED or FAILED, which is
  where the OpenTelemetry sink ends the reconnect span.
- The first connection of a client, made at the first try, is a connect, not a reconnect.
- ``consecutive_failures`` counts the failures in a row of the client's work against its
  dependency — a connection attempt, a lost connection, or a call the client records with
  :meth:`~ConnectionTracker.record_failure` — and the first success resets it to 0.
- ``last_error`` is the last such failure, redacted and bounded.

The success path of a client reads one attribute, :attr:`ConnectionTracker.connected`, and calls
:meth:`~ConnectionTracker.succeeded` only when it is False: it is True while the connection works
and nothing failed since the last success.
"""

from __future__ import annotations

import logging
import threading
from typing import Final

from instrumented_clients.redaction import describe_error
from instrumented_clients.resilience.context import ClientContext
from instrumented_clients.resilience.errors import ErrorCategory
from instrumented_clients.resilience.events import ReconnectAttempt, ReconnectFinished
from instrumented_clients.resilience.state import ConnectionState, ConnectionStateMachine

__all__ = ["ConnectionTracker"]

_log = logging.getLogger(__name__)
_S = ConnectionState
_ERROR_TEXT_LIMIT: Final = 300
_NOT_UP: Final = frozenset({_S.CONNECTING, _S.CLOSED})


class ConnectionTracker:
    """Connection state, reconnect cycles, ``last_error`` and ``consecutive_failures`` of a client.

    Thread-safe. Events go to the context's instrumentation.

    Args:
        context: the client's labels, clock and instrumentation.
        initial: the starting state.

    Attributes:
        connected: True while the connection works and nothing failed since the last success
            (read on the hot path: when False, the next success goes through
            :meth:`succeeded`).
        consecutive_failures: failures in a row since the last success (see the module doc).
        reconnect_attempts: every reconnect attempt so far, successful or not.
        last_error: the last failure, ``Type: message``, redacted, at most 300 characters.
        last_error_category: its classification.
    """

    def __init__(self, context: ClientContext, *,
                 initial: ConnectionState = ConnectionState.DISCONNECTED) -> None:
        self.context = context
        self.machine = ConnectionStateMachine(context.system, context.client, clock=context.clock,
                                              instrumentation=context.instrumentation,
                                              initial=initial)
        self._lock = threading.RLock()
        self._clock = context.clock
        self._emit = context.instrumentation.emit
        self.connected = initial is _S.CONNECTED
        self.closed = False
        self.consecutive_failures = 0
        self.reconnect_attempts = 0
        self.last_error: str | None = None
        self.last_error_category: ErrorCategory | None = None
        self._ever_connected = self.connected
        self._reconnect_started: float | None = None
        self._attempts_in_cycle = 0
        self._failure_reported = False

    # -- observation ------------------------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self.machine.state

    @property
    def cycle_attempts(self) -> int:
        """Attempts of the current reconnect cycle (0 outside one)."""
        return self._attempts_in_cycle

    @property
    def in_cycle(self) -> bool:
        """Whether a reconnect cycle (or a first connection) is under way."""
        return self._reconnect_started is not None

    # -- what the client reports ------------------------------------------------------------------

    def connecting(self, reason: str = "connecting") -> None:
        """An explicit connection attempt starts: CONNECTING (FAILED holds until a success).

        Opens a cycle if none is open, so that its duration counts from the first attempt; it
        becomes a reconnect only if an attempt in it fails, or the client was connected before.
        """
        with self._lock:
            if self.closed:
                return
            if self._reconnect_started is None:
                self._open_cycle()
            if self.machine.state is not _S.FAILED:
                self._move(_S.CONNECTING, reason)

    def attempt_started(self, reason: str = "reconnect attempt") -> None:
        """A call is about to use a link that is down: CONNECTING within a reconnect cycle only
        (the first connection of a healthy start goes straight to CONNECTED)."""
        with self._lock:
            if (not self.closed and self._reconnect_started is not None
                    and self.machine.state is _S.DISCONNECTED):
                self._move(_S.CONNECTING, reason)

    def succeeded(self, reason: str = "connected") -> bool:
        """The dependency answered. Ends a reconnect cycle with its events, then CONNECTED.

        Returns:
            False when nothing changed (already connected, or closing).
        """
        with self._lock:
            if self.connected or self.closed:
                return False
            if self._reconnect_started is not None and (self._ever_connected
                                                    or self._attempts_in_cycle > 0):
                self._attempts_in_cycle += 1
                self.reconnect_attempts += 1
                attempts = self._attempts_in_cycle
                context = self.context
                self._emit(ReconnectAttempt(context.system, context.client, attempts, "success"))
                self._emit(ReconnectFinished(context.system, context.client, "success",
                                             self._clock.monotonic() - self._reconnect_started,
                                             attempts))
            self._reconnect_started = None
            self._attempts_in_cycle = 0
            self._failure_reported = False
            self.consecutive_failures = 0
            self.connected = self._ever_connected = True
            self._move(_S.CONNECTED, reason)
            return True

    def failed(self, error: BaseException, category: ErrorCategory, *, attempt: bool,
               next_delay: float | None = None, reason: str | None = None) -> int:
        """The connection failed with ``error``.

        Args:
            error: the failure (kept redacted as :attr:`last_error`).
            category: its classification (the ``error_type`` of the attempt event).
            attempt: whether a failure while not connected was a (re)connect attempt. A
                call that was in flight on a link already lost is not one: one dropped link
                fails every concurrent call, and that is one loss.
            next_delay: when the client retries next (reported on the attempt event).
            reason: the reason of the state change (default: the category).

        Returns:
            The attempt's number in the cycle, or 0 when it was a loss or not an attempt.
        """
        with self._lock:
            self.connected = False
            self.consecutive_failures += 1
            self.last_error = describe_error(error, _ERROR_TEXT_LIMIT)
            self.last_error_category = category
            if self.closed:
                return 0
            state = self.machine.state
            if state is _S.CONNECTED:
                self._open_cycle()
                self._move(_S.DISCONNECTED, reason or f"{category.value}: connection lost")
                return 0
            if not attempt:
                return 0
            if self._reconnect_started is None:
                self._open_cycle()
            self._attempts_in_cycle += 1
            self.reconnect_attempts += 1
            context = self.context
            self._emit(ReconnectAttempt(context.system, context.client, self._attempts_in_cycle,
                                        "failure", category.value, error, next_delay))
            if state in _NOT_UP:
                self._move(_S.DISCONNECTED, reason or category.value)
            return self._attempts_in_cycle

    def give_up(self, reason: str, *, report_cycle: bool = True) -> bool:
        """The reconnect policy is spent: FAILED, and the cycle's failure reported once.

        Attempts may continue; the state stays FAILED until :meth:`succeeded`.

        Args:
            reason: why, for the state change and the log.
            report_cycle: emit the cycle's failed :class:`ReconnectFinished`. False for a
                client whose attempts go on in the same cycle on another schedule (its
                duration is reported once, when it connects).

        Returns:
            False when nothing changed (closing, or another thread got through meanwhile).
        """
        with self._lock:
            self.connected = False
            if self.closed or self.machine.state is _S.CONNECTED:
                return False
            if (report_cycle and self._reconnect_started is not None
                    and not self._failure_reported):
                self._failure_reported = True
                context = self.context
                self._emit(ReconnectFinished(context.system, context.client, "failure",
                                             self._clock.monotonic() - self._reconnect_started,
                                             self._attempts_in_cycle))
            self._move(_S.FAILED, reason)
        _log.error("%s client %r: %s: %s", self.context.system, self.context.client, reason,
                   self.last_error)
        return True

    def record_failure(self, error: BaseException | None = None) -> None:
        """A call failed because of the dependency, the connection state aside (the next
        :meth:`succeeded` resets the count)."""
        with self._lock:
            self.connected = False
            self.consecutive_failures += 1
            if error is not None:
                self.last_error = describe_error(error, _ERROR_TEXT_LIMIT)

    def record_success(self) -> None:
        """A call succeeded: the failures in a row end."""
        self.consecutive_failures = 0

    # -- closing ----------------------------------------------------------------------------------

    def closing(self, reason: str = "close() called") -> None:
        """Stop following the connection: CLOSING."""
        self._close_into(_S.CLOSING, reason)

    def closed_now(self, reason: str = "closed", *, reusable: bool = False) -> None:
        """CLOSED. With ``reusable``, the next call may connect again (CLOSED is then left
        like DISCONNECTED, and the first success is a connect, not a reconnect)."""
        with self._lock:
            self._close_into(_S.CLOSED, reason)
            if reusable:
                self.closed = False
                self._ever_connected = False

    def _close_into(self, state: ConnectionState, reason: str) -> None:
        with self._lock:
            self.closed = True
            self.connected = False
            self._reconnect_started = None
            self._attempts_in_cycle = 0
            if self.machine.can_transition(state):
                self._move(state, reason)

    # -- internals --------------------------------------------------------------------------------

    def _open_cycle(self) -> None:
        self._reconnect_started = self._clock.monotonic()
        self._attempts_in_cycle = 0
        self._failure_reported = False

    def _move(self, to_state: ConnectionState, reason: str) -> None:
        machine = self.machine
        if machine.state is _S.CLOSED and not self.closed:
            machine.reopen(to_state, reason)  # a reusable client used again after close()
            return
        if machine.state is to_state or not machine.can_transition(to_state):
            return  # concurrent reports may race; the table keeps the state legal
        machine.transition(to_state, reason)

    def __repr__(self) -> str:
        return (f"ConnectionTracker({self.context.system}/{self.context.client}: "
                f"{self.machine.state.value})")
