"""``AsyncResilientRedis``: a ``redis.asyncio.Redis`` with the guarantees of ``ResilientRedis``.

The same client, for asyncio: every command and every pipeline's ``execute()`` is awaited through
the same Guards (``Guard.acall``), chosen by the same write-retry rule
(:mod:`instrumented_clients.redis.client` states it; :mod:`~instrumented_clients.redis.guards`
implements it once for both), with the same breaker, connection state, pool metrics and health
report (:mod:`~instrumented_clients.redis.core`). redis-py's own retries are off: its asyncio
client needs its own ``Retry`` class, and given the sync one fails on its first retry.

Cancellation: a command cancelled at any ``await`` may leave its reply unread on the socket. The
connection it ran on is then closed, never returned to the pool as it is, so the next command
never reads a reply that belongs to another (the failure behind CVE-2023-28858/28859): redis-py
closes a connection on any exception while sending or reading, and a pipeline or
``MULTI``/``EXEC`` cancelled half-way has its connection closed here as well. The tests cancel
commands and batches mid-reply and check the next replies.

``check()`` and ``close()`` are coroutines; ``health()`` reads memory only and stays a plain
method, so a health registry can call it without awaiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import ConnectionPool

from instrumented_clients.redis.base import RedisClientBase
from instrumented_clients.redis.connection import strict_checkout
from instrumented_clients.redis.guards import CommandGuards, writes_opted_in
from instrumented_clients.redis.pipeline import replayer
from instrumented_clients.redis.tracking import close_at_once
from instrumented_clients.resilience import ConnectionState, Guard

__all__ = ["AsyncResilientPipeline", "AsyncResilientRedis"]

_base_execute_command = redis.asyncio.Redis.execute_command


# redis.asyncio.Redis's own bases disagree on command_info(); mypy reports it on any subclass
# that adds a base of its own.
class AsyncResilientRedis(RedisClientBase, redis.asyncio.Redis):  # type: ignore[misc]
    """A ``redis.asyncio.Redis`` with retries, a circuit breaker, connection state and telemetry.

    Takes the arguments of :class:`~instrumented_clients.redis.ResilientRedis`, with the same
    meaning; ``connection_pool`` is a ``redis.asyncio`` pool.

    Raises:
        ConfigError: a malformed URL (before any I/O), naming the argument.
    """

    pool_class = ConnectionPool

    # -- the hot path -----------------------------------------------------------------------

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        """Run one command through its Guard (retry, breaker, metrics, span)."""
        guard = self._guards.get(args[0])
        if guard is None or writes_opted_in.get():
            guard = self._core.guards.for_command(args)
        tracker = self._tracker
        if not tracker.connected:
            tracker.attempt_started()
        token = strict_checkout.set(True)
        try:
            result = await guard.acall(_base_execute_command, self, *args, **options)
        except BaseException as error:
            self._core.call_failed(guard, error)
            raise
        finally:
            strict_checkout.reset(token)
        if not tracker.connected:
            self._core.attempt_succeeded()
        return result

    async def _run(self, guard: Guard, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Await anything else that talks to the server (a pipeline's execute, a check) like a
        command."""
        tracker = self._tracker
        if not tracker.connected:
            tracker.attempt_started()
        token = strict_checkout.set(True)
        try:
            result = await guard.acall(fn, *args)
        except BaseException as error:
            self._core.call_failed(guard, error)
            raise
        finally:
            strict_checkout.reset(token)
        if not tracker.connected:
            self._core.attempt_succeeded()
        return result

    # -- pipelines --------------------------------------------------------------------------

    def pipeline(self, transaction: bool = True,
                 shard_hint: Any = None) -> AsyncResilientPipeline:
        """A pipeline whose ``execute()`` runs as one unit under the write-retry rule."""
        return AsyncResilientPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint,
            guards=self._core.guards, run=self._run,
        )

    # -- the client shape -------------------------------------------------------------------

    async def check(self, *, raise_on_error: bool = False) -> bool:
        """One ``PING``, no retry (through the breaker); True when Redis answered.

        Args:
            raise_on_error: raise the failure (classified and recorded all the same) instead of
                returning False.
        """
        try:
            await self._run(self._core.guards.check, _base_execute_command, self, "PING")
        except Exception:
            if raise_on_error:
                raise
            return False
        return True

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        """Release the connections, as ``redis.asyncio.Redis.aclose()`` does; idempotent.

        The pool is closed when the client made it (or ``close_connection_pool`` says so); a
        pool passed in stays the caller's. The client stays usable: the next command connects
        again, and the state goes from CLOSED back to CONNECTED.
        """
        tracker = getattr(self, "_tracker", None)
        if tracker is None or tracker.state is ConnectionState.CLOSED:
            await super().aclose(close_connection_pool)
            return
        tracker.closing()
        try:
            await super().aclose(close_connection_pool)
        finally:
            self._core.closed()

    async def close(self, timeout: float | None = None) -> None:
        """:meth:`aclose`, under the name every client shares (``timeout`` is not waited on)."""
        await self.aclose()


class AsyncResilientPipeline(Pipeline):
    """Returned by :meth:`AsyncResilientRedis.pipeline`; use it as a ``redis.asyncio`` pipeline.

    ``execute()`` is one guarded unit, as in :class:`~instrumented_clients.redis.ResilientPipeline`:
    the queued batch is restored before each further attempt, and a batch with a write is retried
    only when nothing of it was sent.
    """

    def __init__(self, connection_pool: ConnectionPool, response_callbacks: Any,
                 transaction: bool, shard_hint: Any, *, guards: CommandGuards,
                 run: Callable[[Guard, Callable[[], Awaitable[Any]]], Awaitable[Any]]) -> None:
        super().__init__(connection_pool, response_callbacks, transaction, shard_hint)
        self._command_guards = guards
        self._run_guarded = run

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Send the queued commands (in MULTI/EXEC when transactional) and return the replies."""
        stack = self.command_stack
        if not stack and not self.watching:
            return []
        transactional = self.is_transaction or self.explicit_transaction
        guard = self._command_guards.for_pipeline(transactional, stack)
        before_attempt = replayer(self)

        async def attempt() -> list[Any]:
            before_attempt()
            result: list[Any] = await super(AsyncResilientPipeline, self).execute(raise_on_error)
            return result

        result: list[Any] = await self._run_guarded(guard, attempt)
        return result

    # Replies of a batch cancelled half-way may be unread: its connection is never reused.

    async def _execute_transaction(self, connection: Any, commands: Any,
                                   raise_on_error: bool) -> Any:
        return await _closing_on_cancel(
            connection, super()._execute_transaction(connection, commands, raise_on_error))

    async def _execute_pipeline(self, connection: Any, commands: Any,
                                raise_on_error: bool) -> Any:
        return await _closing_on_cancel(
            connection, super()._execute_pipeline(connection, commands, raise_on_error))


async def _closing_on_cancel(connection: Any, operation: Awaitable[Any]) -> Any:
    try:
        return await operation
    except asyncio.CancelledError:
        close_at_once(connection)
        raise
