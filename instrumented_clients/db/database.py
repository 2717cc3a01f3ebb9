"""``ResilientDatabase``: a SQLAlchemy engine whose statements and transactions retry and report.

Every call goes through a cached :class:`~instrumented_clients.resilience.Guard` (retry, circuit
breaker, metrics, span); driver errors are classified in :mod:`instrumented_clients.db.errors`.

Transaction rule: on a transient error (connection lost, 40001, 40P01 / MySQL 1213, MySQL 1205,
57P01) the transaction is rolled back explicitly, and after the backoff the *whole* function runs
again on a fresh connection. A connection lost *during COMMIT* is ambiguous — the server may have
committed. On PostgreSQL the client then asks the server what became of the transaction
(:mod:`instrumented_clients.db.commit_outcome`); where that cannot be settled, and on MySQL/MariaDB,
it raises :class:`CommitOutcomeUnknownError` and reruns only with ``idempotent=True``.
Authentication, syntax/programming and integrity errors are never retried.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Final, Literal, TypeVar

from opentelemetry.semconv.attributes.db_attributes import DB_QUERY_TEXT
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.sql.elements import TextClause

from instrumented_clients.client import HealthReport, resolve_breaker, resolve_retry
from instrumented_clients.db._engine import (
    DEFAULT_DATABASE_URL,
    READ_VERBS,
    address_of,
    as_statement,
    build_engine,
    detected_system,
    normalize_url,
    system_of,
    verb_of,
)
from instrumented_clients.db._health import database_health, span_attributes
from instrumented_clients.db._pool_metrics import (
    bind_engine_pool_gauges,
    forget_series,
)
from instrumented_clients.db._rules import (
    commit_or_report_ambiguity,
    counts_against_breaker,
    db_policy_from_env,
    default_db_policy,
    note_failure,
    rollback_quietly,
    with_db_classifier,
)
from instrumented_clients.db._startup import connect_at_startup
from instrumented_clients.db.commit_outcome import CommitOutcomeResolver
from instrumented_clients.db.result import ExecuteResult
from instrumented_clients.db.spans import describe_error, query_attributes
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

__all__ = ["ResilientDatabase"]

T = TypeVar("T")
_log = logging.getLogger("instrumented_clients.db")
_S = ConnectionState
OPERATIONS: Final = ("execute", "transaction", "connect")


class ResilientDatabase:
    """A SQL database behind a SQLAlchemy engine, with retries, a circuit breaker and telemetry.

    Args:
        url: a database URL (``postgresql://``, ``mysql://``, ``mariadb://``, ``sqlite:///``;
            psycopg and PyMySQL are chosen when the URL names no driver) or an existing
            ``Engine`` (used as it is: give it ``pool_pre_ping=True`` yourself). Default: the
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

    Raises:
        ConfigError: for a malformed URL or a missing driver, before any I/O.
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
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        if isinstance(url, Engine):
            self._engine, self._owns_engine = url, False
        else:
            parsed = normalize_url(DEFAULT_DATABASE_URL if url is None else url)
            self._engine, self._owns_engine = build_engine(parsed, engine_options or {}), True
        self.name = name
        self.required = bool(required)
        self.query_text = bool(query_text)
        self.policy = with_db_classifier(resolve_retry(retry, policy, default_db_policy))
        self.connect_policy = with_db_classifier(connect_policy or self.policy)
        self.telemetry = telemetry or get_default_telemetry()
        # Only a mysql:// URL can turn out to be MariaDB; everything else is known now.
        self._system_fixed = system is not None or not (
            self._engine.dialect.name == "mysql" and system_of(self._engine) == "mysql")
        self._clock = self.policy.clock
        self._address = address_of(self._engine.url)
        self._span_base: dict[str, Any] = {}
        self._breaker_option = breaker
        self._breaker_settings = (failure_threshold, recovery_timeout)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reconnector: threading.Thread | None = None
        self._text_cache: dict[str, TextClause] = {}
        self._closed = False
        self._setup_instruments(system or system_of(self._engine))
        self._commit_resolver = (CommitOutcomeResolver(self._engine, self._clock)
                                 if resolve_commit_outcome and self.system == "postgresql"
                                 else None)
        _FORK_SAFE.add(self)

    # -- construction of the labelled pieces -----------------------------------------------------

    def _setup_instruments(self, system: str) -> None:
        self.system = system
        telemetry = self.telemetry
        self.context = ClientContext(system, self.name, self._clock, telemetry)
        telemetry.prepare(system, self.name, OPERATIONS)
        self._span_base = span_attributes(system, self._engine.url)
        self.breaker = resolve_breaker(self._breaker_option, lambda: CircuitBreaker(
            *self._breaker_settings, failure_on=counts_against_breaker, context=self.context,
        ))
        self._tracker = ConnectionTracker(self.context)
        self._execute_guards: dict[str, Guard] = {}
        self._prepared: dict[str, tuple[Any, Guard, bool]] = {}
        self._transaction_guard = self._guard("transaction", "transaction", {})
        self._connect_guard = self._guard("connect", "connect", {}, self.connect_policy)
        self._check_guard = self._guard("connect", "connect", {},
                                        self.connect_policy.replace(max_attempts=1))
        metrics = telemetry.metrics
        self._pool_wait: Any = (
            metrics["pool_wait_seconds"].labels(system, self.name) if metrics else None
        )
        bind_engine_pool_gauges(telemetry, system, self.name, self._engine)

    def _guard(self, operation: str, span_name: str, attributes: Mapping[str, Any],
               policy: RetryPolicy | None = None) -> Guard:
        # Retry log lines name their target: "postgresql/orders-db transaction", not a method.
        return Guard(policy or self.policy, breaker=self.breaker, context=self.context,
                     operation=operation,
                     span_name=span_name, span_attributes={**self._span_base, **attributes},
                     target=f"{self.system}/{self.name} {operation}",
                     describe_error=describe_error)

    def _execute_guard(self, statement: Any, verb: str) -> Guard:
        """One guard per span shape: per query summary, or per statement when its text is
        recorded. Bounded: the statements themselves are cached at most 512 at a time."""
        summary, attributes = query_attributes(statement, verb, self.query_text)
        key = attributes.get(DB_QUERY_TEXT) or summary or verb
        guard = self._execute_guards.get(key)
        if guard is None:
            if len(self._execute_guards) >= 1024:
                self._execute_guards.clear()
            guard = self._execute_guards[key] = self._guard(
                "execute", summary or self.system, attributes)
        return guard

    def _settle_system(self) -> None:
        """Relabel once connected if the server turned out to be MariaDB behind ``mysql://``."""
        if self._system_fixed:
            return
        self._system_fixed = True
        actual = detected_system(self._engine)
        if actual != self.system:
            old = self.system
            # Close the provisional tracker first: that also ends its reconnect span.
            self._tracker.closing(f"relabelled as {actual}")
            self._tracker.closed_now(f"relabelled as {actual}")
            forget_series(self.telemetry, old, self.name)
            self._setup_instruments(actual)
            _log.info("database client %r: server is %s; system label changed from %s",
                      self.name, actual, old)

    def _settle_early(self) -> None:
        # Before the first operation is counted, so that it is counted under the right label.
        try:
            with self._engine.connect():
                pass
        except Exception:
            return  # the operation itself will fail, retry and report under the URL's label
        self._settle_system()

    # -- public properties ----------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for code that needs it directly; such calls are not guarded)."""
        return self._engine

    @property
    def state(self) -> ConnectionState:
        return self._tracker.state

    @property
    def connected(self) -> bool:
        return self._tracker.state is _S.CONNECTED

    @property
    def last_error(self) -> str | None:
        """The last transient failure, redacted."""
        return self._tracker.last_error

    @property
    def consecutive_failures(self) -> int:
        """Transient failures in a row since the last success."""
        return self._tracker.consecutive_failures

    @property
    def reconnect_attempts(self) -> int:
        return self._tracker.reconnect_attempts

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
        if not self._system_fixed:
            self._settle_early()
        prepared = self._prepared.get(statement) if isinstance(statement, str) else None
        if prepared is None:
            prepared = self._prepare(statement)
        clause, guard, read = prepared
        result: ExecuteResult = guard.call(self._execute_once, clause, parameters,
                                           read if idempotent is None else idempotent)
        return result

    def _prepare(self, statement: Any) -> tuple[Any, Guard, bool]:
        """The statement's clause, its verb's guard and whether it is a read; cached for SQL
        strings (bounded), so the hot path is one dict lookup."""
        verb = verb_of(statement)
        prepared = (as_statement(statement, self._text_cache),
                    self._execute_guard(statement, verb),
                    verb in READ_VERBS)
        if isinstance(statement, str):
            if len(self._prepared) >= 512:
                self._prepared.clear()
            self._prepared[statement] = prepared
        return prepared

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
        if not self._system_fixed:
            self._settle_early()
        result: T = self._transaction_guard.call(self._transaction_once, fn,
                                                 idempotent or read_only, isolation_level)
        return result

    def _checkout(self) -> Connection:
        clock = self._clock
        started = clock.monotonic()
        connection = self._engine.connect()  # pool checkout, pre-ping included
        if self._pool_wait is not None:
            self._pool_wait.observe(clock.monotonic() - started)
        return connection

    def _execute_once(self, statement: Any, parameters: Any, idempotent: bool) -> ExecuteResult:
        def work(connection: Connection) -> ExecuteResult:
            return ExecuteResult.of(connection.execute(statement, parameters))

        return self._run_committed(work, idempotent)

    def _transaction_once(
        self, fn: Callable[[Connection], T], idempotent: bool, isolation_level: str | None
    ) -> T:
        def work(connection: Connection) -> T:
            return fn(connection)

        return self._run_committed(work, idempotent, begin=True, isolation_level=isolation_level)

    def _run_committed(self, work: Callable[[Connection], T], idempotent: bool, *,
                       begin: bool = False, isolation_level: str | None = None) -> T:
        """One attempt: check a connection out, (open a transaction,) run ``work``, COMMIT, and
        keep the state."""
        resolver = None if idempotent else self._commit_resolver
        try:
            with self._checkout() as connection:
                marker = None
                try:
                    if begin:
                        if isolation_level is not None:
                            connection.execution_options(isolation_level=isolation_level)
                        connection.begin()
                        if resolver is not None:
                            marker = resolver.begin(connection)  # BEGIN and the id in one trip
                    value = work(connection)
                except BaseException:
                    # Explicitly: MySQL's lock wait timeout (1205) undoes only the statement.
                    rollback_quietly(connection)
                    raise
                if resolver is None:
                    commit_or_report_ambiguity(connection, idempotent)
                else:
                    resolver.commit(connection, marker)
        except BaseException as error:
            self._note_failure(error)
            raise
        if not self._tracker.connected:
            self._note_success("operation succeeded")
        return value

    # -- connection state -------------------------------------------------------------------------

    def _note_failure(self, error: BaseException) -> None:
        note_failure(self._tracker, error)

    def _note_success(self, reason: str) -> None:
        self._tracker.succeeded(reason)
        if not self._system_fixed:
            self._settle_system()  # a new tracker under the server's own label
            self._tracker.succeeded(reason)

    def _probe(self) -> None:
        with self._checkout() as connection:
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
        return connect_at_startup(self, self.required if required is None else required)

    def check(self) -> bool:
        """One ``SELECT 1``, without retry (through the breaker); True when the database
        answered. A failure is classified and recorded (``state``, ``last_error``)."""
        if self._closed:
            return False
        try:
            self._check_guard.call(self._probe)
        except Exception as error:
            self._note_failure(error)
            return False
        if not self._tracker.connected:
            self._note_success("check succeeded")
        return True

    # -- lifecycle ------------------------------------------------------------------------------

    def health(self) -> HealthReport:
        """A JSON-ready snapshot: state, breaker, last error (redacted) and pool counts."""
        return database_health(self.system, self.name, self._tracker, self.breaker,
                               self._address, self._engine, closed=self._closed)

    def close(self, timeout: float | None = None) -> None:
        """Stop background reconnects, close pooled connections (of an engine made here) and
        mark the client CLOSED. Idempotent.

        Args:
            timeout: seconds to wait for the background reconnect thread (default 5).
        """
        if self._closed:
            return
        self._stop.set()
        reconnector = self._reconnector
        if reconnector is not None and reconnector is not threading.current_thread():
            reconnector.join(timeout=5.0 if timeout is None else timeout)
        self._tracker.closing("close()")
        self._closed = True
        if self._owns_engine:
            self._engine.dispose()
        unbind_pool_gauges(self.telemetry, self.system, self.name)
        self._tracker.closed_now("close()")

    def __enter__(self) -> ResilientDatabase:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"ResilientDatabase(name={self.name!r}, system={self.system}, "
                f"address={self._address!r}, state={self._tracker.state.value})")

    @classmethod
    def from_env(
        cls, name: str = "database", environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> ResilientDatabase:
        """Build from ``DATABASE_URL``, ``DB_RETRY_MAX_ATTEMPTS`` (attempts, first included),
        ``DB_RETRY_BASE_DELAY`` and ``DB_RETRY_MAX_DELAY``; keyword arguments win.

        Raises:
            ConfigError: naming the variable whose value does not parse.
        """
        url = DATABASE_URL.read(environ)
        if "policy" not in overrides:
            overrides["policy"] = db_policy_from_env(environ)
        if "url" not in overrides:
            overrides["url"] = normalize_url(url, argument=DATABASE_URL.env)
        return cls(name=name, **overrides)


# -- fork safety: a child must not share its parent's sockets ------------------------------------

_FORK_SAFE: weakref.WeakSet[ResilientDatabase] = weakref.WeakSet()


def _dispose_in_child() -> None:
    for database in list(_FORK_SAFE):
        # close=False: the parent still owns those sockets; the child just forgets them.
        database._engine.dispose(close=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_dispose_in_child)
