"""Connection states and the table of transitions between them.

::

    DISCONNECTED ──► CONNECTING ──► CONNECTED
         ▲  ▲            │  │           │
         │  └────────────┘  ▼           │
         │               FAILED ◄───────┘ (via DISCONNECTED/CONNECTING)
         │                  │
         └──────────────────┘
    any open state ──► CLOSING ──► CLOSED (terminal; a reusable client may reopen())

FAILED means the reconnect policy is spent. Background attempts continue at the cap interval
without leaving FAILED, so an alert on FAILED holds for its ``for:``; the first success moves
FAILED straight to CONNECTED.

No transition leaves CLOSED. A client that stays usable after ``close()`` (as ``redis.Redis``
does) begins a new life with :meth:`ConnectionStateMachine.reopen`, reported like an initial
state: a closed client is never shown as down, and a reopened one is not an outage.
"""

from __future__ import annotations

import enum
import threading
from typing import Final

from instrumented_clients.resilience.clock import SYSTEM_CLOCK, Clock
from instrumented_clients.resilience.errors import IllegalTransitionError
from instrumented_clients.resilience.events import (
    ConnectionStateChanged,
    IllegalTransition,
    Instrumentation,
    get_default_instrumentation,
)

__all__ = ["ConnectionState", "ConnectionStateMachine"]


class ConnectionState(str, enum.Enum):
    """A connection's state; the values are the ``state`` label."""

    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    FAILED = "failed"
    CLOSING = "closing"
    CLOSED = "closed"

    def __str__(self) -> str:
        return self.value


_S = ConnectionState
TRANSITIONS: Final[dict[ConnectionState, frozenset[ConnectionState]]] = {
    _S.DISCONNECTED: frozenset({_S.CONNECTING, _S.CONNECTED, _S.FAILED, _S.CLOSING, _S.CLOSED}),
    _S.CONNECTING: frozenset({_S.CONNECTED, _S.DISCONNECTED, _S.FAILED, _S.CLOSING, _S.CLOSED}),
    _S.CONNECTED: frozenset({_S.DISCONNECTED, _S.CONNECTING, _S.CLOSING, _S.CLOSED}),
    _S.FAILED: frozenset({_S.CONNECTED, _S.CONNECTING, _S.CLOSING, _S.CLOSED}),
    _S.CLOSING: frozenset({_S.CLOSED}),
    _S.CLOSED: frozenset(),
}


class ConnectionStateMachine:
    """Thread-safe holder of one connection's state; every change is timestamped and reported.

    Args:
        system: ``system`` label.
        client: ``client`` label.
        clock: time source for the timestamps.
        instrumentation: receives :class:`ConnectionStateChanged` (the initial state included, with
            ``from_state=None``) and :class:`IllegalTransition`.
        initial: the starting state.
    """

    def __init__(
        self,
        system: str,
        client: str,
        *,
        clock: Clock = SYSTEM_CLOCK,
        instrumentation: Instrumentation | None = None,
        initial: ConnectionState = ConnectionState.DISCONNECTED,
    ) -> None:
        self.system = system
        self.client = client
        self._clock = clock
        self._instrumentation = instrumentation or get_default_instrumentation()
        self._lock = threading.Lock()
        self._state = initial
        self._since = clock.monotonic()
        self.history: list[tuple[float, ConnectionState]] = [(self._since, initial)]
        self._instrumentation.emit(
            ConnectionStateChanged(system, client, None, initial.value, self._since)
        )

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def since(self) -> float:
        """Clock time of the last change."""
        return self._since

    def can_transition(self, to_state: ConnectionState) -> bool:
        return to_state is self._state or to_state in TRANSITIONS[self._state]

    def transition(self, to_state: ConnectionState, reason: str | None = None) -> bool:
        """Move to ``to_state``; False if already there. Raises :class:`IllegalTransitionError`
        (after reporting it) when the table does not allow the move."""
        with self._lock:
            from_state = self._state
            if to_state is from_state:
                return False
            if to_state not in TRANSITIONS[from_state]:
                illegal = True
            else:
                illegal = False
                self._state = to_state
                self._since = now = self._clock.monotonic()
                self.history.append((now, to_state))
                del self.history[:-100]  # bounded: a flapping link must not grow memory
        if illegal:
            self._instrumentation.emit(
                IllegalTransition(self.system, self.client, from_state.value, to_state.value)
            )
            raise IllegalTransitionError(
                f"{self.system}/{self.client}", from_state.value, to_state.value
            )
        self._instrumentation.emit(
            ConnectionStateChanged(
                self.system, self.client, from_state.value, to_state.value, now, reason
            )
        )
        return True

    def reopen(self, state: ConnectionState, reason: str | None = None) -> None:
        """Begin a new life in ``state`` after CLOSED (reported with ``from_state=None``).

        Raises:
            IllegalTransitionError: the machine is not CLOSED.
        """
        with self._lock:
            from_state = self._state
            if from_state is ConnectionState.CLOSED:
                self._state = state
                self._since = now = self._clock.monotonic()
                self.history.append((now, state))
                del self.history[:-100]
        if from_state is not ConnectionState.CLOSED:
            raise IllegalTransitionError(f"{self.system}/{self.client}", from_state.value,
                                         state.value)
        self._instrumentation.emit(
            ConnectionStateChanged(self.system, self.client, None, state.value, now, reason)
        )

    def __repr__(self) -> str:
        return f"ConnectionStateMachine({self.system}/{self.client}: {self._state.value})"
