"""The health report and span attributes of a SQL client, sync or asyncio (one shape for both)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import URL, Engine

from instrumented_clients.client import HealthReport
from instrumented_clients.db._pool_metrics import pool_counts
from instrumented_clients.resilience import CircuitBreaker, ConnectionTracker

__all__ = ["database_health", "span_attributes"]


def span_attributes(system: str, url: URL) -> dict[str, Any]:
    """The attributes every span of the client carries (never the user or the password)."""
    base: dict[str, Any] = {"db.system.name": system}
    if url.host:
        base["server.address"] = url.host
    if url.port:
        base["server.port"] = url.port
    if url.database and system != "sqlite":
        base["db.namespace"] = url.database
    return base


def database_health(system: str, name: str, tracker: ConnectionTracker,
                    breaker: CircuitBreaker | None, address: str, engine: Engine,
                    *, closed: bool) -> HealthReport:
    """A JSON-ready snapshot: state, breaker, last error (redacted) and pool counts; ``engine``
    is the sync engine (an ``AsyncEngine``'s ``sync_engine``)."""
    counts = pool_counts(engine if not closed else None)
    dialect: Any = engine.dialect
    version = getattr(dialect, "server_version_info", None)
    return HealthReport.build(
        system, name, tracker, breaker, address=address,
        database=engine.url.database if system != "sqlite" else None,
        driver=dialect.driver,
        server_version=".".join(str(part) for part in version) if version else None,
        pool={"idle": int(counts["idle"]), "in_use": int(counts["in_use"]),
              "overflow": int(counts["overflow"]),
              "max": None if counts["max"] == float("inf") else int(counts["max"])},
    )
