"""The pool metrics of a :class:`~instrumented_clients.redis.ResilientRedis`.

``pool_connections{state=idle|in_use}`` and ``pool_max_connections`` are bound with
``Gauge.set_function``: each scrape reads the pool's own lists (nothing counted by hand, nothing
to drift), through a weak reference so the gauge never keeps a closed client's pool alive.
``pool_wait_seconds`` times ``get_connection()`` only where the pool can make a caller wait: a
``BlockingConnectionPool`` (given with ``connection_pool=``), whose check-out waits for a free
connection when ``max_connections`` are in use. The default pool never waits, so its check-out is
not timed and its commands pay nothing for it.

The gauges themselves are the shared ones of :mod:`instrumented_clients.telemetry.pool`.
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
import weakref
from typing import Any

import redis
import redis.asyncio

from instrumented_clients.telemetry import Telemetry
from instrumented_clients.telemetry.pool import bind_pool_gauges, unbind_pool_gauges

__all__ = ["bind_pool_count_gauges", "bind_pool_metrics", "can_make_callers_wait", "pool_counts",
           "unbind_pool_gauges"]


_timed: weakref.WeakSet[Any] = weakref.WeakSet()
_timed_lock = threading.Lock()


def pool_counts(pool: Any) -> dict[str, float]:
    """``idle``, ``in_use`` and ``max`` connections of a redis-py pool (0 for a gone pool)."""
    if pool is None:
        return {"idle": 0.0, "in_use": 0.0, "max": 0.0}
    (idle, _), (in_use, _) = pool.get_connection_count()  # redis-py's own (idle, in use)
    return {"idle": float(idle), "in_use": float(in_use),
            "max": float(getattr(pool, "max_connections", 0) or 0)}


def bind_pool_count_gauges(telemetry: Telemetry, system: str, client: str, pool: Any) -> None:
    """Point the client's pool gauges at ``pool`` (again, for a client used after close())."""
    ref = weakref.ref(pool)
    bind_pool_gauges(telemetry, system, client, lambda: pool_counts(ref()))


def can_make_callers_wait(pool: Any) -> bool:
    """Whether ``get_connection()`` of ``pool`` may block a caller: a ``BlockingConnectionPool``
    (sync or asyncio) waits for a free connection; the default pool never waits (it opens one
    more connection, or raises at ``max_connections``)."""
    return isinstance(pool, (redis.BlockingConnectionPool, redis.asyncio.BlockingConnectionPool))


def bind_pool_metrics(telemetry: Telemetry, system: str, client: str, pool: Any) -> None:
    """Point the client's pool gauges at ``pool``; time its check-out when it can wait."""
    metrics = telemetry.metrics
    if metrics is None:
        return
    bind_pool_count_gauges(telemetry, system, client, pool)
    if not can_make_callers_wait(pool):
        return  # no wait to see, and timing it would cost every command two clock reads
    with _timed_lock:
        if pool in _timed:
            return  # timed already: the pool serves another client too, whose label it keeps
        _timed.add(pool)
    get_connection = pool.get_connection
    wait = metrics["pool_wait_seconds"].labels(system, client)
    if inspect.iscoroutinefunction(get_connection):  # a redis.asyncio pool

        @functools.wraps(get_connection)
        async def timed_aget_connection(*args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            connection = await get_connection(*args, **kwargs)
            wait.observe(time.monotonic() - started)
            return connection

        pool.get_connection = timed_aget_connection
        return

    @functools.wraps(get_connection)
    def timed_get_connection(*args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        connection = get_connection(*args, **kwargs)
        wait.observe(time.monotonic() - started)  # as for SQL: successful check-outs only
        return connection

    pool.get_connection = timed_get_connection
