"""Broker URL validation and the default reconnect policy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import pika

from instrumented_clients.config import env_bool, env_float, env_int, env_str
from instrumented_clients.rabbitmq.errors import classify
from instrumented_clients.redaction import redact_text, redact_url
from instrumented_clients.resilience.clock import SYSTEM_CLOCK, Clock
from instrumented_clients.resilience.retry import RetryPolicy

__all__ = ["DEFAULT_URL", "connection_settings_from_env", "default_reconnect_policy", "parse_urls"]

DEFAULT_URL = "amqp://guest:guest@localhost:5672/"


def default_reconnect_policy(
    max_retries: int = 10, retry_delay: float = 1.0, retry_max_delay: float = 30.0,
    clock: Clock = SYSTEM_CLOCK,
) -> RetryPolicy:
    """The default reconnect policy (``RABBITMQ_MAX_RETRIES`` etc.)."""
    return RetryPolicy(max_attempts=max_retries, initial_delay=retry_delay,
                       max_delay=retry_max_delay, classifier=classify, clock=clock)


def parse_urls(urls: str | Sequence[str]) -> tuple[str, ...]:
    """Split and validate broker URLs (a comma-separated string or a sequence).

    Raises:
        ValueError: naming the (redacted) URL and what was expected; before any I/O.
    """
    items = [u.strip() for u in urls.split(",")] if isinstance(urls, str) else list(urls)
    items = [u for u in items if u]
    if not items:
        raise ValueError(f"url must name at least one broker, got {urls!r}")
    for url in items:
        expected = "amqp://user:password@host:port/vhost (or amqps://)"
        try:
            parts = urlsplit(url)
            port = parts.port  # raises ValueError on a non-numeric port
        except ValueError:
            raise ValueError(f"RabbitMQ url {redact_url(url)!r} is invalid: expected {expected}"
                             ) from None
        if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
            raise ValueError(f"RabbitMQ url {redact_url(url)!r} is invalid: expected {expected}")
        if port == 0:
            raise ValueError(f"RabbitMQ url {redact_url(url)!r} has port 0: expected {expected}")
        try:
            pika.URLParameters(url)
        except Exception as exc:
            raise ValueError(f"RabbitMQ url {redact_url(url)!r} is invalid: "
                             f"{redact_text(str(exc))}") from None
    return tuple(items)


def connection_settings_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The connection keyword arguments every RabbitMQ client reads from the environment:
    ``RABBITMQ_URL`` (comma-separated), ``RABBITMQ_REQUIRED``, ``RABBITMQ_MAX_RETRIES``,
    ``RABBITMQ_RETRY_DELAY``, ``RABBITMQ_RETRY_MAX_DELAY``, ``RABBITMQ_HEARTBEAT`` and
    ``RABBITMQ_CONNECT_TIMEOUT``. A value that does not parse raises ``ConfigError`` naming it."""
    env = environ
    return {
        "url": env_str("RABBITMQ_URL", DEFAULT_URL, env),
        "required": env_bool("RABBITMQ_REQUIRED", False, env),
        "reconnect_policy": default_reconnect_policy(
            env_int("RABBITMQ_MAX_RETRIES", 10, minimum=1, environ=env),
            env_float("RABBITMQ_RETRY_DELAY", 1.0, minimum=0, environ=env),
            env_float("RABBITMQ_RETRY_MAX_DELAY", 30.0, minimum=0, environ=env),
        ),
        "heartbeat": env_float("RABBITMQ_HEARTBEAT", 60.0, minimum=0, environ=env),
        "connect_timeout": env_float("RABBITMQ_CONNECT_TIMEOUT", 10.0, minimum=0, environ=env),
    }
