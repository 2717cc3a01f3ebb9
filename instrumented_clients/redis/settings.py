"""Redis settings: the default URL and retry policy, and the URL check made before any I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

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

__all__ = ["DEFAULT_URL", "URL_EXPECTED", "default_policy", "policy_from_env", "validate_url"]

DEFAULT_URL: Final = REDIS_URL.default
URL_EXPECTED: Final = "a URL like redis://[user:password@]host[:port][/db], rediss://... or unix://"


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


def validate_url(url: object, argument: str = "url") -> str:
    """Check a Redis URL before any I/O; the error names ``argument`` and never the password."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(argument, repr(url), URL_EXPECTED)
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
