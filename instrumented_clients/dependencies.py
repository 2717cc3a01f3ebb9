"""The command line's three dependencies (database, Redis, RabbitMQ), read from the settings table.

:func:`validate_urls` checks their URLs with the clients' own parsers before any I/O.
:func:`check_dependencies` is ``instrumented-clients check``: it builds each real client with one
attempt and no history, on a private telemetry (a check must not add series to anybody's
registry), tries it once (the client's ``check()`` where it has one), and lets a
:class:`~instrumented_clients.health.HealthRegistry` judge, as ``/ready`` would. A failure is
classified by the client's own ``errors.classify``: there is no second classifier here.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from instrumented_clients import settings as table
from instrumented_clients.health import HealthRegistry
from instrumented_clients.redaction import describe_error, redact_text, safe_address
from instrumented_clients.resilience import ErrorCategory, RetryPolicy
from instrumented_clients.telemetry import Telemetry

__all__ = [
    "DEPENDENCIES",
    "CheckReport",
    "ClassifiedError",
    "DependencyResult",
    "check_dependencies",
    "classifier",
    "database_system",
    "display_address",
    "validate_urls",
]

DEPENDENCIES: Final = ("database", "redis", "rabbitmq")

Classify = Callable[[BaseException], ErrorCategory]


def display_address(url: str) -> str:
    """``host:port`` of a server URL, or the file of an SQLite URL; never a password."""
    address = safe_address(url)
    if address or not url.startswith("sqlite"):
        return address
    return urlsplit(url).path.lstrip("/") or ":memory:"


def database_system(url: str) -> str:
    """OpenTelemetry's ``db.system.name`` for a SQLAlchemy URL."""
    scheme = urlsplit(url).scheme.split("+", 1)[0].lower()
    return {"postgres": "postgresql", "postgresql": "postgresql", "mysql": "mysql",
            "mariadb": "mariadb", "sqlite": "sqlite"}.get(scheme, scheme or "unknown")


def validate_urls(database_url: str, redis_url: str, rabbitmq_url: str) -> None:
    """Check every URL with its client's own parser, before any I/O.

    Raises:
        ConfigError: naming the variable, its value without password and what was expected
            (an unknown SQL dialect or a missing driver included).
    """
    from instrumented_clients.db._engine import build_engine, normalize_url
    from instrumented_clients.rabbitmq.settings import urls_from_env
    from instrumented_clients.redis.settings import validate_url

    variable = table.DATABASE_URL.env
    build_engine(normalize_url(database_url, argument=variable), {}, argument=variable).dispose()
    validate_url(redis_url, table.REDIS_URL.env)
    urls_from_env({table.RABBITMQ_URL.env: rabbitmq_url})


class ClassifiedError(Exception):
    """A failure a client has already classified (and described without credentials)."""

    def __init__(self, category: ErrorCategory, description: str) -> None:
        super().__init__(description)
        self.category = category
        self.description = description


def classifier(kind: str) -> Classify:
    """The client's own ``errors.classify`` for ``database``, ``redis`` or ``rabbitmq``."""
    if kind == "database":
        from instrumented_clients.db.errors import classify as db_classify

        return db_classify
    if kind == "redis":
        from instrumented_clients.redis.errors import classify as redis_classify

        return redis_classify
    from instrumented_clients.rabbitmq.errors import classify as rabbitmq_classify

    return rabbitmq_classify


def _root(error: BaseException) -> BaseException:
    """The driver's exception under a client's wrapper ("unavailable after N attempts")."""
    for _ in range(5):
        if error.__cause__ is None or not type(error).__module__.startswith(
                "instrumented_clients"):
            break
        error = error.__cause__
    return error


def _describe_failure(kind: str, error: BaseException) -> tuple[str, str]:
    """(category, one redacted line) of a failed attempt."""
    if isinstance(error, ClassifiedError):
        line = error.description.splitlines()[0] if error.description else describe_error(error)
        return error.category.value, redact_text(line)[:200]
    root = _root(error)
    return classifier(kind)(root).value, describe_error(root)


