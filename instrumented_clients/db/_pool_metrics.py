"""Pool gauges read from the pool's own counts, and removal of a relabelled client's series.

The gauges are bound with ``Gauge.set_function``: each scrape asks the engine's *current* pool
(``engine.dispose()`` replaces it) how many connections are checked in and out, so nothing is
counted by hand and nothing can drift. prometheus_client's multiprocess mode reads values from
files written by ``inc``/``set`` and never calls these functions: under it the pool gauges stay
empty, and per-process pool health is best read from :meth:`ResilientDatabase.health`.
"""

from __future__ import annotations

import math
import weakref
from typing import Any

from sqlalchemy.engine import Engine

from instrumented_clients.telemetry import Telemetry
from instrumented_clients.telemetry.catalog import METRICS

__all__ = ["PoolCounts", "bind_pool_gauges", "forget_series", "pool_counts", "unbind_pool_gauges"]

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
    size = getattr(pool, "size", None)
    max_overflow = getattr(pool, "_max_overflow", None)
    if size is not None and isinstance(max_overflow, int):
        counts["max"] = math.inf if max_overflow < 0 else float(size() + max_overflow)
    elif type(pool).__name__ == "StaticPool":
        counts["max"] = 1.0
    return counts


def bind_pool_gauges(telemetry: Telemetry, system: str, client: str, engine: Engine) -> None:
    """Point the client's pool gauges at the engine's pool (weakly: the gauge keeps no engine)."""
    metrics = telemetry.metrics
    if metrics is None:
        return
    ref = weakref.ref(engine)

    def reader(key: str) -> Any:
        return lambda: pool_counts(ref()).get(key, 0.0)

    connections = metrics["pool_connections"]
    connections.labels(system, client, "idle").set_function(reader("idle"))
    connections.labels(system, client, "in_use").set_function(reader("in_use"))
    metrics["pool_max_connections"].labels(system, client).set_function(reader("max"))
    metrics["pool_wait_seconds"].labels(system, client)


def unbind_pool_gauges(telemetry: Telemetry, system: str, client: str) -> None:
    """Set the gauges to 0 for a closed client (its pool no longer exists)."""
    metrics = telemetry.metrics
    if metrics is None:
        return
    for state in ("idle", "in_use"):
        metrics["pool_connections"].labels(system, client, state).set_function(lambda: 0.0)
    metrics["pool_max_connections"].labels(system, client).set_function(lambda: 0.0)


def forget_series(telemetry: Telemetry, system: str, client: str) -> None:
    """Remove every series labelled (``system``, ``client``) — used when the ``system`` label
    turns out to be wrong (a ``mysql://`` URL that reaches MariaDB) so no stale state lingers."""
    metrics = telemetry.metrics
    if metrics is None:
        return
    for spec in METRICS:
        metric = metrics[spec.name]
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
