"""Every environment variable of the command line, read and checked once, before any I/O.

A value that does not parse raises :class:`~instrumented_clients.config.ConfigError` naming the
variable, the value (a URL's password replaced by ``***``) and what was expected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from instrumented_clients import settings as table
from instrumented_clients.resilience import RetryPolicy

__all__ = ["DEFAULT_DATABASE_URL", "DEFAULT_RABBITMQ_URL", "DEFAULT_REDIS_URL", "Settings"]

DEFAULT_DATABASE_URL = table.DATABASE_URL.default
DEFAULT_REDIS_URL = table.REDIS_URL.default
DEFAULT_RABBITMQ_URL = table.RABBITMQ_URL.default


@dataclass(frozen=True)
class Settings:
    """The package's settings table (:mod:`instrumented_clients.settings`) as the demo reads it."""

    database_url: str
    redis_url: str
    rabbitmq_url: str
    rabbitmq_required: bool
    rabbitmq_max_retries: int
    rabbitmq_retry_delay: float
    rabbitmq_retry_max_delay: float
    rabbitmq_max_pending_events: int
    rabbitmq_heartbeat: float
    rabbitmq_connect_timeout: float
    rabbitmq_prefetch: int
    db_retry_max_attempts: int
    db_retry_base_delay: float
    db_retry_max_delay: float
    db_validate_idle_after: float
    redis_retry_max_attempts: int
    redis_retry_base_delay: float
    redis_retry_max_delay: float
    metrics_port: int = table.METRICS_PORT.default

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every variable; the first one that does not parse raises ``ConfigError``.

        URLs are checked by their clients' own parsers; :meth:`validate_urls` goes further
        (the SQL dialect and driver are loaded).
        """
        from instrumented_clients.db._engine import normalize_url
        from instrumented_clients.rabbitmq.settings import urls_from_env
        from instrumented_clients.redis.settings import validate_url

        database_url = table.DATABASE_URL.read(environ)
        normalize_url(database_url, argument=table.DATABASE_URL.env)
        urls_from_env(environ)
        return cls(
            database_url=database_url,
            redis_url=validate_url(table.REDIS_URL.read(environ), table.REDIS_URL.env),
            rabbitmq_url=table.RABBITMQ_URL.read(environ),
            rabbitmq_required=table.RABBITMQ_REQUIRED.read(environ),
            rabbitmq_max_retries=table.RABBITMQ_MAX_RETRIES.read(environ),
            rabbitmq_retry_delay=table.RABBITMQ_RETRY_DELAY.read(environ),
            rabbitmq_retry_max_delay=table.RABBITMQ_RETRY_MAX_DELAY.read(environ),
            rabbitmq_max_pending_events=table.RABBITMQ_MAX_PENDING_EVENTS.read(environ),
            rabbitmq_heartbeat=table.RABBITMQ_HEARTBEAT.read(environ),
            rabbitmq_connect_timeout=table.RABBITMQ_CONNECT_TIMEOUT.read(environ),
            rabbitmq_prefetch=table.RABBITMQ_PREFETCH.read(environ),
            db_retry_max_attempts=table.DB_RETRY_MAX_ATTEMPTS.read(environ),
            db_retry_base_delay=table.DB_RETRY_BASE_DELAY.read(environ),
            db_retry_max_delay=table.DB_RETRY_MAX_DELAY.read(environ),
            db_validate_idle_after=table.DB_VALIDATE_IDLE_AFTER.read(environ),
            redis_retry_max_attempts=table.REDIS_RETRY_MAX_ATTEMPTS.read(environ),
            redis_retry_base_delay=table.REDIS_RETRY_BASE_DELAY.read(environ),
            redis_retry_max_delay=table.REDIS_RETRY_MAX_DELAY.read(environ),
            metrics_port=table.METRICS_PORT.read(environ),
        )

    @property
    def rabbitmq_urls(self) -> list[str]:
        return [part.strip() for part in self.rabbitmq_url.split(",") if part.strip()]

    def db_policy(self) -> RetryPolicy:
        """The SQL client's retry policy (its classifier, jitter ×0.5–1.5) on these values."""
        from instrumented_clients.db import default_db_policy

        return default_db_policy(self.db_retry_max_attempts, self.db_retry_base_delay,
                                 self.db_retry_max_delay)

    def redis_policy(self) -> RetryPolicy:
        """The Redis client's retry policy (its classifier, jitter ×0.5–1.5) on these values."""
        from instrumented_clients.redis.settings import default_policy

        return default_policy(self.redis_retry_max_attempts, self.redis_retry_base_delay,
                              self.redis_retry_max_delay)

    def rabbitmq_reconnect_policy(self) -> RetryPolicy:
        """The broker reconnect schedule of the RabbitMQ clients (``RABBITMQ_MAX_RETRIES``
        attempts before ``failed``, then attempts go on at the cap interval)."""
        from instrumented_clients.rabbitmq.settings import default_reconnect_policy

        return default_reconnect_policy(self.rabbitmq_max_retries, self.rabbitmq_retry_delay,
                                        self.rabbitmq_retry_max_delay)

    def validate_urls(self) -> None:
        """Check every URL with the clients' own parsers, before any I/O.

        Raises:
            ConfigError: naming the variable, its value without password and what was expected
                (an unknown SQL dialect or a missing driver included).
        """
        from instrumented_clients.dependencies import validate_urls

        validate_urls(self.database_url, self.redis_url, self.rabbitmq_url)