# -- the clients, built with one attempt -------------------------------------------------------


def _quiet_telemetry() -> Telemetry:
    from prometheus_client import CollectorRegistry

    return Telemetry(registry=CollectorRegistry(), tracing=False, logs=False)


def _connect_args(url: str, timeout: float) -> dict[str, Any]:
    """Driver arguments that bound the connect time (each dialect spells it differently)."""
    seconds = max(1, round(timeout))
    system = database_system(url)
    if system == "postgresql":
        return {"connect_timeout": seconds}
    if system in ("mysql", "mariadb"):
        return {"connect_timeout": seconds, "read_timeout": seconds}
    if system == "sqlite":
        return {"timeout": timeout}
    return {}


def _database(url: str, timeout: float) -> Any:
    from sqlalchemy.pool import NullPool

    from instrumented_clients.db import ResilientDatabase

    return ResilientDatabase(url, name="database", policy=RetryPolicy(max_attempts=1),
                             telemetry=_quiet_telemetry(),
                             engine_options={"poolclass": NullPool,
                                             "connect_args": _connect_args(url, timeout)})


def _redis(url: str, timeout: float) -> Any:
    from instrumented_clients.redis import ResilientRedis

    return ResilientRedis(url, name="redis", policy=RetryPolicy(max_attempts=1),
                          telemetry=_quiet_telemetry(), socket_timeout=timeout,
                          socket_connect_timeout=timeout)


def _rabbitmq(url: str, timeout: float) -> Any:
    # The connection both RabbitMQ clients use, with ``required``: its start() is the attempt.
    from instrumented_clients.rabbitmq.connection import RabbitConnection

    return RabbitConnection(url, name="rabbitmq", telemetry=_quiet_telemetry(),
                            reconnect_policy=RetryPolicy(max_attempts=1),
                            connect_timeout=timeout, stack_timeout=timeout,
                            connection_name="instrumented-clients check", required=True)


def _select_one(database: Any, timeout: float) -> None:
    database.execute("SELECT 1")


def _ping(client: Any, timeout: float) -> None:
    client.ping()


def _start(connection: Any, timeout: float) -> None:
    try:
        connection.start(timeout + 1.0)
    except Exception as error:
        # The connection classified the driver's error itself (on its I/O thread).
        category = connection.last_error_category or ErrorCategory.CONNECTION
        raise ClassifiedError(category, connection.last_error or describe_error(error)) from error


def _close(client: Any, timeout: float) -> None:
    if inspect.signature(client.close).parameters:
        client.close(timeout)
    else:
        client.close()


Build = Callable[[str, float], Any]
Attempt = Callable[[Any, float], None]

#: Per dependency: how to build its client, and its one attempt for a client without ``check()``.
CLIENTS: dict[str, tuple[Build, Attempt]] = {
    "database": (_database, _select_one),
    "redis": (_redis, _ping),
    "rabbitmq": (_rabbitmq, _start),
}


def attempt_once(client: Any, fallback: Attempt, timeout: float) -> None:
    """One attempt: the client's ``check()`` where it has one. A failure raises.

    A ``check()`` that answers only False (it says *that* it failed, not why) is followed by the
    same single attempt made the plain way, so the failure can be classified.
    """
    check = getattr(client, "check", None)
    if callable(check):
        result = check()
        error = getattr(result, "error", None)
        if isinstance(error, BaseException):
            raise error
        if result is not False and getattr(result, "ok", True) is not False:
            return
    fallback(client, timeout)


# -- the check -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DependencyResult:
    """One dependency's row: what was tried and the registry's verdict on it."""

    name: str
    system: str
    address: str
    required: bool
    ok: bool
    latency: float
    category: str | None = None
    error: str | None = None

    @property
    def state(self) -> str:
        return "up" if self.ok else "down"


