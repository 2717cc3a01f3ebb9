"""Connection-level plumbing: redis-py's own retries off, and "was it sent?" made knowable.

Two things happen to every pool a :class:`~instrumented_clients.redis.ResilientRedis` uses (its
own, or one the caller passes in):

1. ``pool.set_retry(Retry(NoBackoff(), 0))``: redis-py 8 retries by itself (10 times by default,
   in ``Connection.connect()``, around every command and around a whole pipeline), so one failure
   would turn into many attempts that no metric sees. With it off, every attempt is one of ours.
2. Its ``connection_class`` becomes a subclass with :class:`SendTrackingMixin`, which marks every
   error raised while *connecting* (TCP connect, TLS, ``AUTH``/``HELLO``, ``SELECT``) or while
   running the idle health-check ``PING`` as *unsent* (:func:`~.errors.mark_unsent`): those run
   before the command's bytes are written, so the command cannot have been applied. Connections
   that already exist in a caller's pool keep their class; their errors are simply never marked,
   which errs on the safe side (a write is not retried).

While a guarded attempt runs (:data:`strict_checkout`), a pooled connection found dead at
check-out raises :class:`~.errors.StaleConnectionError` instead of being replaced silently, so
the retry shows in the metrics.
"""

from __future__ import annotations

import contextvars
import threading
from typing import Any, Final

from redis import exceptions as rx
from redis.asyncio.connection import AbstractConnection as AsyncAbstractConnection
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.connection import AbstractConnection
from redis.driver_info import DriverInfo
from redis.retry import Retry
from redis.utils import get_lib_version

from instrumented_clients.redis.errors import StaleConnectionError, mark_unsent

__all__ = [
    "AsyncSendTrackingMixin",
    "SendTrackingMixin",
    "adopt_pool",
    "no_retry",
    "strict_checkout",
    "tracked_class",
]

_REDIS_PY_VERSION: Final[str] = get_lib_version()  # type: ignore[no-untyped-call]  # once

strict_checkout: Final[contextvars.ContextVar[bool]] = contextvars.ContextVar(
    "instrumented_clients_redis_strict_checkout", default=False
)
"""True while a guarded attempt runs: a dead pooled connection then fails the attempt."""


def no_retry(asynchronous: bool = False) -> Retry | AsyncRetry:
    """redis-py's retry object that never retries (a fresh one: pools mutate what they hold).

    ``redis.asyncio`` needs its own ``Retry`` class: given the sync one, its connections fail
    on the first retry they attempt instead of making none.
    """
    return AsyncRetry(NoBackoff(), 0) if asynchronous else Retry(NoBackoff(), 0)


class SendTrackingMixin:
    """Marks the errors raised before a command is sent; mixed into a pool's connection class."""

    # connect() covers what runs before connect_check_health: behind Sentinel, asking the
    # Sentinels for the primary (MasterNotFoundError). The pool calls it at every check-out,
    # hence the same early return as connect_check_health.
    def connect(self: Any, *args: Any, **kwargs: Any) -> None:
        if self._sock:
            return
        try:
            super().connect(*args, **kwargs)  # type: ignore[misc]
        except BaseException as error:
            mark_unsent(error)
            raise

    def connect_check_health(self: Any, *args: Any, **kwargs: Any) -> None:
        if self._sock:  # connected: redis-py's own first test, made here to spare it a call
            return
        try:
            super().connect_check_health(*args, **kwargs)  # type: ignore[misc]
        except BaseException as error:
            mark_unsent(error)
            raise

    # The idle health check (check_health -> _send_ping) runs before the command is written.
    # _send_ping, not check_health, is overridden: check_health runs on every send.
    def _send_ping(self) -> None:
        try:
            super()._send_ping()  # type: ignore[misc]
        except BaseException as error:
            mark_unsent(error)
            raise


class AsyncSendTrackingMixin:
    """:class:`SendTrackingMixin` for ``redis.asyncio`` connections."""

    async def connect(self: Any, *args: Any, **kwargs: Any) -> None:
        if self._reader is not None and self._writer is not None:
            return
        try:
            await super().connect(*args, **kwargs)  # type: ignore[misc]
        except BaseException as error:
            mark_unsent(error)
            raise

    async def connect_check_health(self: Any, *args: Any, **kwargs: Any) -> None:
        if self._reader is not None and self._writer is not None:  # as redis-py's is_connected
            return
        try:
            await super().connect_check_health(*args, **kwargs)  # type: ignore[misc]
        except BaseException as error:
            mark_unsent(error)
            raise

    async def _send_ping(self) -> None:
        try:
            await super()._send_ping()  # type: ignore[misc]
        except BaseException as error:
            mark_unsent(error)
            raise


