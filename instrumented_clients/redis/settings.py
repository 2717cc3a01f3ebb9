"""Redis settings: the default URL and retry policy, and the URL check made before any I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, unquote, urlsplit

from instrumented_clients.config import ConfigError
from instrumented_clients.redaction import redact_url
from instrumented_clients.redis.errors import classify
from instrumented_clients.resilience import SYSTEM_CLOCK, Clock, RetryPolicy
from instrumented_clients.settings import (
    REDIS_RETRY_BASE_DELAY,
    REDIS_RETRY_MAX_ATTEMPTS,
    REDIS_RETRY_MAX_DELAY,
    REDIS_URL,
)

__all__ = [
    "DEFAULT_URL",
    "SENTINEL_SCHEME",
    "URL_EXPECTED",
    "SentinelAddress",
    "default_policy",
    "parse_sentinel_url",
    "policy_from_env",
    "sentinel_url",
    "validate_url",
]

DEFAULT_URL: Final = REDIS_URL.default
URL_EXPECTED: Final = (
    "a URL like redis://[user:password@]host[:port][/db], rediss://..., unix://... "
    "or redis+sentinel://host:port[,host:port...]/service[/db]")
SENTINEL_SCHEME: Final = "redis+sentinel"
SENTINEL_EXPECTED: Final = (
    "a URL like redis+sentinel://[user:password@]host:port[,host:port...]/service[/db] "
    "(the Sentinels' addresses, the monitored service's name)")


def default_policy(
    max_attempts: int = REDIS_RETRY_MAX_ATTEMPTS.default,
    initial_delay: float = REDIS_RETRY_BASE_DELAY.default,
    max_delay: float = REDIS_RETRY_MAX_DELAY.default,
    *,
    clock: Clock = SYSTEM_CLOCK,
) -> RetryPolicy:
    """The Redis retry policy: by default 4 attempts, 0.5 s doubling to 10 s, ×0.5–1.5 jitter."""
    return RetryPolicy(
        max_attempts=max_attempts,
        initial_delay=initial_delay,
        max_delay=max_delay,
        exponential_base=2.0,
        jitter=0.5,
        classifier=classify,
        clock=clock,
    )


def policy_from_env(
    environ: Mapping[str, str] | None = None, *, clock: Clock = SYSTEM_CLOCK
) -> RetryPolicy:
    """:func:`default_policy` from ``REDIS_RETRY_MAX_ATTEMPTS`` (attempts, the first included),
    ``REDIS_RETRY_BASE_DELAY`` and ``REDIS_RETRY_MAX_DELAY``."""
    return default_policy(REDIS_RETRY_MAX_ATTEMPTS.read(environ),
                          REDIS_RETRY_BASE_DELAY.read(environ),
                          REDIS_RETRY_MAX_DELAY.read(environ), clock=clock)


@dataclass(frozen=True)
class SentinelAddress:
    """What a ``redis+sentinel://`` URL names: the Sentinels, the service, db and credentials."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    username: str | None
    password: str | None


def sentinel_url(sentinels: Sequence[tuple[str, int]], service: str, db: int = 0) -> str:
    """The ``redis+sentinel://`` URL of ``service`` watched by ``sentinels``."""
    hosts = ",".join(f"{host}:{port}" for host, port in sentinels)
    return f"{SENTINEL_SCHEME}://{hosts}/{quote(service, safe='')}/{db}"


def parse_sentinel_url(url: str, argument: str = "url") -> SentinelAddress:
    """Parse ``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]``.

    Raises:
        ConfigError: naming ``argument``, the URL without its password, and what was expected.
    """
    shown = redact_url(url)
    rest = url[len(SENTINEL_SCHEME) + 3:] if url.startswith(SENTINEL_SCHEME + "://") else ""
    netloc, _, path = rest.partition("/")
    credentials, _, hosts = netloc.rpartition("@")
    username = password = None
    if credentials:
        user, has_password, secret = credentials.partition(":")
        username, password = unquote(user) or None, unquote(secret) if has_password else None
    sentinels: list[tuple[str, int]] = []
    for entry in hosts.split(","):
        host, _, port = entry.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(argument, shown, SENTINEL_EXPECTED)
        sentinels.append((host.strip("[]"), int(port)))
    service, _, db = path.strip("/").partition("/")
    if not service or (db and not db.isdigit()):
        raise ConfigError(argument, shown, SENTINEL_EXPECTED)
    return SentinelAddress(tuple(sentinels), unquote(service), int(db or 0), username, password)


def validate_url(url: object, argument: str = "url") -> str:
    """Check a Redis URL before any I/O; the error names ``argument`` and never the password."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(argument, repr(url), URL_EXPECTED)
    if url.startswith(SENTINEL_SCHEME + ":"):
        parse_sentinel_url(url, argument)
        return url
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError when not a number in 0..65535
    except ValueError:
        raise ConfigError(argument, shown, URL_EXPECTED + " with a numeric port") from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(argument, shown, URL_EXPECTED)
    if parts.scheme != "unix":
        if not parts.hostname:
            raise ConfigError(argument, shown, URL_EXPECTED + " with a host")
        db = parts.path.lstrip("/")
        if db and not db.isdigit():
            raise ConfigError(argument, shown, URL_EXPECTED + " where the path is a db number")
        if port == 0:
            raise ConfigError(argument, shown, URL_EXPECTED + " with a port in 1..65535")
    elif not parts.path:
        raise ConfigError(argument, shown, "unix:// followed by a socket path")
    return url
