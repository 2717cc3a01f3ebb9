"""What a SQL client is besides its I/O: engine, settings, Guards, breaker, state and health.

:class:`~instrumented_clients.db.ResilientDatabase` and
:class:`~instrumented_clients.db.AsyncResilientDatabase` differ only in how they talk to the
database (an ``Engine`` or an ``AsyncEngine``, ``Guard.call`` or ``Guard.acall``). Everything else
— the checked URL and the engine built from it, the retry policies with the SQL classifier, the
default breaker, the Guards and their span names, the connection tracker, the pool metrics, the
relabelling of a ``mysql://`` URL that reaches MariaDB, idle validation, the health report and
``from_env()`` — is built here once and held by both.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final, Literal

from opentelemetry.semconv.attributes.db_attributes import DB_QUERY_TEXT
from sqlalchemy.engine import URL, Engine
from sqlalchemy.ext.asyncio import AsyncEngine
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
    pool_limit,
)
from instrumented_clients.db._rules import (
    counts_against_breaker,
    db_policy_from_env,
    default_db_policy,
    note_failure,
    with_db_classifier,
)
from instrumented_clients.db._validation import IdleValidation
from instrumented_clients.db.errors import classify
from instrumented_clients.db.spans import describe_error, query_attributes
from instrumented_clients.resilience import (
    CircuitBreaker,
    ClientContext,
    ConnectionState,
    ConnectionTracker,
    Guard,
    RetryPolicy,
)
from instrumented_clients.settings import DATABASE_URL, DB_VALIDATE_IDLE_AFTER
from instrumented_clients.telemetry import Telemetry, get_default_telemetry
from instrumented_clients.telemetry.pool import unbind_pool_gauges

__all__ = ["OPERATIONS", "DatabaseClient", "DatabaseCore", "env_arguments"]

_log = logging.getLogger("instrumented_clients.db")
OPERATIONS: Final = ("execute", "transaction", "connect")
_MAX_PREPARED: Final = 512
_MAX_GUARDS: Final = 1024

Prepared = tuple[Any, Guard, bool]


class DatabaseCore:
    """The state and rules of one SQL client, sync or asyncio; see the clients for the
    arguments. ``url`` may be an engine of the client's kind, used as it is (no idle validation
    is added to it).

    Raises:
        ConfigError: a malformed URL or a missing driver, before any I/O.
        ValueError: an empty ``name`` or a negative ``validate_idle_after``.
    """

    def __init__(
        self,
        url: str | URL | Engine | AsyncEngine | None,
        *,
        asynchronous: bool,
        name: str,
        policy: RetryPolicy | None,
        retry: RetryPolicy | Literal[False] | None,
        connect_policy: RetryPolicy | None,
        breaker: CircuitBreaker | Literal[False] | None,
        failure_threshold: int,
        recovery_timeout: float,
        telemetry: Telemetry | None,
        system: str | None,
        engine_options: Mapping[str, Any] | None,
        required: bool,
        query_text: bool,
        validate_idle_after: float,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        self.name = name
        self.required = bool(required)
        self.query_text = bool(query_text)
        self.policy = with_db_classifier(resolve_retry(retry, policy, default_db_policy))
        self.connect_policy = with_db_classifier(connect_policy or self.policy)
        self.clock = self.policy.clock
        self.validation = IdleValidation(validate_idle_after, self.clock)
        engine_kind = AsyncEngine if asynchronous else Engine
        if isinstance(url, engine_kind):
            self.engine: Any = url
            self.owns_engine = False
        else:
            if isinstance(url, Engine | AsyncEngine):
                raise ValueError(f"url must be a URL or an {engine_kind.__name__}, got an "
                                 f"{type(url).__name__}")
            parsed = normalize_url(DEFAULT_DATABASE_URL if url is None else url,
                                   asynchronous=asynchronous)
            # The pool pings only what idle validation asks for (engine_options may say else).
            options = {"pool_pre_ping": False, **(engine_options or {})}
            self.engine = build_engine(parsed, options, asynchronous=asynchronous)
            self.owns_engine = True
        self.sync_engine: Engine = self.engine.sync_engine if asynchronous else self.engine
        if self.owns_engine:
            self.validation.install(self.sync_engine)
        self.telemetry = telemetry or get_default_telemetry()
        self.address = address_of(self.sync_engine.url)
        # Only a mysql:// URL can turn out to be MariaDB; everything else is known now.
        self.settled = system is not None or not (
            self.sync_engine.dialect.name == "mysql" and system_of(self.sync_engine) == "mysql")
        self.closed = False
        self._breaker_option = breaker
        self._breaker_settings = (failure_threshold, recovery_timeout)
        self._text_cache: dict[str, TextClause] = {}
        self._setup_instruments(system or system_of(self.sync_engine))

    def _setup_instruments(self, system: str) -> None:
        self.system = system
        telemetry = self.telemetry
        self.context = ClientContext(system, self.name, self.clock, telemetry)
        telemetry.prepare(system, self.name, OPERATIONS)
        self._span_base = span_attributes(system, self.sync_engine.url)
        self.breaker = resolve_breaker(self._breaker_option, lambda: CircuitBreaker(
            *self._breaker_settings, failure_on=counts_against_breaker, context=self.context,
        ))
        self.tracker = ConnectionTracker(self.context)
        self._execute_guards: dict[str, Guard] = {}
        self._prepared: dict[str, Prepared] = {}
        self.transaction_guard = self._guard("transaction", "transaction", {})
        self.connect_guard = self._guard("connect", "connect", {}, self.connect_policy)
        self.check_guard = self._guard("connect", "connect", {},
                                       self.connect_policy.replace(max_attempts=1))
        metrics = telemetry.metrics
        self.pool_wait: Any = (
            metrics["pool_wait_seconds"].labels(system, self.name) if metrics else None
        )
        bind_engine_pool_gauges(telemetry, system, self.name, self.sync_engine)
        self._limited_pool: Any = None
        self._pool_limit: int | None = None

    def checkout_may_wait(self) -> bool:
        """Whether the next checkout may wait for a connection: only then is it timed into
        ``pool_wait_seconds`` (a bounded queue pool with every connection in use)."""
        if self.pool_wait is None:
            return False
        pool: Any = self.sync_engine.pool
        if pool is not self._limited_pool:  # dispose() replaces the pool
            self._limited_pool, self._pool_limit = pool, pool_limit(pool)
        return self._pool_limit is not None and pool.checkedout() >= self._pool_limit

    def _guard(self, operation: str, span_name: str, attributes: Mapping[str, Any],
               policy: RetryPolicy | None = None) -> Guard:
        # Retry log lines name their target: "postgresql/orders-db transaction", not a method.
        return Guard(policy or self.policy, breaker=self.breaker, context=self.context,
                     operation=operation,
                     span_name=span_name, span_attributes={**self._span_base, **attributes},
                     target=f"{self.system}/{self.name} {operation}",
                     describe_error=describe_error)

    # -- statements --------------------------------------------------------------------------

    def prepare(self, statement: Any) -> Prepared:
        """The statement's clause, its guard and whether it is a read; cached for SQL strings
        (bounded), so the hot path is one dict lookup."""
        prepared = self._prepared.get(statement) if isinstance(statement, str) else None
        if prepared is not None:
            return prepared
        verb = verb_of(statement)
        prepared = (as_statement(statement, self._text_cache),
                    self._execute_guard(statement, verb),
                    verb in READ_VERBS)
        if isinstance(statement, str):
            if len(self._prepared) >= _MAX_PREPARED:
                self._prepared.clear()
            self._prepared[statement] = prepared
        return prepared

    def _execute_guard(self, statement: Any, verb: str) -> Guard:
        """One guard per span shape: per query summary, or per statement when its text is
        recorded (bounded)."""
        summary, attributes = query_attributes(statement, verb, self.query_text)
        key = attributes.get(DB_QUERY_TEXT) or summary or verb
        guard = self._execute_guards.get(key)
        if guard is None:
            if len(self._execute_guards) >= _MAX_GUARDS:
                self._execute_guards.clear()
            guard = self._execute_guards[key] = self._guard(
                "execute", summary or self.system, attributes)
        return guard

    # -- connection state ----------------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self.tracker.state

    def attempt_failed(self, error: BaseException) -> None:
        """Record a failed operation attempt in the connection state."""
        note_failure(self.tracker, error)

    def connect_failed(self, error: BaseException) -> None:
        """Record a failed connection attempt of start-up or of the background reconnect."""
        self.tracker.failed(error, classify(error), attempt=True)

    def succeeded(self, reason: str) -> None:
        """The database answered: CONNECTED, under the server's own ``system`` label."""
        self.tracker.succeeded(reason)
        if not self.settled:
            self.settle_system()
            self.tracker.succeeded(reason)  # the new tracker under the server's label

    def settle_system(self) -> None:
        """Once connected: relabel if the server turned out to be MariaDB behind ``mysql://``."""
        if self.settled:
            return
        self.settled = True
        actual = detected_system(self.sync_engine)
        if actual == self.system:
            return
        old = self.system
        # Close the provisional tracker first: that also ends its reconnect span.
        self.tracker.closing(f"relabelled as {actual}")
        self.tracker.closed_now(f"relabelled as {actual}")
        forget_series(self.telemetry, old, self.name)
        self._setup_instruments(actual)
        _log.info("database client %r: server is %s; system label changed from %s",
                  self.name, actual, old)

    # -- the client shape ----------------------------------------------------------------------

    def health(self) -> HealthReport:
        """A JSON-ready snapshot: state, breaker, last error (redacted) and pool counts."""
        return database_health(self.system, self.name, self.tracker, self.breaker,
                               self.address, self.sync_engine, closed=self.closed)

    def closing(self) -> bool:
        """Begin ``close()``; False when the client was closed already."""
        if self.closed:
            return False
        self.tracker.closing("close()")
        self.closed = True
        return True

    def closed_now(self) -> None:
        """End ``close()``: the pool gauges go, the state is CLOSED."""
        unbind_pool_gauges(self.telemetry, self.system, self.name)
        self.tracker.closed_now("close()")

    def describe(self, kind: str) -> str:
        return (f"{kind}(name={self.name!r}, system={self.system}, "
                f"address={self.address!r}, state={self.tracker.state.value})")


