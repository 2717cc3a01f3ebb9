"""Every environment variable of the command line, read and checked once, before any I/O.

A value that does not parse raises :class:`~instrumented_clients.config.ConfigError` naming the
variable, the value (a URL's password replaced by ``***``) and what was expected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from instrumented_clients.config import ConfigError, env_bool, env_float, env_int, env_str
from instrumented_clients.redaction import redact_url
from instrumented_clients.resilience import RetryPolicy

__all__ = ["DEFAULT_DATABASE_URL", "DEFAULT_RABBITMQ_URL", "DEFAULT_REDIS_URL", "Settings"]

DEFAULT_DATABASE_URL = "sqlite:///instrumented-clients-demo.db"
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_RABBITMQ_URL = "amqp://guest:guest@localhost:5672/"

_SCHEMES = {
    "REDIS_URL": ("redis", "rediss", "unix"),
    "RABBITMQ_URL": ("amqp", "amqps"),
}


def _url(name: str, default: str, environ: Mapping[str, str] | None) -> str:
    value = env_str(name, default, environ)
    allowed = _SCHEMES.get(name)
    for part in value.split(","):
        try:
            scheme = urlsplit(part.strip()).scheme
            urlsplit(part.strip()).port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ConfigError(name, redact_url(value), "a URL with a valid port") from None
        if allowed is None and not scheme:
            raise ConfigError(name, redact_url(value), "a SQLAlchemy URL such as "
                              "postgresql+psycopg://user:password@host:5432/db")
        if allowed is not None and scheme not in allowed:
            raise ConfigError(name, redact_url(value),
                              "a URL with scheme " + " or ".join(f"{s}://" for s in allowed))
    return value


def _port(name: str, default: int, environ: Mapping[str, str] | None) -> int:
    port = env_int(name, default, minimum=0, environ=environ)
    if port > 65535:
        raise ConfigError(name, str(port), "an integer from 0 to 65535")
    return port


@dataclass(frozen=True)
class Settings:
    """The environment variables of the clients, as the demo and ``check`` use them."""

    database_url: str
    redis_url: str
    rabbitmq_url: str
    rabbitmq_required: bool
    rabbitmq_max_retries: int
    rabbitmq_retry_delay: float
    rabbitmq_retry_max_delay: float
    rabbitmq_max_pending_events: int
    rabbitmq_heartbeat: int
    rabbitmq_connect_timeout: float
    rabbitmq_prefetch: int
    db_retry_max_attempts: int
    db_retry_base_delay: float
    db_retry_max_delay: float
    redis_retry_max_attempts: int
    redis_retry_base_delay: float
    redis_retry_max_delay: float
    metrics_port: int = 8000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every variable; the first one that does not parse raises ``ConfigError``."""
        return cls(
            database_url=_url("DATABASE_URL", DEFAULT_DATABASE_URL, environ),
            redis_url=_url("REDIS_URL", DEFAULT_REDIS_URL, environ),
            rabbitmq_url=_url("RABBITMQ_URL", DEFAULT_RABBITMQ_URL, environ),
            rabbitmq_required=env_bool("RABBITMQ_REQUIRED", False, environ),
            rabbitmq_max_retries=env_int("RABBITMQ_MAX_RETRIES", 10, minimum=1, environ=environ),
            rabbitmq_retry_delay=env_float("RABBITMQ_RETRY_DELAY", 1.0, minimum=0,
                                           environ=environ),
            rabbitmq_retry_max_delay=env_float("RABBITMQ_RETRY_MAX_DELAY", 30.0, minimum=0,
                                               environ=environ),
            rabbitmq_max_pending_events=env_int("RABBITMQ_MAX_PENDING_EVENTS", 1000, minimum=1,
                                                environ=environ),
            rabbitmq_heartbeat=env_int("RABBITMQ_HEARTBEAT", 60, minimum=0, environ=environ),
            rabbitmq_connect_timeout=env_float("RABBITMQ_CONNECT_TIMEOUT", 10.0, minimum=0.001,
                                               environ=environ),
            rabbitmq_prefetch=env_int("RABBITMQ_PREFETCH", 100, minimum=1, environ=environ),
            db_retry_max_attempts=env_int("DB_RETRY_MAX_ATTEMPTS", 4, minimum=1,
                                          environ=environ),
            db_retry_base_delay=env_float("DB_RETRY_BASE_DELAY", 1.0, minimum=0, environ=environ),
            db_retry_max_delay=env_float("DB_RETRY_MAX_DELAY", 30.0, minimum=0, environ=environ),
            redis_retry_max_attempts=env_int("REDIS_RETRY_MAX_ATTEMPTS", 4, minimum=1,
                                             environ=environ),
            redis_retry_base_delay=env_float("REDIS_RETRY_BASE_DELAY", 0.5, minimum=0,
                                             environ=environ),
            redis_retry_max_delay=env_float("REDIS_RETRY_MAX_DELAY", 10.0, minimum=0,
                                            environ=environ),
            metrics_port=_port("METRICS_PORT", 8000, environ),
        )

    @property
    def rabbitmq_urls(self) -> list[str]:
        return [part.strip() for part in self.rabbitmq_url.split(",") if part.strip()]

    def db_policy(self) -> RetryPolicy:
        """The database retry: attempts, base delay, cap, jitter ×0.5–1.5.

        No classifier: ``ResilientDatabase`` adds its own (``instrumented_clients.db.errors``).
        """
        return RetryPolicy(max_attempts=self.db_retry_max_attempts,
                           initial_delay=self.db_retry_base_delay,
                           max_delay=self.db_retry_max_delay, jitter=0.5)

    def redis_policy(self) -> RetryPolicy:
        """The Redis retry, with the Redis client's classifier."""
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
        from instrumented_clients.db._engine import build_engine, normalize_url
        from instrumented_clients.rabbitmq.settings import parse_urls
        from instrumented_clients.redis.settings import validate_url

        build_engine(normalize_url(self.database_url, argument="DATABASE_URL"), {},
                     argument="DATABASE_URL").dispose()
        validate_url(self.redis_url, "REDIS_URL")
        try:
            parse_urls(self.rabbitmq_url)
        except ValueError as error:
            raise ConfigError("RABBITMQ_URL", redact_url(self.rabbitmq_url),
                              f"amqp://user:password@host:port/vhost ({error})") from None
