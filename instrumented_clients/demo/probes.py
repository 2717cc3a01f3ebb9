"""One connection attempt per system, with the raw drivers: what ``instrumented-clients check``
runs, and the one place the demo maps driver exceptions to an :class:`ErrorCategory`.

Drivers are imported lazily (they are optional extras) and their exceptions recognised by class
name, so this module imports without any of them. Once the resilient clients are in, ``check`` can
ask their ``health()`` instead and each client's own ``errors.py`` replaces
:func:`classify_driver_error`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from instrumented_clients.redaction import redact_text, safe_address
from instrumented_clients.resilience import ErrorCategory, classify_exception

__all__ = [
    "ProbeResult",
    "classify_driver_error",
    "database_system",
    "describe_error",
    "display_address",
    "probe",
    "probe_database",
    "probe_rabbitmq",
    "probe_redis",
    "validate_urls",
]

# Class names (anywhere in the MRO) -> category; the first match wins, most specific first.
_BY_CLASS_NAME: Final[tuple[tuple[str, ErrorCategory], ...]] = (
    ("CircuitOpenError", ErrorCategory.CIRCUIT_OPEN),
    ("ProbableAuthenticationError", ErrorCategory.AUTH),
    ("AuthenticationError", ErrorCategory.AUTH),
    ("AuthenticationWrongNumberOfArgsError", ErrorCategory.AUTH),
    ("ProbableAccessDeniedError", ErrorCategory.PERMISSION),
    ("NoPermissionError", ErrorCategory.PERMISSION),
    ("BusyLoadingError", ErrorCategory.SERVER_BUSY),
    ("NackError", ErrorCategory.SERVER_BUSY),
    ("UnroutableError", ErrorCategory.CONFIGURATION),
    ("ConnectionBlockedTimeout", ErrorCategory.SERVER_BUSY),
    ("AMQPHeartbeatTimeout", ErrorCategory.TIMEOUT),
    ("NoSuchModuleError", ErrorCategory.CONFIGURATION),
    ("ArgumentError", ErrorCategory.CONFIGURATION),
    ("IntegrityError", ErrorCategory.INTEGRITY),
    ("ProgrammingError", ErrorCategory.PROGRAMMING),
)
# Messages of driver errors whose class says little (OperationalError, ResponseError).
_BY_MESSAGE: Final[tuple[tuple[str, ErrorCategory], ...]] = (
    ("password authentication failed", ErrorCategory.AUTH),
    ("access denied", ErrorCategory.AUTH),
    ("wrongpass", ErrorCategory.AUTH),
    ("noauth", ErrorCategory.AUTH),
    ("deadlock", ErrorCategory.DEADLOCK),
    ("could not serialize", ErrorCategory.SERIALIZATION),
    ("lock wait timeout", ErrorCategory.LOCK_TIMEOUT),
    ("database is locked", ErrorCategory.LOCK_TIMEOUT),
    ("timeout", ErrorCategory.TIMEOUT),
    ("timed out", ErrorCategory.TIMEOUT),
    ("does not exist", ErrorCategory.NOT_FOUND),
    ("unknown database", ErrorCategory.NOT_FOUND),
    ("unable to open database", ErrorCategory.CONFIGURATION),
    ("loading", ErrorCategory.SERVER_BUSY),
)
_CONNECTION_CLASS_NAMES: Final = frozenset({
    "AMQPConnectionError", "StreamLostError", "ConnectionClosed", "ConnectionError",
    "OperationalError", "InterfaceError", "DisconnectionError", "ChannelWrongStateError",
})
_CHANNEL_CODES: Final = {403: ErrorCategory.PERMISSION, 404: ErrorCategory.NOT_FOUND,
                         406: ErrorCategory.CONFIGURATION}


def classify_driver_error(exc: BaseException) -> ErrorCategory:
    """The category of a pika, redis-py or SQLAlchemy exception (stdlib ones included)."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    for name, category in _BY_CLASS_NAME:
        if name in names:
            return category
    if "ChannelClosedByBroker" in names:
        code = getattr(exc, "reply_code", None)
        return _CHANNEL_CODES.get(code, ErrorCategory.CONNECTION) if isinstance(code, int) \
            else ErrorCategory.CONNECTION
    if "TimeoutError" in names or "ConnectTimeout" in names:
        return ErrorCategory.TIMEOUT
    if names & _CONNECTION_CLASS_NAMES or "ResponseError" in names:
        message = str(exc).lower()
        for fragment, category in _BY_MESSAGE:
            if fragment in message:
                return category
        if "ResponseError" in names:
            return ErrorCategory.PROGRAMMING
        return ErrorCategory.CONNECTION
    cause = exc.__cause__ or exc.__context__
    if cause is not None and cause is not exc and isinstance(exc, Exception):
        inner = classify_exception(cause)
        if inner is not ErrorCategory.UNKNOWN:
            return inner
    return classify_exception(exc)