def _stale(connection: Any, error: BaseException) -> BaseException:
    connection.disconnect()
    return mark_unsent(StaleConnectionError(f"pooled connection was closed while idle: {error}"))


def _can_read_of(connection_class: type[Any]) -> Any:
    # The pool asks can_read() of every connection it hands out, so this is on the hot path:
    # call the class's own method directly rather than through super().
    base_can_read = connection_class.can_read

    def can_read(self: Any, timeout: float = 0) -> bool:
        try:
            return base_can_read(self, timeout)  # type: ignore[no-any-return]
        except (rx.ConnectionError, rx.TimeoutError, OSError) as error:
            # A dead socket. Outside a guarded attempt the pool heals it as usual; inside one,
            # the attempt fails visibly (nothing was sent) and is retried and counted.
            if strict_checkout.get():
                raise _stale(self, error) from error
            raise

    return can_read


def _async_can_read_of(connection_class: type[Any]) -> Any:
    base_can_read = connection_class.can_read

    async def can_read(self: Any) -> bool:
        try:
            readable: bool = await base_can_read(self)
        except (rx.ConnectionError, rx.TimeoutError, OSError) as error:
            if strict_checkout.get():
                self._close()  # no await: the socket is dead, and closing must not block
                raise mark_unsent(StaleConnectionError(
                    f"pooled connection was closed while idle: {error}")) from error
            raise
        # The asyncio parser reports a peer's close as "has data" and a reset not at all; the
        # pool would then reconnect unseen, or write into the dead socket.
        reader = self._reader
        if (strict_checkout.get() and reader is not None
                and (reader.exception() is not None or reader.at_eof())):
            self._close()
            raise mark_unsent(StaleConnectionError("pooled connection was closed while idle"))
        return readable

    return can_read


_tracked: dict[type[Any], type[Any]] = {}
_tracked_lock = threading.Lock()


def tracked_class(connection_class: type[Any]) -> type[Any]:
    """``connection_class`` with :class:`SendTrackingMixin` (made once per class)."""
    if issubclass(connection_class, (SendTrackingMixin, AsyncSendTrackingMixin)):
        return connection_class
    asynchronous = issubclass(connection_class, AsyncAbstractConnection)
    mixin = AsyncSendTrackingMixin if asynchronous else SendTrackingMixin
    can_read = (_async_can_read_of if asynchronous else _can_read_of)(connection_class)
    with _tracked_lock:
        tracked = _tracked.get(connection_class)
        if tracked is None:
            tracked = type(
                f"Tracked{connection_class.__name__}",
                (mixin, connection_class),
                {"__module__": __name__, "can_read": can_read},
            )
            _tracked[connection_class] = tracked
        return tracked


def adopt_pool(pool: Any) -> None:
    """Turn redis-py's retries off on ``pool`` (sync or asyncio) and track sends on the
    connections it makes next."""
    connection_class = getattr(pool, "connection_class", None)
    asynchronous = isinstance(connection_class, type) and issubclass(
        connection_class, AsyncAbstractConnection)
    retry = no_retry(asynchronous)
    given = {"driver_info", "lib_name", "lib_version"} & set(pool.connection_kwargs)
    if asynchronous and not given:
        # Otherwise every new connection reads the package metadata from disk (a blocking
        # importlib.metadata look-up) on the event loop.
        pool.connection_kwargs["driver_info"] = DriverInfo(lib_version=_REDIS_PY_VERSION)
    # ConnectionPool.set_retry does this for its own lists only: BlockingConnectionPool keeps its
    # connections elsewhere and the set_retry it inherits raises (redis-py 8.1).
    pool.connection_kwargs["retry"] = retry
    for attribute in ("_available_connections", "_in_use_connections", "_connections"):
        for connection in getattr(pool, attribute, None) or ():
            if connection is not None:
                connection.retry = retry
    if isinstance(connection_class, type) and issubclass(
        connection_class, (AbstractConnection, AsyncAbstractConnection)
    ):
        pool.connection_class = tracked_class(connection_class)
