"""``AsyncResilientDatabase``: a SQLAlchemy ``AsyncEngine`` with the guarantees of
``ResilientDatabase``.

The same rules as the sync client, awaited: statements and transactions run through Guards
(``Guard.acall``); errors are classified by :mod:`instrumented_clients.db.errors`; a transient
error rolls back and reruns the *whole* async function on a fresh connection; a connection lost
during COMMIT is :class:`~instrumented_clients.db.CommitOutcomeUnknownError` unless
``idempotent=True`` (:func:`~instrumented_clients.db._rules.commit_failure`, shared with the sync
client); the connection state is kept by the same
:func:`~instrumented_clients.db._rules.note_failure`.

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
from typing import Any, Final, Literal, TypeVar

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import TextClause

from instrumented_clients.client import HealthReport, resolve_breaker, resolve_retry
from instrumented_clients.db._engine import (
    DEFAULT_DATABASE_URL,
    READ_VERBS,
    address_of,
    as_statement,
    build_engine,
    normalize_url,
    system_of,
    verb_of,
)
from instrumented_clients.db._health import database_health, span_attributes
from instrumented_clients.db._pool_metrics import bind_engine_pool_gauges
from instrumented_clients.db._rules import (
    commit_failure,
    counts_against_breaker,
    db_policy_from_env,
    default_db_policy,
    note_failure,
    with_db_classifier,
)
from instrumented_clients.db.result import ExecuteResult
from instrumented_clients.resilience import (
    CircuitBreaker,
    ClientContext,
    ConnectionState,
    ConnectionTracker,
    Guard,
    RetryPolicy,
)
from instrumented_clients.settings import DATABASE_URL
from instrumented_clients.telemetry import Telemetry, get_default_telemetry
from instrumented_clients.telemetry.pool import unbind_pool_gauges

__all__ = ["AsyncResilientDatabase"]

T = TypeVar("T")
_log = logging.getLogger("instrumented_clients.db")
_OPERATIONS: Final = ("execute", "transaction", "connect")
_MAX_PREPARED: Final = 512


class AsyncResilientDatabase:
    """A SQL database behind a SQLAlchemy ``AsyncEngine``, with retries, a breaker and telemetry.

    Takes the arguments of :class:`~instrumented_clients.db.ResilientDatabase` with the same
    meaning (``url`` may be an ``AsyncEngine``, used as it is); ``check()`` and ``close()`` are
    coroutines, ``health()`` reads memory only.

    Raises:
        ConfigError: a malformed URL or a missing driver, before any I/O.
    """

    def __init__(
        self,
        url: str | URL | AsyncEngine | None = None,
        *,
        name: str = "database",
        policy: RetryPolicy | None = None,
        retry: RetryPolicy | Literal[False] | None = None,
        breaker: CircuitBreaker | Literal[False] | None = None,
        failure_threshold: int = 5,
        recovery_timeout: float = 30.0,
        telemetry: Telemetry | None = None,
        system: str | None = None,
        engine_options: Mapping[str, Any] | None = None,
        required: bool = True,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        if isinstance(url, AsyncEngine):
            self._engine, self._owns_engine = url, False
        else:
            parsed = normalize_url(DEFAULT_DATABASE_URL if url is None else url,
                                   asynchronous=True)
            self._engine = build_engine(parsed, engine_options or {}, asynchronous=True)
            self._owns_engine = True
        self.name = name
        self.required = bool(required)
        self.policy = with_db_classifier(resolve_retry(retry, policy, default_db_policy))
        self.telemetry = telemetry or get_default_telemetry()
        self.system = system or system_of(self._engine)
        self._clock = self.policy.clock
        self.context = ClientContext(self.system, name, self._clock, self.telemetry)
        self.telemetry.prepare(self.system, name, _OPERATIONS)
        url_obj = self._engine.url
        self._address = address_of(url_obj)
        self._span_base = span_attributes(self.system, url_obj)
        self.breaker = resolve_breaker(breaker, lambda: CircuitBreaker(
            failure_threshold, recovery_timeout, failure_on=counts_against_breaker,
            context=self.context,
        ))
        self._tracker = ConnectionTracker(self.context)
        self._execute_guards: dict[str, Guard] = {}
        self._prepared: dict[str, tuple[Any, Guard, bool]] = {}
        self._text_cache: dict[str, TextClause] = {}
        self._transaction_guard = self._guard("transaction", "transaction", "TRANSACTION")
        self._check_guard = self._guard("connect", "connect", None,
                                        self.policy.replace(max_attempts=1))
        metrics = self.telemetry.metrics
        self._pool_wait: Any = (
            metrics["pool_wait_seconds"].labels(self.system, name) if metrics else None
        )
        bind_engine_pool_gauges(self.telemetry, self.system, name, self._engine.sync_engine)
        self._closed = False

    def _guard(self, operation: str, span_name: str, verb: str | None,
               policy: RetryPolicy | None = None) -> Guard:
        attributes = dict(self._span_base)
        if verb is not None:
            attributes["db.operation.name"] = verb
        return Guard(policy or self.policy, breaker=self.breaker, context=self.context,
                     operation=operation, span_name=span_name, span_attributes=attributes,
                     target=f"{self.system}/{self.name} {operation}")

    @classmethod
    def from_env(cls, name: str = "database", environ: Mapping[str, str] | None = None,
                 **overrides: Any) -> AsyncResilientDatabase:
        """Build from ``DATABASE_URL`` and the ``DB_RETRY_*`` variables, as
        :meth:`ResilientDatabase.from_env` does; keyword arguments win.

        Raises:
            ConfigError: naming the variable whose value does not parse.
        """
        url = DATABASE_URL.read(environ)
        if "policy" not in overrides:
            overrides["policy"] = db_policy_from_env(environ)
        if "url" not in overrides:
            overrides["url"] = normalize_url(url, argument=DATABASE_URL.env, asynchronous=True)
        return cls(name=name, **overrides)

    # -- properties -------------------------------------------------------------------------

    @property
    def engine(self) -> AsyncEngine:
        """The SQLAlchemy ``AsyncEngine`` (calls made on it directly are not guarded)."""
        return self._engine

    @property
    def state(self) -> ConnectionState:
        return self._tracker.state

    # -- the data path ----------------------------------------------------------------------

    async def execute(self, statement: Any, parameters: Any = None, *,
                      idempotent: bool | None = None) -> ExecuteResult:
        """Run one statement in its own transaction and commit it; retried on transient errors
        (see :meth:`ResilientDatabase.execute`)."""
        prepared = self._prepared.get(statement) if isinstance(statement, str) else None
        if prepared is None:
            prepared = self._prepare(statement)
        clause, guard, read = prepared
        result: ExecuteResult = await guard.acall(
            self._run_committed, _statement_work(clause, parameters),
            read if idempotent is None else idempotent)
        return result

    def _prepare(self, statement: Any) -> tuple[Any, Guard, bool]:
        verb = verb_of(statement)
        guard = self._execute_guards.get(verb)
        if guard is None:
            guard = self._execute_guards[verb] = self._guard("execute", verb, verb)
        prepared = (as_statement(statement, self._text_cache), guard, verb in READ_VERBS)
        if isinstance(statement, str):
            if len(self._prepared) >= _MAX_PREPARED:
                self._prepared.clear()
            self._prepared[statement] = prepared
        return prepared

    async def transaction(self, fn: Callable[[AsyncConnection], Awaitable[T]], *,
                          idempotent: bool = False, isolation_level: str | None = None) -> T:
        """Await ``fn(connection)`` in one transaction; on a transient error, run all of it
        again on a fresh connection (see :meth:`ResilientDatabase.transaction`).

        ``fn`` must not commit; it may run several times.
        """
        async def work(connection: AsyncConnection) -> T:
            if isolation_level is not None:
                await connection.execution_options(isolation_level=isolation_level)
            await connection.begin()
            return await fn(connection)

        result: T = await self._transaction_guard.acall(self._run_committed, work, idempotent)
        return result

    async def _checkout(self) -> AsyncConnection:
        clock = self._clock
        started = clock.monotonic()
        connection = await self._engine.connect()  # pool checkout, pre-ping included
        if self._pool_wait is not None:
            self._pool_wait.observe(clock.monotonic() - started)
        return connection

    async def _run_committed(self, work: Callable[[AsyncConnection], Awaitable[T]],
                             idempotent: bool) -> T:
        """One attempt: check a connection out, run ``work``, COMMIT, and keep the state."""
        try:
            connection = await self._checkout()
            try:
                try:
                    value = await work(connection)
                except Exception:
                    await _rollback_quietly(connection)
                    raise
                try:
                    await connection.commit()
                except Exception as error:
                    raise commit_failure(error, idempotent) from error
            except asyncio.CancelledError:
                # Mid-statement or mid-COMMIT: the driver connection's state is unknown.
                await _invalidate_quietly(connection)
                raise
            finally:
                await connection.close()
        except BaseException as error:
            note_failure(self._tracker, error)
            raise
        if not self._tracker.connected:
            self._tracker.succeeded("operation succeeded")
        return value

    # -- the client shape -------------------------------------------------------------------

    async def check(self) -> bool:
        """One ``SELECT 1``, without retry (through the breaker); True when it answered."""
        if self._closed:
            return False
        try:
            await self._check_guard.acall(self._run_committed, _probe, True)
        except Exception:
            return False
        return True

    def health(self) -> HealthReport:
        """A JSON-ready snapshot: state, breaker, last error (redacted) and pool counts."""
        return database_health(self.system, self.name, self._tracker, self.breaker,
                               self._address, self._engine.sync_engine, closed=self._closed)

    async def aclose(self) -> None:
        """Close the pooled connections (of an engine made here) and mark the client CLOSED.
        Idempotent."""
        if self._closed:
            return
        self._tracker.closing("close()")
        self._closed = True
        try:
            if self._owns_engine:
                await self._engine.dispose()
        finally:
            unbind_pool_gauges(self.telemetry, self.system, self.name)
            self._tracker.closed_now("close()")

    async def close(self, timeout: float | None = None) -> None:
        """:meth:`aclose`, under the name every client shares (nothing runs in the background,
        so there is nothing to wait ``timeout`` for)."""
        await self.aclose()

    async def __aenter__(self) -> AsyncResilientDatabase:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return (f"AsyncResilientDatabase(name={self.name!r}, system={self.system}, "
                f"address={self._address!r}, state={self._tracker.state.value})")


def _statement_work(statement: Any,
                    parameters: Any) -> Callable[[AsyncConnection], Awaitable[ExecuteResult]]:
    async def work(connection: AsyncConnection) -> ExecuteResult:
        return ExecuteResult.of(await connection.execute(statement, parameters))

    return work


async def _probe(connection: AsyncConnection) -> None:
    await connection.exec_driver_sql("SELECT 1")


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
