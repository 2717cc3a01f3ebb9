"""``instrumented-clients check``: one attempt per dependency, through the library's own clients.

Each probe builds the real client (``ResilientDatabase``, ``ResilientRedis``, ``RabbitConnection``)
with a one-attempt policy and no breaker history, on a private telemetry (a check must not add
series to anybody's registry), and maps the failure to an :class:`ErrorCategory` with the
client's own ``errors.classify``: there is no second classifier here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from instrumented_clients.redaction import describe_error, redact_text, safe_address
from instrumented_clients.resilience import ErrorCategory, RetryPolicy
from instrumented_clients.telemetry import Telemetry

__all__ = [
    "PROBES",
    "ClassifiedError",
    "ProbeResult",
    "classifier",
    "database_system",
    "describe_error",
    "display_address",
    "probe",
    "probe_database",
    "probe_rabbitmq",
    "probe_redis",
]

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


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The outcome of one connection attempt."""

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


class ClassifiedError(Exception):
    """A failure a client has already classified (and described without credentials)."""

    def __init__(self, category: ErrorCategory, description: str) -> None:
        super().__init__(description)
        self.category = category
        self.description = description


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


def probe_database(url: str, timeout: float) -> None:
    """``SELECT 1`` through ``ResilientDatabase`` with one attempt."""
    from sqlalchemy.pool import NullPool

    from instrumented_clients.db import ResilientDatabase

    database = ResilientDatabase(url, name="check", policy=RetryPolicy(max_attempts=1),
                                 telemetry=_quiet_telemetry(),
                                 engine_options={"poolclass": NullPool,
                                                 "connect_args": _connect_args(url, timeout)})
    try:
        database.execute("SELECT 1")
    finally:
        database.close()


def probe_redis(url: str, timeout: float) -> None:
    """``PING`` through ``ResilientRedis`` with one attempt and no breaker."""
    from instrumented_clients.redis import ResilientRedis

    with ResilientRedis(url, name="check", policy=RetryPolicy(max_attempts=1), breaker=False,
                        telemetry=_quiet_telemetry(), socket_timeout=timeout,
                        socket_connect_timeout=timeout) as client:
        client.ping()


def probe_rabbitmq(url: str, timeout: float) -> None:
    """Open a connection through ``RabbitConnection`` (one attempt; ``required``, so the
    failure is raised) and close it."""
    from instrumented_clients.rabbitmq.connection import RabbitConnection

    connection = RabbitConnection(url, name="check", telemetry=_quiet_telemetry(),
                                  reconnect_policy=RetryPolicy(max_attempts=1),
                                  connect_timeout=timeout, stack_timeout=timeout,
                                  connection_name="instrumented-clients check", required=True)
    try:
        connection.start(timeout + 1.0)
    except Exception as error:
        # The connection classified the driver's error itself (on its I/O thread).
        category = connection.last_error_category or ErrorCategory.CONNECTION
        raise ClassifiedError(category, connection.last_error or describe_error(error)) from error
    finally:
        connection.close(timeout)


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


#: What ``check`` tries for each dependency.
PROBES: dict[str, Callable[[str, float], None]] = {
    "database": probe_database, "redis": probe_redis, "rabbitmq": probe_rabbitmq,
}


def _root(error: BaseException) -> BaseException:
    """The driver's exception under a client's wrapper ("unavailable after N attempts")."""
    for _ in range(5):
        if error.__cause__ is None or not type(error).__module__.startswith(
                "instrumented_clients"):
            break
        error = error.__cause__
    return error


def probe(kind: str, system: str, url: str, *, required: bool, timeout: float) -> ProbeResult:
    """Try dependency ``kind`` once; never raises for a failed connection, never reports a
    password. The error category comes from the client's own classifier."""
    started = time.perf_counter()
    try:
        PROBES[kind](url, timeout)
    except ClassifiedError as error:
        return ProbeResult(kind, system, display_address(url), required, False,
                           time.perf_counter() - started, error.category.value,
                           describe_error(error) if not error.description else
                           redact_text(error.description.splitlines()[0])[:200])
    except Exception as error:
        root = _root(error)
        return ProbeResult(kind, system, display_address(url), required, False,
                           time.perf_counter() - started, classifier(kind)(root).value,
                           describe_error(root))
    return ProbeResult(kind, system, display_address(url), required, True,
                       time.perf_counter() - started)
