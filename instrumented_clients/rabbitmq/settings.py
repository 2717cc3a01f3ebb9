"""Broker URL validation, the reconnect policy and the connection settings read from the
environment."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import pika

from instrumented_clients.config import ConfigError
from instrumented_clients.rabbitmq.errors import classify
from instrumented_clients.redaction import redact_text, redact_url
from instrumented_clients.resilience.clock import SYSTEM_CLOCK, Clock
from instrumented_clients.resilience.retry import RetryPolicy
from instrumented_clients.settings import (
    RABBITMQ_CONNECT_TIMEOUT,
    RABBITMQ_HEARTBEAT,
    RABBITMQ_MAX_RETRIES,
    RABBITMQ_REQUIRED,
    RABBITMQ_RETRY_DELAY,
    RABBITMQ_RETRY_MAX_DELAY,
    RABBITMQ_URL,
)

__all__ = ["DEFAULT_URL", "connection_settings_from_env", "default_reconnect_policy", "parse_urls",
           "reconnect_policy_from_env", "urls_from_env"]

DEFAULT_URL = RABBITMQ_URL.default


def default_reconnect_policy(
    max_retries: int = RABBITMQ_MAX_RETRIES.default,
    retry_delay: float = RABBITMQ_RETRY_DELAY.default,
    retry_max_delay: float = RABBITMQ_RETRY_MAX_DELAY.default,
    clock: Clock = SYSTEM_CLOCK,
) -> RetryPolicy:
    """The broker reconnect policy: ``max_retries`` attempts before ``failed``, the delay
    doubling from ``retry_delay`` up to ``retry_max_delay``."""
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


def urls_from_env(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """``RABBITMQ_URL`` (comma-separated), checked with :func:`parse_urls`.

    Raises:
        ConfigError: naming ``RABBITMQ_URL``, its value without password and what was expected.
    """
    value = RABBITMQ_URL.read(environ)
    try:
        return parse_urls(value)
    except ValueError as error:
        raise ConfigError(RABBITMQ_URL.env, redact_url(value),
                          f"amqp://user:password@host:port/vhost ({error})") from None


def reconnect_policy_from_env(environ: Mapping[str, str] | None = None) -> RetryPolicy:
    """The reconnect policy from ``RABBITMQ_MAX_RETRIES``, ``RABBITMQ_RETRY_DELAY`` and
    ``RABBITMQ_RETRY_MAX_DELAY``."""
    return default_reconnect_policy(RABBITMQ_MAX_RETRIES.read(environ),
                                    RABBITMQ_RETRY_DELAY.read(environ),
                                    RABBITMQ_RETRY_MAX_DELAY.read(environ))


def connection_settings_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The connection keyword arguments every RabbitMQ client reads from the settings table:
    ``RABBITMQ_URL`` (comma-separated), ``RABBITMQ_REQUIRED``, ``RABBITMQ_MAX_RETRIES``,
    ``RABBITMQ_RETRY_DELAY``, ``RABBITMQ_RETRY_MAX_DELAY``, ``RABBITMQ_HEARTBEAT`` and
    ``RABBITMQ_CONNECT_TIMEOUT``. A value that does not parse raises ``ConfigError`` naming it."""
    return {
        "url": urls_from_env(environ),
        "required": RABBITMQ_REQUIRED.read(environ),
        "reconnect_policy": reconnect_policy_from_env(environ),
        "heartbeat": RABBITMQ_HEARTBEAT.read(environ),
        "connect_timeout": RABBITMQ_CONNECT_TIMEOUT.read(environ),
    }
