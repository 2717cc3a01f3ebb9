"""Redis: ``ResilientRedis`` (a ``redis.Redis`` with retries, breaker, state and telemetry; also
behind Sentinel), its asyncio twin ``AsyncResilientRedis`` (a ``redis.asyncio.Redis``),
``ResilientRedisCluster`` (a ``redis.cluster.RedisCluster`` under the same rules), and the
in-house helpers'
``RedisConnectionRetry`` / ``with_redis_retry`` / ``get_redis_connection_retry``.

Needs the ``redis`` extra (redis-py 8.1 or later 8.x).
"""

from instrumented_clients.redis.aio import AsyncResilientPipeline, AsyncResilientRedis
from instrumented_clients.redis.client import ResilientRedis, counts_against_redis
from instrumented_clients.redis.cluster import ResilientClusterPipeline, ResilientRedisCluster
from instrumented_clients.redis.commands import CommandKind, command_kind, command_label
from instrumented_clients.redis.compat import (
    RedisConnectionRetry,
    get_redis_connection_retry,
    with_redis_retry,
)
from instrumented_clients.redis.errors import StaleConnectionError, classify, was_unsent
from instrumented_clients.redis.pipeline import ResilientPipeline
from instrumented_clients.redis.settings import DEFAULT_URL, default_policy

__all__ = [
    "DEFAULT_URL",
    "AsyncResilientPipeline",
    "AsyncResilientRedis",
    "CommandKind",
    "RedisConnectionRetry",
    "ResilientClusterPipeline",
    "ResilientPipeline",
    "ResilientRedis",
    "ResilientRedisCluster",
    "StaleConnectionError",
    "classify",
    "command_kind",
    "command_label",
    "counts_against_redis",
    "default_policy",
    "get_redis_connection_retry",
    "was_unsent",
    "with_redis_retry",
]