@dataclass(frozen=True, slots=True)
class CheckReport:
    """The registry's status (``healthy``, ``degraded``, ``unhealthy``) and every row."""

    status: str
    results: tuple[DependencyResult, ...]

    @property
    def down_required(self) -> list[str]:
        return [r.name for r in self.results if not r.ok and r.required]

    @property
    def down_optional(self) -> list[str]:
        return [r.name for r in self.results if not r.ok and not r.required]


@dataclass(slots=True)
class _Tried:
    kind: str
    url: str
    client: Any
    latency: float = 0.0
    failure: tuple[str, str] | None = None


def _try(kind: str, url: str, timeout: float) -> _Tried:
    build, fallback = CLIENTS[kind]
    started = time.perf_counter()
    try:
        client = build(url, timeout)
    except Exception as error:
        return _Tried(kind, url, None, time.perf_counter() - started,
                      _describe_failure(kind, error))
    tried = _Tried(kind, url, client)
    try:
        attempt_once(client, fallback, timeout)
    except Exception as error:
        tried.failure = _describe_failure(kind, error)
    tried.latency = time.perf_counter() - started
    return tried


def check_dependencies(
    names: Iterable[str] = DEPENDENCIES,
    *,
    require: Iterable[str] = (),
    timeout: float = 5.0,
    environ: Mapping[str, str] | None = None,
) -> CheckReport:
    """Try each dependency once (in parallel) through its client and judge with a registry.

    The database is always required, RabbitMQ when ``RABBITMQ_REQUIRED`` says so, and anything
    in ``require``.

    Raises:
        ConfigError: a variable of the settings table does not parse or a URL is unusable,
            before any I/O.
    """
    for entry in table.SETTINGS:  # every variable, so that any bad one fails before any I/O
        entry.read(environ)
    urls = {"database": table.DATABASE_URL.read(environ), "redis": table.REDIS_URL.read(environ),
            "rabbitmq": table.RABBITMQ_URL.read(environ)}
    validate_urls(urls["database"], urls["redis"], urls["rabbitmq"])
    urls["rabbitmq"] = urls["rabbitmq"].split(",")[0].strip()
    required = {"database", *require}
    if table.RABBITMQ_REQUIRED.read(environ):
        required.add("rabbitmq")
    wanted: Sequence[str] = [name for name in DEPENDENCIES if name in set(names)]
    with ThreadPoolExecutor(max_workers=max(1, len(wanted))) as pool:
        tried = list(pool.map(lambda kind: _try(kind, urls[kind], timeout), wanted))
    try:
        return _judge(tried, required)
    finally:
        for attempt in tried:
            if attempt.client is not None:
                _close(attempt.client, timeout)


class _Attempted:
    """A client as the registry sees it after the attempt: its own ``health()``, and not healthy
    when the attempt failed (whatever state the client reports)."""

    def __init__(self, tried: _Tried) -> None:
        self.tried = tried

    def health(self) -> dict[str, Any]:
        client, failure = self.tried.client, self.tried.failure
        report = dict(client.health()) if client is not None else {"state": "failed"}
        if failure is not None:
            report.update(healthy=False, last_error=failure[1])
        return report


def _judge(tried: list[_Tried], required: set[str]) -> CheckReport:
    registry = HealthRegistry()
    for attempt in tried:
        registry.register(_Attempted(attempt), name=attempt.kind,
                          required=attempt.kind in required)
    verdict = registry.check()
    results = []
    for attempt in tried:
        report = verdict["dependencies"][attempt.kind]
        ok = bool(report["healthy"])
        category, error = attempt.failure or (None, None)
        if not ok and error is None:  # the attempt passed, the client is still not usable
            category = "unavailable"
            error = str(report.get("last_error") or f"state {report.get('state')}")
        system = report.get("system") or (
            database_system(attempt.url) if attempt.kind == "database" else attempt.kind)
        results.append(DependencyResult(attempt.kind, str(system), display_address(attempt.url),
                                        attempt.kind in required, ok, attempt.latency,
                                        category, error))
    return CheckReport(str(verdict["status"]), tuple(results))