def env_arguments(environ: Mapping[str, str] | None, overrides: dict[str, Any], *,
                  asynchronous: bool) -> dict[str, Any]:
    """The constructor's arguments from ``DATABASE_URL``, ``DB_RETRY_*`` and
    ``DB_VALIDATE_IDLE_AFTER``; ``overrides`` win.

    Raises:
        ConfigError: naming the variable whose value does not parse.
    """
    arguments = dict(overrides)
    url = DATABASE_URL.read(environ)
    if "policy" not in arguments:
        arguments["policy"] = db_policy_from_env(environ)
    if "validate_idle_after" not in arguments:
        arguments["validate_idle_after"] = DB_VALIDATE_IDLE_AFTER.read(environ)
    if "url" not in arguments:
        arguments["url"] = normalize_url(url, argument=DATABASE_URL.env,
                                         asynchronous=asynchronous)
    return arguments


class DatabaseClient:
    """The read-only shape both SQL clients share, over their :class:`DatabaseCore`."""

    def __init__(self, core: DatabaseCore) -> None:
        self._core = core

    @property
    def name(self) -> str:
        return self._core.name

    @property
    def system(self) -> str:
        """``postgresql``, ``mysql``, ``mariadb``, ``sqlite``, ... (OpenTelemetry's names)."""
        return self._core.system

    @property
    def required(self) -> bool:
        return self._core.required

    @property
    def query_text(self) -> bool:
        return self._core.query_text

    @property
    def policy(self) -> RetryPolicy:
        return self._core.policy

    @property
    def connect_policy(self) -> RetryPolicy:
        return self._core.connect_policy

    @property
    def validate_idle_after(self) -> float:
        """Seconds a pooled connection may sit idle before ``execute`` pings it."""
        return self._core.validation.idle_after

    @property
    def telemetry(self) -> Telemetry:
        return self._core.telemetry

    @property
    def context(self) -> ClientContext:
        return self._core.context

    @property
    def breaker(self) -> CircuitBreaker | None:
        return self._core.breaker

    @property
    def state(self) -> ConnectionState:
        return self._core.tracker.state

    @property
    def connected(self) -> bool:
        return self._core.tracker.state is ConnectionState.CONNECTED

    @property
    def last_error(self) -> str | None:
        """The last transient failure, redacted."""
        return self._core.tracker.last_error

    @property
    def consecutive_failures(self) -> int:
        """Transient failures in a row since the last success."""
        return self._core.tracker.consecutive_failures

    @property
    def reconnect_attempts(self) -> int:
        return self._core.tracker.reconnect_attempts

    def health(self) -> HealthReport:
        """A JSON-ready snapshot: state, breaker, last error (redacted) and pool counts."""
        return self._core.health()

    def __repr__(self) -> str:
        return self._core.describe(type(self).__name__)
