"""How the outcome of a ResilientRedis attempt moves its :class:`ConnectionTracker`.

redis-py connects lazily and per pooled connection, so there is no connection object to watch;
the state is inferred from the calls instead:

- CONNECTED after a command (or PING) succeeds, or the server answered with an error;
- DISCONNECTED when an attempt fails on the connection (connection error, timeout); the reconnect
  cycle starts there, and every later attempt that connects (or fails to) is a reconnect
  attempt — commands that were in flight on the same dropped link are one loss, not many
  attempts;
- CONNECTING while a further attempt of that cycle is under way (the first connection of a
  healthy start goes straight to CONNECTED: it is not a reconnection);
- FAILED when a call gave up on a connection error its policy would have retried (attempts,
  deadline or budget spent), or connecting failed for good (authentication, a TLS certificate
  that does not verify); CONNECTED again on the next success;
- CLOSING/CLOSED on ``close()``; the client stays usable, and its next call reconnects.

All of this runs on slow paths only: the hot path reads one boolean, ``tracker.connected``.
"""

from __future__ import annotations

import inspect
from typing import Any, Final

import redis

from instrumented_clients.redis.errors import StaleConnectionError, classify, was_unsent
from instrumented_clients.resilience import CircuitOpenError, ErrorCategory, Guard
from instrumented_clients.resilience.tracker import ConnectionTracker

__all__ = ["SYSTEM", "attempt_failed", "call_failed", "close_at_once", "drop_idle_connections"]

SYSTEM: Final = "redis"
_CONNECTION_TROUBLE: Final = frozenset({ErrorCategory.CONNECTION, ErrorCategory.TIMEOUT})
# Failures while connecting that no retry heals: the state goes to FAILED at once.
_REFUSED_AT_CONNECT: Final = {
    ErrorCategory.AUTH: "authentication failed",
    ErrorCategory.CONFIGURATION: "configuration error",  # e.g. a certificate that does not verify
}


def close_at_once(connection: Any) -> None:
    """Close a ``redis.asyncio`` connection's socket without awaiting.

    redis.asyncio has no public way to do this: its ``disconnect()`` is a coroutine, and the
    callers here cannot await (a task being cancelled, a synchronous bookkeeping hook). The
    connection's own ``_close()`` is what redis-py calls itself for the same purpose.
    """
    connection._close()


def drop_idle_connections(pool: Any) -> None:
    """Close the idle connections of a sync or asyncio pool, without awaiting anything."""
    if inspect.iscoroutinefunction(pool.disconnect):
        # No public list of the idle connections either (see close_at_once).
        for connection in list(getattr(pool, "_available_connections", ())):
            close_at_once(connection)
    else:
        pool.disconnect(inuse_connections=False)


def attempt_failed(tracker: ConnectionTracker, pool: Any, error: BaseException) -> None:
    """Account for one failed attempt."""
    if isinstance(error, StaleConnectionError):
        # Its idle siblings were opened to the same server and are most likely dead too.
        drop_idle_connections(pool)
    category = classify(error)
    if category in _CONNECTION_TROUBLE:
        # A command in flight on a dropped link, or another dead idle connection, is not a
        # reconnect attempt; a failure to connect (nothing was sent) is.
        tracker.failed(error, category,
                       attempt=not isinstance(error, StaleConnectionError) and was_unsent(error))
    elif category in _REFUSED_AT_CONNECT and was_unsent(error):
        tracker.failed(error, category, attempt=True)
        tracker.give_up(_REFUSED_AT_CONNECT[category])
    elif isinstance(error, (redis.exceptions.ResponseError, redis.exceptions.BusyLoadingError)):
        tracker.succeeded("the server answered")  # the connection works


def call_failed(tracker: ConnectionTracker, pool: Any, guard: Guard, error: BaseException) -> None:
    """The last attempt of a call failed: account for it, then FAILED when the policy would have
    retried the error (attempts, deadline or budget are spent)."""
    if isinstance(error, CircuitOpenError) or not isinstance(error, Exception):
        return
    attempt_failed(tracker, pool, error)
    category = classify(error)
    if category in _CONNECTION_TROUBLE and guard.policy.should_retry(error, category):
        tracker.give_up("retry policy spent")
