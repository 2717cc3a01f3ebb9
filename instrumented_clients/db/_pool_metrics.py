"""The SQL pool's counts for the shared pool gauges (:mod:`instrumented_clients.telemetry.pool`),
and removal of a relabelled client's series."""

from __future__ import annotations

import math
import weakref
from typing import Any

from sqlalchemy.engine import Engine

from instrumented_clients.telemetry import Telemetry
from instrumented_clients.telemetry.pool import bind_pool_gauges

__all__ = [
    "PoolCounts", "bind_engine_pool_gauges", "forget_series", "pool_counts", "pool_limit",
]

PoolCounts = dict[str, float]


def pool_counts(engine: Engine | None) -> PoolCounts:
    """``idle``, ``in_use``, ``overflow`` and ``max`` of the engine's current pool.

    Pools without a fixed size (``NullPool``, ``StaticPool``, ``SingletonThreadPool``) report 0
    idle and in use, and ``max`` as +Inf (unbounded) or 1 (static).
    """
    if engine is None:
        return {"idle": 0.0, "in_use": 0.0, "overflow": 0.0, "max": 0.0}
    pool: Any = engine.pool
    counts: PoolCounts = {"idle": 0.0, "in_use": 0.0, "overflow": 0.0, "max": math.inf}
    for key, method in (("idle", "checkedin"), ("in_use", "checkedout"), ("overflow", "overflow")):
        reader = getattr(pool, method, None)
        if reader is not None:
            counts[key] = float(max(0, reader()))
    limit = pool_limit(pool)
    if limit is not None:
        counts["max"] = float(limit)
    elif type(pool).__name__ == "StaticPool":
        counts["max"] = 1.0
    return counts


def pool_limit(pool: Any) -> int | None:
    """How many connections a queue pool hands out at most; None for a pool that never makes a
    caller wait (no fixed size, or an unbounded overflow)."""
    size = getattr(pool, "size", None)
    # QueuePool offers no public accessor for its overflow limit.
    max_overflow = getattr(pool, "_max_overflow", None)
    if size is None or not isinstance(max_overflow, int) or max_overflow < 0:
        return None
    return int(size()) + max_overflow


def bind_engine_pool_gauges(telemetry: Telemetry, system: str, client: str,
                            engine: Engine) -> None:
    """Point the client's pool gauges at the engine's current pool (weakly: ``dispose()``
    replaces the pool, and the gauge keeps no engine alive)."""
    ref = weakref.ref(engine)
    bind_pool_gauges(telemetry, system, client, lambda: pool_counts(ref()))


def forget_series(telemetry: Telemetry, system: str, client: str) -> None:
    """Remove every series labelled (``system``, ``client``) — used when the ``system`` label
    turns out to be wrong (a ``mysql://`` URL that reaches MariaDB) so no stale state lingers."""
    metrics = telemetry.metrics
    if metrics is None:
        return
    for spec, metric in metrics.created():
        seen: set[tuple[str, ...]] = set()
        for family in metric.collect():
            for sample in family.samples:
                labels = sample.labels
                if labels.get("system") != system or labels.get("client") != client:
                    continue
                key = tuple(labels[name] for name in spec.labels)
                if key not in seen:
                    seen.add(key)
                    metric.remove(*key)
