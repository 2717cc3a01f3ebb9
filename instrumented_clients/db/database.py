"""``ResilientDatabase``: a SQLAlchemy engine whose statements and transactions retry and report.

Every call goes through a cached :class:`~instrumented_clients.resilience.Guard` (retry, circuit
breaker, metrics, span); driver errors are classified in :mod:`instrumented_clients.db.errors`.

Transaction rule: on a transient error (connection lost, 40001, 40P01 / MySQL 1213, MySQL 1205,
57P01) the transaction is rolled back explicitly, and after the backoff the *whole* function runs
again on a fresh connection — at once, without a backoff, when the BEGIN the client sends itself
(psycopg) finds that a pooled connection died while idle (pooled connections are pinged only
after an idle threshold, and not there: :mod:`instrumented_clients.db._validation`).
A connection lost *during COMMIT* is ambiguous — the server may have committed. On PostgreSQL
the client then asks the server what became of the transaction
(:mod:`instrumented_clients.db.commit_outcome`); where that cannot be settled, and on
MySQL/MariaDB, it raises :class:`CommitOutcomeUnknownError` and reruns only with
``idempotent=True``. Authentication, syntax/programming and integrity errors are never retried.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Literal, TypeVar

from sqlalchemy.engine import URL, Connection, Engine

from instrumented_clients.db._rules import (
    commit_or_report_ambiguity,
    rollback_quietly,
)
from instrumented_clients.db._startup import Startup
from instrumented_clients.db._validation import (
    is_reused,
    resume_validation,
    stale_connection_error,
    suspend_validation,
)
from instrumented_clients.db.commit_outcome import CommitOutcomeResolver, open_transaction
from instrumented_clients.db.core import DatabaseClient, DatabaseCore, env_arguments
from instrumented_clients.db.result import ExecuteResult
from instrumented_clients.resilience import CircuitBreaker, RetryPolicy
from instrumented_clients.settings import DB_VALIDATE_IDLE_AFTER
from instrumented_clients.telemetry import Telemetry

__all__ = ["ResilientDatabase"]

T = TypeVar("T")
_log = logging.getLogger("instrumented_clients.db")


class ResilientDatabase(DatabaseClient):
    """A SQL database behind a SQLAlchemy engine, with retries, a circuit breaker and telemetry.

    Args:
        url: a database URL (``postgresql://``, ``mysql://``, ``mariadb://``, ``sqlite:///``;
            psycopg and PyMySQL are chosen when the URL names no driver) or an existing
            ``Engine`` (used as it is: no idle validation is added to it). Default: the
            ``sqlite:///instrumented-clients-demo.db`` demo database.
        name: the ``client`` label, a low-cardinality logical name.
        policy: retry policy of ``execute`` and ``transaction`` (default:
            :func:`default_db_policy`).
        retry: the same as ``policy`` (``False``: one attempt), the name every client shares.
        connect_policy: retry policy of :meth:`connect_with_retry` (default: ``policy``).
        breaker: circuit breaker shared by every operation: None (default) for one that opens
            after ``failure_threshold`` consecutive failures for ``recovery_timeout`` seconds
            (see :func:`~instrumented_clients.db.is_transient_db_error`), ``False`` for none,
            or that one.
        failure_threshold, recovery_timeout: the default breaker's settings (5, 30 s).
        required: whether the service cannot work without the database (the default of
            :meth:`connect_with_retry`, and of a health registry).
        telemetry: where metrics, spans and logs go (default: the package's).
        system: override the ``system`` label (default: from the URL and the server's version).
        engine_options: extra ``create_engine`` keyword arguments (``pool_size``, ...).
        resolve_commit_outcome: PostgreSQL only: when the connection is lost during COMMIT, ask
            the server whether the transaction committed instead of raising
            :class:`CommitOutcomeUnknownError` (the transaction id is taken with BEGIN).
            Default True.
        query_text: put the statement's text in its span (``db.query.text``), string and
            number literals masked as ``?``; False keeps SQL out of traces altogether.
        validate_idle_after: seconds (default 1) a pooled connection may sit idle before it is
            pinged at checkout; 0 pings every pooled connection. On psycopg, reads and
            :meth:`transaction` send no ping: their BEGIN, sent by the client as the first
            round trip, finds a dead connection, which is replaced at once.

    Raises:
        ConfigError: for a malformed URL or a missing driver, before any I/O.
        ValueError: an empty ``name`` or a negative ``validate_idle_after``.
    """

    def __init__(
        self,
        url: str | URL | Engine | None = None,
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
            url, asynchronous=False, name=name, policy=policy, retry=retry,
            connect_policy=connect_policy, breaker=breaker,
            failure_threshold=failure_threshold, recovery_timeout=recovery_timeout,
            telemetry=telemetry, system=system, engine_options=engine_options,
            required=required, query_text=query_text, validate_idle_after=validate_idle_after)
        super().__init__(core)
        self._engine: Engine = core.engine
        self._startup = Startup(core, self._probe)
        self._commit_resolver = (CommitOutcomeResolver(self._engine, core.clock)
                                 if resolve_commit_outcome and core.system == "postgresql"
                                 else None)
        # psycopg's libpq connection lets the client send BEGIN itself (see _run_committed).
        self._own_begin = core.owns_engine and self._engine.dialect.driver == "psycopg"
        _FORK_SAFE.add(self)

    def _settle_early(self) -> None:
        # Before the first operation is counted, so that it is counted under the right label.
        try:
            with self._engine.connect():
                pass
        except Exception:
            return  # the operation itself will fail, retry and report under the URL's label
        self._core.settle_system()

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for code that needs it directly; such calls are not guarded)."""
        return self._engine

    @property
    def reconnecting(self) -> bool:
        """Whether a background reconnect (``connect_with_retry(required=False)``) is running."""
        return self._startup.reconnecting

    # -- the data path ---------------------------------------------------------------------------

    def execute(
        self, statement: Any, parameters: Any = None, *, idempotent: bool | None = None
    ) -> ExecuteResult:
        """Run one statement in its own transaction and commit it; retried on transient errors.

        Args:
            statement: SQL text (named ``:param`` placeholders) or a SQLAlchemy Core construct.
            parameters: a mapping for one execution, or a list of mappings (executemany).
            idempotent: whether the statement may run twice if the connection is lost during
                COMMIT. Default: True for reads (SELECT, SHOW, EXPLAIN, ...), False otherwise.

        Returns:
            The rows (fetched before the connection went back to the pool) and the row count.
        """
        core = self._core
        if not core.settled:
            self._settle_early()
        clause, guard, read = core.prepare(statement)
        safe = read if idempotent is None else idempotent
        result: ExecuteResult = guard.call(self._execute_once, clause, parameters, safe)
        return result

    def transaction(
        self,
        fn: Callable[[Connection], T],
        *,
        idempotent: bool = False,
        isolation_level: str | None = None,
        read_only: bool = False,
    ) -> T:
        """Run ``fn(connection)`` in one transaction; on a transient error, run all of it again.

        ``fn`` must not commit; it may run several times, so it should have no side effects
        outside the database (or tolerate repeats). Its return value is returned after COMMIT.

        Args:
            fn: the work, given a SQLAlchemy ``Connection`` inside an open transaction.
            idempotent: rerun even when the connection is lost during COMMIT (the first run may
                have committed). Default False: raise :class:`CommitOutcomeUnknownError`.
            isolation_level: e.g. ``"SERIALIZABLE"``, ``"REPEATABLE READ"`` for this transaction.
            read_only: ``fn`` writes nothing: no COMMIT outcome question is asked, and a
                connection lost during COMMIT reruns it (there is nothing to apply twice).
        """
        if not self._core.settled:
            self._settle_early()
        result: T = self._core.transaction_guard.call(self._transaction_once, fn,
                                                      idempotent or read_only, isolation_level)
        return result

    def _checkout(self, validate: bool) -> Connection:
        """A pooled connection; ``validate``: pinged first when it has been idle too long."""
        core = self._core
        timed = core.checkout_may_wait()
        started = core.clock.monotonic() if timed else 0.0
        if validate:
            connection = self._engine.connect()
        else:
            token = suspend_validation()
            try:
                connection = self._engine.connect()
            finally:
                resume_validation(token)
        if timed:
            core.pool_wait.observe(core.clock.monotonic() - started)
        return connection

    def _execute_once(self, statement: Any, parameters: Any, idempotent: bool) -> ExecuteResult:
        def work(connection: Connection) -> ExecuteResult:
            return ExecuteResult.of(connection.execute(statement, parameters))

        return self._run_committed(work, idempotent)

    def _transaction_once(
        self, fn: Callable[[Connection], T], idempotent: bool, isolation_level: str | None
    ) -> T:
        return self._run_committed(fn, idempotent, begin=True, isolation_level=isolation_level)

    def _run_committed(self, work: Callable[[Connection], T], idempotent: bool, *,
                       begin: bool = False, isolation_level: str | None = None) -> T:
        """One attempt: check a connection out, (open a transaction,) run ``work``, COMMIT, and
        keep the state.

        On psycopg, work that is safe to rerun (``transaction(fn)``, reads) sends its BEGIN
        itself, as the checkout's first round trip (with the transaction id when COMMIT outcome
        resolution is on): the connection is not pinged, and if it died in the pool that BEGIN
        fails before any of the work ran, and the attempt starts again at once on a new
        connection. Elsewhere the first round trip is the caller's statement, which may also be
        cut off by a real outage (the Guard's retry, counted), so a connection idle past the
        threshold is pinged at checkout instead.
        """
        resolver = None if idempotent else self._commit_resolver
        own_begin = self._own_begin and (begin or idempotent)
        try:
            while True:
                with self._checkout(validate=not own_begin) as connection:
                    marker = None
                    stale = False
                    try:
                        if begin:
                            if isolation_level is not None:
                                connection.execution_options(isolation_level=isolation_level)
                            connection.begin()
                        if own_begin or (begin and resolver is not None):
                            reused = own_begin and is_reused(connection.info)
                            try:
                                if begin and resolver is not None:
                                    marker = resolver.begin(connection)  # BEGIN and the id
                                else:
                                    open_transaction(connection)
                            except Exception as error:
                                stale = reused and stale_connection_error(error)
                                raise
                        value = work(connection)
                    except BaseException as error:
                        # Explicitly: MySQL's lock wait timeout (1205) undoes only the statement.
                        rollback_quietly(connection)
                        if stale:
                            if not connection.invalidated:
                                connection.invalidate(error)
                            _log.info("database %r: a pooled connection was gone; started "
                                      "again at once on a new one", self._core.name)
                            own_begin = False  # once, then pinged: a second loss is an outage
                            continue
                        raise
                    if resolver is None:
                        commit_or_report_ambiguity(connection, idempotent)
                    else:
                        resolver.commit(connection, marker)
                break
        except BaseException as error:
            self._core.attempt_failed(error)
            raise
        if not self._core.tracker.connected:
            self._core.succeeded("operation succeeded")
        return value

    # -- start-up and checks ----------------------------------------------------------------------

    def _probe(self) -> None:
        with self._checkout(validate=True) as connection:
            connection.exec_driver_sql("SELECT 1").all()

    def connect_with_retry(self, *, required: bool | None = None) -> bool:
        """Connect at start-up, retrying transient failures under ``connect_policy``.

        Args:
            required: True: raise :class:`DatabaseUnavailableError` when the attempts are spent.
                False: start degraded (state FAILED) and keep trying in the background at the
                policy's cap interval until the database answers. None (default): the
                client's ``required``.

        Returns:
            True when connected, False when degraded (only with ``required=False``).

        Raises:
            DatabaseUnavailableError: attempts spent and ``required``.
            sqlalchemy.exc.DBAPIError: a permanent error (wrong password, unknown database), at
                once and whatever ``required`` says: waiting does not fix configuration.
        """
        return self._startup.connect(self.required if required is None else required)

    def check(self) -> bool:
        """One ``SELECT 1``, without retry (through the breaker); True when the database
        answered. A failure is classified and recorded (``state``, ``last_error``)."""
        core = self._core
        if core.closed:
            return False
        try:
            core.check_guard.call(self._probe)
        except Exception as error:
            core.attempt_failed(error)
            return False
        if not core.tracker.connected:
            core.succeeded("check succeeded")
        return True

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        """Stop background reconnects, close pooled connections (of an engine made here) and
        mark the client CLOSED. Idempotent.

        Args:
            timeout: seconds to wait for the background reconnect thread (default 5).
        """
        core = self._core
        if core.closed:
            return
        self._startup.stop(timeout)
        core.closing()
        if core.owns_engine:
            self._engine.dispose()
        core.closed_now()

    def __enter__(self) -> ResilientDatabase:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @classmethod
    def from_env(
        cls, name: str = "database", environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> ResilientDatabase:
        """Build from ``DATABASE_URL``, ``DB_RETRY_MAX_ATTEMPTS`` (attempts, first included),
        ``DB_RETRY_BASE_DELAY``, ``DB_RETRY_MAX_DELAY`` and ``DB_VALIDATE_IDLE_AFTER``; keyword
        arguments win.

        Raises:
            ConfigError: naming the variable whose value does not parse.
        """
        return cls(name=name, **env_arguments(environ, overrides, asynchronous=False))


# -- fork safety: a child must not share its parent's sockets ------------------------------------

_FORK_SAFE: weakref.WeakSet[ResilientDatabase] = weakref.WeakSet()


def _dispose_in_child() -> None:
    for database in list(_FORK_SAFE):
        # close=False: the parent still owns those sockets; the child just forgets them.
        database.engine.dispose(close=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_dispose_in_child)
