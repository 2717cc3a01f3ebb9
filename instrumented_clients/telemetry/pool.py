"""Pool gauges read from a pool's own counts at scrape time, for every client with a pool.

``pool_connections{state=idle|in_use}`` and ``pool_max_connections`` are bound with
``Gauge.set_function`` to a reader of the pool's current counts: nothing is counted by hand, so
nothing can drift. The reader should hold its pool weakly, so a gauge never keeps a closed
client's pool alive. prometheus_client's multiprocess mode reads values from files written by
``inc``/``set`` and never calls these functions: under it the pool gauges stay empty, and a
client's ``health()["pool"]`` is the per-process view.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from instrumented_clients.telemetry.core import Telemetry

__all__ = ["PoolCountsReader", "bind_pool_gauges", "unbind_pool_gauges"]

PoolCountsReader = Callable[[], Mapping[str, float]]
"""Returns the pool's ``idle``, ``in_use`` and ``max`` connections now."""


def bind_pool_gauges(
    telemetry: Telemetry, system: str, client: str, read_counts: PoolCountsReader
) -> None:
    """Point the client's pool gauges at ``read_counts`` and start its wait histogram at 0."""
    metrics = telemetry.metrics
    if metrics is None:
        return

    def reader(key: str) -> Callable[[], float]:
        return lambda: float(read_counts().get(key, 0.0))

    connections = metrics["pool_connections"]
    connections.labels(system, client, "idle").set_function(reader("idle"))
    connections.labels(system, client, "in_use").set_function(reader("in_use"))
    metrics["pool_max_connections"].labels(system, client).set_function(reader("max"))
    metrics["pool_wait_seconds"].labels(system, client)


def unbind_pool_gauges(telemetry: Telemetry, system: str, client: str) -> None:
    """Set the gauges to 0 for a closed client (its pool no longer serves it)."""
    metrics = telemetry.metrics
    if metrics is None:
        return
    for state in ("idle", "in_use"):
        metrics["pool_connections"].labels(system, client, state).set_function(lambda: 0.0)
    metrics["pool_max_connections"].labels(system, client).set_function(lambda: 0.0)
