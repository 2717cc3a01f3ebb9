"""The pool metrics of a :class:`~instrumented_clients.redis.ResilientRedis`.

``pool_connections{state=idle|in_use}`` and ``pool_max_connections`` are bound with
``Gauge.set_function``: each scrape reads the pool's own lists (nothing counted by hand, nothing
to drift), through a weak reference so the gauge never keeps a closed client's pool alive.
``pool_wait_seconds`` times ``get_connection()`` of a pool the client made itself (with a
``BlockingConnectionPool`` that includes waiting for a free connection; with the default pool,
opening a new one). A pool passed in by the caller is never patched: its gauges are bound, its
check-out is not timed.

The gauges themselves are the shared ones of :mod:`instrumented_clients.telemetry.pool`.
"""

from __future__ import annotations

import functools
import inspect
import time
import weakref
from typing import Any

from instrumented_clients.telemetry import Telemetry
from instrumented_clients.telemetry.pool import bind_pool_gauges, unbind_pool_gauges

__all__ = ["bind_pool_count_gauges", "bind_pool_metrics", "pool_counts", "unbind_pool_gauges"]


def pool_counts(pool: Any) -> dict[str, float]:
    """``idle``, ``in_use`` and ``max`` connections of a redis-py pool (0 for a gone pool)."""
    if pool is None:
        return {"idle": 0.0, "in_use": 0.0, "max": 0.0}
    members = getattr(pool, "member_pools", None)
    if callable(members):  # a cluster's pools, one per node: their sum
        total = {"idle": 0.0, "in_use": 0.0, "max": 0.0}
        for member in members():
            for key, value in pool_counts(member).items():
                total[key] += value
        return total
    queue = getattr(getattr(pool, "pool", None), "queue", None)
    if queue is not None:  # BlockingConnectionPool: a queue of connections and None slots
        idle = sum(1 for connection in list(queue) if connection is not None)
        in_use = max(0, len(getattr(pool, "_connections", ())) - idle)
    else:
        idle = len(getattr(pool, "_available_connections", ()))
        in_use = len(getattr(pool, "_in_use_connections", ()))
    return {"idle": float(idle), "in_use": float(in_use),
            "max": float(getattr(pool, "max_connections", 0) or 0)}


def bind_pool_count_gauges(telemetry: Telemetry, system: str, client: str, pool: Any) -> None:
    """Point the client's pool gauges at ``pool`` (again, for a client used after close())."""
    ref = weakref.ref(pool)
    bind_pool_gauges(telemetry, system, client, lambda: pool_counts(ref()))


def bind_pool_metrics(telemetry: Telemetry, system: str, client: str, pool: Any,
                      *, owned: bool) -> None:
    """Point the client's pool gauges at ``pool``; time its check-out when ``owned``."""
    metrics = telemetry.metrics
    if metrics is None:
        return
    bind_pool_count_gauges(telemetry, system, client, pool)
    if not owned:
        return
    wait = metrics["pool_wait_seconds"].labels(system, client)
    get_connection = pool.get_connection
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
