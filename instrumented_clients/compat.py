"""The names of the in-house retry helpers, for code that moves to this package.

Code written against those helpers ports with an import change::

    from instrumented_clients.compat import RetryConfig, is_transient_http_error, retry

    @retry(RetryConfig(max_attempts=5, exception_filter=is_transient_http_error))
    def create_worker() -> dict[str, str]: ...

Every name here is a thin layer over the real API and reports the same metrics and spans; new
code should use that API directly (``docs/migrating.md`` maps each name to it):

- :class:`RetryConfig`, :func:`retry_async` -> :class:`~instrumented_clients.RetryPolicy`,
  :func:`~instrumented_clients.retry`;
- :func:`is_transient_http_error`, :func:`is_transient_db_error`,
  :func:`is_transient_rmq_error` -> ``RetryPolicy(retry_on=...)`` or a client's classifier;
- :class:`DatabaseConnectionRetry`, :func:`with_db_retry`, :func:`get_db_connection_retry` ->
  :class:`~instrumented_clients.ResilientDatabase`;
- :class:`RedisConnectionRetry`, :func:`with_redis_retry`, :func:`get_redis_connection_retry`
  -> :class:`~instrumented_clients.ResilientRedis`;
- :class:`ResilientConnection` -> :class:`~instrumented_clients.ResilientPublisher` (or keep it
  around your own ``pika.BlockingConnection``).

The database, Redis and RabbitMQ names need their driver extras and are imported on first use.
"""

from typing import TYPE_CHECKING, Any

from instrumented_clients._lazy import lazy_names
from instrumented_clients.resilience.compat import RetryConfig, retry_async
from instrumented_clients.resilience.errors import is_transient_http_error
from instrumented_clients.resilience.retry import retry

if TYPE_CHECKING:
    from instrumented_clients.db.compat import (
        DatabaseConnectionRetry,
        get_db_connection_retry,
        with_db_retry,
    )
    from instrumented_clients.db.errors import is_transient_db_error
    from instrumented_clients.rabbitmq.blocking import ResilientConnection
    from instrumented_clients.rabbitmq.errors import is_transient_rmq_error
    from instrumented_clients.redis.compat import (
        RedisConnectionRetry,
        get_redis_connection_retry,
        with_redis_retry,
    )

_load, _names = lazy_names(__name__, {
    "instrumented_clients.db.compat": (
        "DatabaseConnectionRetry", "get_db_connection_retry", "with_db_retry"),
    "instrumented_clients.db.errors": ("is_transient_db_error",),
    "instrumented_clients.redis.compat": (
        "RedisConnectionRetry", "get_redis_connection_retry", "with_redis_retry"),
    "instrumented_clients.rabbitmq.blocking": ("ResilientConnection",),
    "instrumented_clients.rabbitmq.errors": ("is_transient_rmq_error",),
}, globals())


def __getattr__(name: str) -> Any:
    return _load(name)


def __dir__() -> list[str]:
    return _names()


__all__ = [
    "DatabaseConnectionRetry",
    "RedisConnectionRetry",
    "ResilientConnection",
    "RetryConfig",
    "get_db_connection_retry",
    "get_redis_connection_retry",
    "is_transient_db_error",
    "is_transient_http_error",
    "is_transient_rmq_error",
    "retry",
    "retry_async",
    "with_db_retry",
    "with_redis_retry",
]
