"""Validation of a pooled connection before use, only when it has sat idle long enough.

A ping on every checkout (SQLAlchemy's ``pool_pre_ping``) is one more round trip per operation.
Here a connection is pinged only when it has sat idle in the pool at least ``idle_after`` seconds
(HikariCP's ``aliveBypassWindowMs``): a connection in steady use is alive. The client suspends it
where its own first round trip finds a dead connection safely — the BEGIN it sends itself on
psycopg for reads and ``transaction(fn)`` — and then starts again at once on a fresh connection
(:func:`stale_connection_error`).

A ping that finds the connection gone raises SQLAlchemy's ``InvalidatePoolError`` from the pool's
checkout event: the pool discards that connection and every one older than it (they most likely
died with it) and hands out a freshly made one in the same checkout.
"""

from __future__ import annotations

import contextvars
import math
from typing import Any, Final

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import InvalidatePoolError

from instrumented_clients.db.errors import classify
from instrumented_clients.resilience import ErrorCategory
from instrumented_clients.resilience.clock import Clock

__all__ = [
    "IdleValidation",
    "is_reused",
    "resume_validation",
    "stale_connection_error",
    "suspend_validation",
]

_IDLE_SINCE: Final = "instrumented_clients.idle_since"
# Set by the client around a checkout whose work is safe to rerun (asyncio tasks and SQLAlchemy's
# greenlets inherit it, so it follows the checkout into an AsyncEngine's pool).
_SKIP: Final[contextvars.ContextVar[bool]] = contextvars.ContextVar(
    "instrumented_clients_db_skip_validation", default=False)


def suspend_validation() -> contextvars.Token[bool]:
    """Checkouts from here to :func:`resume_validation` are not pinged, however long the
    connection was idle (a token, not a context manager: this is on every transaction's path)."""
    return _SKIP.set(True)


def resume_validation(token: contextvars.Token[bool]) -> None:
    _SKIP.reset(token)


def is_reused(info: dict[Any, Any]) -> bool:
    """Whether the connection behind ``info`` (``Connection.info``) was in the pool before this
    checkout, as opposed to connected for it (the pool clears ``info`` on every reconnect)."""
    return _IDLE_SINCE in info


def stale_connection_error(error: BaseException) -> bool:
    """The error says the connection is gone (the client's own BEGIN is sent beside
    SQLAlchemy, so the caller invalidates the connection itself)."""
    return classify(error) is ErrorCategory.CONNECTION


class IdleValidation:
    """Pings a pooled connection at checkout when it has been idle at least ``idle_after`` s.

    Args:
        idle_after: seconds; 0 pings on every checkout of a pooled connection (like
            ``pool_pre_ping``). A connection just made is never pinged.
        clock: where idle time is read (a ``FakeClock`` in tests).

    Raises:
        ValueError: ``idle_after`` is not a finite number >= 0.
    """

    def __init__(self, idle_after: float, clock: Clock) -> None:
        if (isinstance(idle_after, bool) or not isinstance(idle_after, int | float)
                or not math.isfinite(idle_after) or idle_after < 0):
            raise ValueError(f"validate_idle_after must be a number of seconds >= 0, "
                             f"got {idle_after!r}")
        self.idle_after = float(idle_after)
        self._monotonic = clock.monotonic

    def due(self, idle_since: float | None) -> bool:
        """Whether a connection checked in at ``idle_since`` must be pinged now."""
        return idle_since is not None and self._monotonic() - idle_since >= self.idle_after

    def install(self, engine: Engine) -> None:
        """Listen to the pool of ``engine`` (a sync ``Engine``; an ``AsyncEngine``'s
        ``sync_engine``); the listeners survive ``dispose()``, which keeps the pool's events."""
        monotonic = self._monotonic

        def checked_in(dbapi_connection: Any, record: Any) -> None:
            if dbapi_connection is not None:
                record.info[_IDLE_SINCE] = monotonic()

        def checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
            dialect: Any = engine.dialect
            if _SKIP.get() or not self.due(record.info.get(_IDLE_SINCE)):
                return
            try:
                alive = dialect.do_ping(dbapi_connection)
            except Exception as error:
                if not dialect.is_disconnect(error, dbapi_connection, None):
                    raise
                raise InvalidatePoolError("idle pooled connection is gone") from error
            if not alive:
                raise InvalidatePoolError("idle pooled connection failed its ping")

        event.listen(engine, "checkin", checked_in)
        event.listen(engine, "checkout", checked_out)