def describe_error(error: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message``, without credentials, at most ``limit`` characters.

    pika wraps the real cause in exceptions whose ``str`` is empty; the cause's text is used then.
    """
    text = str(error).strip()
    if not text and error.args:
        text = "; ".join(str(arg) or repr(arg) for arg in error.args)
    if not text:
        cause = error.__cause__ or error.__context__
        text = str(cause) if cause is not None else ""
    first_line = text.splitlines()[0] if text else ""
    described = redact_text(f"{type(error).__name__}: {first_line}".rstrip(": "))
    return described if len(described) <= limit else described[: limit - 1] + "…"


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


def database_connect_args(url: str, timeout: float) -> dict[str, Any]:
    """Driver arguments that bound the connect time (each dialect spells it differently)."""
    system = database_system(url)
    if system == "postgresql":
        return {"connect_timeout": max(1, round(timeout))}
    if system in ("mysql", "mariadb"):
        return {"connect_timeout": max(1, round(timeout)), "read_timeout": max(1, round(timeout))}
    if system == "sqlite":
        return {"timeout": timeout}
    return {}


def probe_database(url: str, timeout: float) -> None:
    """Connect with SQLAlchemy and run ``SELECT 1``."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool,
                           connect_args=database_connect_args(url, timeout))
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    finally:
        engine.dispose()


def redis_client(url: str, timeout: float) -> Any:
    """A redis-py client that tries once: retries belong to our Guard, not to redis-py."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                retry=Retry(NoBackoff(), 0))


def probe_redis(url: str, timeout: float) -> None:
    """Connect and ``PING``."""
    client = redis_client(url, timeout)
    try:
        client.ping()
    finally:
        client.close()


def rabbitmq_parameters(url: str, timeout: float, heartbeat: int | None = None,
                        connection_name: str | None = None) -> Any:
    """pika parameters with bounded connect, handshake and blocked timeouts and one attempt."""
    import pika

    parameters = pika.URLParameters(url)
    parameters.socket_timeout = timeout
    parameters.stack_timeout = timeout
    parameters.blocked_connection_timeout = max(timeout, 5.0)
    parameters.connection_attempts = 1
    parameters.retry_delay = 0
    if heartbeat is not None:
        parameters.heartbeat = heartbeat
    if connection_name:
        parameters.client_properties = {"connection_name": connection_name}
    return parameters


def probe_rabbitmq(url: str, timeout: float) -> None:
    """Open a pika ``BlockingConnection`` and close it."""
    import pika

    connection = pika.BlockingConnection(
        rabbitmq_parameters(url, timeout, connection_name="instrumented-clients check")
    )
    connection.close()


def probe(
    name: str, system: str, url: str, attempt: Callable[[str, float], None], *,
    required: bool, timeout: float,
) -> ProbeResult:
    """Run one probe; never raises for a failed connection, and never reports a password."""
    started = time.perf_counter()
    try:
        attempt(url, timeout)
    except Exception as error:
        return ProbeResult(name, system, display_address(url), required, False,
                           time.perf_counter() - started, classify_driver_error(error).value,
                           describe_error(error))
    return ProbeResult(name, system, display_address(url), required, True,
                       time.perf_counter() - started)


def validate_urls(database_url: str, redis_url: str, rabbitmq_urls: list[str]) -> None:
    """Build (without connecting) what each URL describes, so that an unknown dialect, a missing
    driver or a malformed URL is a configuration error before any I/O, not a retry loop.

    Raises:
        ConfigError: naming the variable, its value without password, and the driver's reason.
    """
    from instrumented_clients.config import ConfigError
    from instrumented_clients.redaction import redact_url

    def fail(variable: str, url: str, expected: str, error: BaseException) -> ConfigError:
        return ConfigError(variable, redact_url(url), f"{expected} ({describe_error(error)})")

    try:
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        create_engine(database_url, poolclass=NullPool).dispose()
    except Exception as error:
        raise fail("DATABASE_URL", database_url, "a SQLAlchemy URL whose dialect and driver are "
                   "installed", error) from None
    try:
        redis_client(redis_url, 1.0).close()
    except Exception as error:
        raise fail("REDIS_URL", redis_url, "a redis:// URL", error) from None
    for url in rabbitmq_urls:
        try:
            rabbitmq_parameters(url, 1.0)
        except Exception as error:
            raise fail("RABBITMQ_URL", url, "an amqp:// URL", error) from None
