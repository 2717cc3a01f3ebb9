"""Redis settings: the default URL and retry policy, and the URL check made before any I/O."""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

from instrumented_clients.config import ConfigError
from instrumented_clients.redaction import redact_url
from instrumented_clients.redis.errors import classify
from instrumented_clients.resilience import SYSTEM_CLOCK, Clock, RetryPolicy

__all__ = ["DEFAULT_URL", "URL_EXPECTED", "default_policy", "validate_url"]

DEFAULT_URL: Final = "redis://localhost:6379/0"
URL_EXPECTED: Final = "a URL like redis://[user:password@]host[:port][/db], rediss://... or unix://"


def default_policy(
    max_attempts: int = 4,
    initial_delay: float = 0.5,
    max_delay: float = 10.0,
    *,
    clock: Clock = SYSTEM_CLOCK,
) -> RetryPolicy:
    """The Redis defaults: 4 attempts, 0.5 s doubling to 10 s, ×0.5–1.5."""
    return RetryPolicy(
        max_attempts=max_attempts,
        initial_delay=initial_delay,
        max_delay=max_delay,
        exponential_base=2.0,
        jitter=0.5,
        classifier=classify,
        clock=clock,
    )


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
