"""``AsyncResilientDatabase``: a SQLAlchemy ``AsyncEngine`` with the guarantees of
``ResilientDatabase``.

The same rules as the sync client, awaited: statements and transactions run through Guards
(``Guard.acall``); errors are classified by :mod:`instrumented_clients.db.errors`; a transient
error rolls back and reruns the *whole* async function on a fresh connection; a connection lost
during COMMIT is :class:`~instrumented_clients.db.CommitOutcomeUnknownError` unless
``idempotent=True`` (:func:`~instrumented_clients.db._rules.commit_failure`, shared with the sync
client); the connection state is kept by the same
:func:`~instrumented_clients.db._rules.note_failure`.

Start-up (``connect_with_retry``, a background reconnect task when the database is optional),
the ``mysql`` → ``mariadb`` relabel, span names and attributes and idle validation are those of
the sync client, from :mod:`instrumented_clients.db.core`.

Drivers chosen when the URL names none: asyncpg for PostgreSQL (``postgresql+psycopg`` selects
psycopg's async mode), aiomysql for MySQL/MariaDB, aiosqlite for SQLite (the default).

Cancellation: a task cancelled at any ``await`` inside :meth:`execute` or :meth:`transaction`
invalidates the connection it held — the driver connection is closed, never returned to the
pool — so no half-open transaction or unread result is handed to the next caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, TypeVar

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from instrumented_clients.db._rules import commit_failure
from instrumented_clients.db._startup import AsyncStartup
from instrumented_clients.db.commit_outcome import AsyncCommitOutcomeResolver
from instrumented_clients.db.core import DatabaseClient, DatabaseCore, env_arguments
from instrumented_clients.db.result import ExecuteResult
from instrumented_clients.resilience import CircuitBreaker, RetryPolicy
from instrumented_clients.settings import DB_VALIDATE_IDLE_AFTER
from instrumented_clients.telemetry import Telemetry

__all__ = ["AsyncResilientDatabase"]

T = TypeVar("T")
_log = logging.getLogger("instrumented_clients.db")


class AsyncResilientDatabase(DatabaseClient):
    """A SQL database behind a SQLAlchemy ``AsyncEngine``, with retries, a breaker and telemetry.

    Takes the arguments of :class:`~instrumented_clients.db.ResilientDatabase` with the same
    meaning (``url`` may be an ``AsyncEngine``, used as it is); ``connect_with_retry()``,
    ``check()`` and ``close()`` are coroutines, ``health()`` reads memory only.
    ``resolve_commit_outcome`` works with psycopg's async mode and asyncpg alike (the question
    is asked over a new connection of the same driver).

    Raises:
        ConfigError: a malformed URL or a missing driver, before any I/O.
        ValueError: an empty ``name`` or a negative ``validate_idle_after``.
    """

    def __init__(
        self,
        url: str | URL | AsyncEngine | None = None,
        *,
        name: str = "database",
        policy: RetryPolicy | None = None,
        retry: RetryPolicy | Literal[False] | None = None,
        connect_policy: RetryPolicy | None = None,
        breaker: CircuitBreaker | Literal[False] | None = None,
        failure_threshold: int = 5,
        recovery_timeout: float = 30.0,
        telemetry: Telemetry | None = None,
        system: str | None = None,
        engine_options: Mapping[str, Any] | None = None,
        required: bool = True,
        resolve_commit_outcome: bool = True,
        query_text: bool = True,
        validate_idle_after: float = DB_VALIDATE_IDLE_AFTER.default,
    ) -> None:
        core = DatabaseCore(
            url, asynchronous=True, name=name, policy=policy, retry=retry,
            connect_policy=connect_policy, breaker=breaker,
            failure_threshold=failure_threshold, recovery_timeout=recovery_timeout,
            telemetry=telemetry, system=system, engine_options=engine_options,
            required=required, query_text=query_text, validate_idle_after=validate_idle_after)
        super().__init__(core)
        self._engine: AsyncEngine = core.engine
        self._startup = AsyncStartup(core, self._probe)
        self._commit_resolver = (AsyncCommitOutcomeResolver(self._engine, core.clock)
                                 if resolve_commit_outcome and core.system == "postgresql"
                                 else None)

    @classmethod
    def from_env(cls, name: str = "database", environ: Mapping[str, str] | None = None,
                 **overrides: Any) -> AsyncResilientDatabase:
        """Build from ``DATABASE_URL``, the ``DB_RETRY_*`` variables and
        ``DB_VALIDATE_IDLE_AFTER``, as :meth:`ResilientDatabase.from_env` does; keyword
        arguments win.

        Raises:
            ConfigError: naming the variable whose value does not parse.
        """
        return cls(name=name, **env_arguments(environ, overrides, asynchronous=True))

    @property
    def engine(self) -> AsyncEngine:
        """The SQLAlchemy ``AsyncEngine`` (calls made on it directly are not guarded)."""
        return self._engine

    @property
    def reconnecting(self) -> bool:
        """Whether a background reconnect (``connect_with_retry(required=False)``) is running."""
        return self._startup.reconnecting

    async def _settle_early(self) -> None:
        # Before the first operation is counted, so that it is counted under the right label.
        try:
            async with self._engine.connect():
                pass
        except Exception:
            return  # the operation itself will fail, retry and report under the URL's label
        self._core.settle_system()

    # -- the data path ----------------------------------------------------------------------

    async def execute(self, statement: Any, parameters: Any = None, *,
                      idempotent: bool | None = None) -> ExecuteResult:
        """Run one statement in its own transaction and commit it; retried on transient errors
        (see :meth:`ResilientDatabase.execute`)."""
        core = self._core
        if not core.settled:
            await self._settle_early()
        clause, guard, read = core.prepare(statement)
        safe = read if idempotent is None else idempotent
        result: ExecuteResult = await guard.acall(
            self._run_committed, _statement_work(clause, parameters), safe)
        return result

    async def transaction(self, fn: Callable[[AsyncConnection], Awaitable[T]], *,
                          idempotent: bool = False, isolation_level: str | None = None,
                          read_only: bool = False) -> T:
        """Await ``fn(connection)`` in one transaction; on a transient error, run all of it
        again on a fresh connection (see :meth:`ResilientDatabase.transaction`).

        ``fn`` must not commit; it may run several times.
        """
        async def work(connection: AsyncConnection) -> T:
            if isolation_level is not None:
                await connection.execution_options(isolation_level=isolation_level)
            await connection.begin()
            return await fn(connection)

        if not self._core.settled:
            await self._settle_early()
        result: T = await self._core.transaction_guard.acall(
            self._run_committed, work, idempotent or read_only)
        return result

    async def _checkout(self) -> AsyncConnection:
        """A pooled connection, pinged first when it has been idle too long (the asyncio client
        takes no transaction id at BEGIN, so the first round trip is always the caller's)."""
        core = self._core
        timed = core.checkout_may_wait()
        started = core.clock.monotonic() if timed else 0.0
        connection = await self._engine.connect()
        if timed:
            core.pool_wait.observe(core.clock.monotonic() - started)
        return connection

    async def _run_committed(self, work: Callable[[AsyncConnection], Awaitable[T]],
                             idempotent: bool) -> T:
        """One attempt: check a connection out, run ``work``, COMMIT, and keep the state
        (the rules of ``ResilientDatabase``)."""
        resolver = None if idempotent else self._commit_resolver
        try:
            connection = await self._checkout()
            try:
                try:
                    value = await work(connection)
                    marker = await resolver.mark(connection) if resolver is not None else None
                except Exception:
                    await _rollback_quietly(connection)
                    raise
                if resolver is None:
                    try:
                        await connection.commit()
                    except Exception as error:
                        raise commit_failure(error, idempotent) from error
                else:
                    await resolver.commit(connection, marker)
            except asyncio.CancelledError:
                # Mid-statement or mid-COMMIT: the driver connection's state is unknown.
                await _invalidate_quietly(connection)
                raise
            finally:
                await connection.close()
        except BaseException as error:
            self._core.attempt_failed(error)
            raise
        if not self._core.tracker.connected:
            self._core.succeeded("operation succeeded")
        return value

    # -- the client shape -------------------------------------------------------------------

    async def _probe(self) -> None:
        connection = await self._checkout()
        try:
            await connection.exec_driver_sql("SELECT 1")
        finally:
            await connection.close()

    async def connect_with_retry(self, *, required: bool | None = None) -> bool:
        """Connect at start-up, retrying transient failures under ``connect_policy``; with
        ``required=False`` start degraded and keep trying in a background task (see
        :meth:`ResilientDatabase.connect_with_retry`).

        Raises:
            DatabaseUnavailableError: attempts spent and ``required``.
            sqlalchemy.exc.DBAPIError: a permanent error (wrong password, unknown database).
        """
        return await self._startup.connect(self.required if required is None else required)

    async def check(self) -> bool:
        """One ``SELECT 1``, without retry (through the breaker); True when it answered."""
        core = self._core
        if core.closed:
            return False
        try:
            await core.check_guard.acall(self._probe)
        except Exception as error:
            core.attempt_failed(error)
            return False
        if not core.tracker.connected:
            core.succeeded("check succeeded")
        return True

    async def aclose(self) -> None:
        """Stop the background reconnect, close the pooled connections (of an engine made
        here) and mark the client CLOSED. Idempotent."""
        core = self._core
        if core.closed:
            return
        await self._startup.stop()
        core.closing()
        try:
            if self._commit_resolver is not None:
                await self._commit_resolver.aclose()
            if core.owns_engine:
                await self._engine.dispose()
        finally:
            core.closed_now()

    async def close(self, timeout: float | None = None) -> None:
        """:meth:`aclose`, under the name every client shares."""
        await self.aclose()

    async def __aenter__(self) -> AsyncResilientDatabase:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _statement_work(statement: Any,
                    parameters: Any) -> Callable[[AsyncConnection], Awaitable[ExecuteResult]]:
    async def work(connection: AsyncConnection) -> ExecuteResult:
        return ExecuteResult.of(await connection.execute(statement, parameters))

    return work


async def _rollback_quietly(connection: AsyncConnection) -> None:
    try:
        await connection.rollback()
    except Exception:  # the connection may be gone; the server rolls back what it had
        _log.debug("rollback after a failed attempt failed", exc_info=True)


async def _invalidate_quietly(connection: AsyncConnection) -> None:
    try:
        await connection.invalidate()
    except Exception:
        _log.debug("invalidating a cancelled connection failed", exc_info=True)
