"""A client creates the metric families of its own system, never another system's."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from instrumented_clients.db import ResilientDatabase
from instrumented_clients.redis import ResilientRedis
from instrumented_clients.telemetry import Telemetry
from instrumented_clients.telemetry.catalog import (
    DEFAULT_NAMESPACE,
    METRICS,
    SYSTEMS,
    families_for,
    metric,
)

BROKER_ONLY = {"connection_blocked", "buffer_events", "buffer_capacity_events",
               "buffered_events_total", "buffer_flushed_events_total",
               "buffer_dropped_events_total", "publish_confirms_total", "publish_resent_total",
               "consumed_messages_total"}
POOL = {"pool_connections", "pool_max_connections", "pool_wait_seconds"}


def family_names(registry: CollectorRegistry) -> set[str]:
    """Catalog names (without namespace) of the families the registry exports."""
    exported = {family.name for family in registry.collect()}
    names = set()
    for spec in METRICS:
        full = spec.full_name(DEFAULT_NAMESPACE)
        # prometheus_client reports a counter's family without its _total suffix.
        if full in exported or full.removesuffix("_total") in exported:
            names.add(spec.name)
    return names


def foreign_families(system: str) -> set[str]:
    return {spec.name for spec in METRICS} - {spec.name for spec in families_for(system)}


def quiet_telemetry(registry: CollectorRegistry) -> Telemetry:
    return Telemetry(registry=registry, tracing=False, logs=False)


def test_the_catalog_assigns_broker_and_pool_families_to_their_systems() -> None:
    for name in BROKER_ONLY:
        assert metric(name).systems == ("rabbitmq",)
    for name in POOL:
        assert "rabbitmq" not in metric(name).systems
        assert {"redis", "postgresql", "mysql", "mariadb", "sqlite"} <= set(metric(name).systems)
    generic = {spec.name for spec in METRICS} - BROKER_ONLY - POOL
    for system in SYSTEMS:
        assert generic <= {spec.name for spec in families_for(system)}


def assert_only_families_of(registry: CollectorRegistry, system: str) -> None:
    exported = family_names(registry)
    assert exported & foreign_families(system) == set()
    assert exported & BROKER_ONLY == set()
    assert exported >= POOL | {"operation_duration_seconds", "connection_state"}
    for family in registry.collect():
        for sample in family.samples:
            assert sample.labels.get("system", system) == system, sample


def test_a_registry_holding_only_a_redis_client_exports_no_family_of_another_system() -> None:
    registry = CollectorRegistry()
    client = ResilientRedis("redis://127.0.0.1:1/0", name="cache",
                            telemetry=quiet_telemetry(registry))
    try:
        assert_only_families_of(registry, "redis")
    finally:
        client.close()


def test_a_registry_holding_only_a_sqlite_database_exports_no_family_of_another_system(
    tmp_path: Path,
) -> None:
    registry = CollectorRegistry()
    database = ResilientDatabase(f"sqlite:///{tmp_path / 'families.db'}", name="store",
                                 telemetry=quiet_telemetry(registry))
    try:
        database.execute("SELECT 1")
        assert_only_families_of(registry, "sqlite")
    finally:
        database.close()


def test_a_family_of_another_system_is_never_prepared() -> None:
    registry = CollectorRegistry()
    telemetry = quiet_telemetry(registry)
    telemetry.prepare("redis", "cache", ["get"], families=["publish_resent_total",
                                                            "operation_duration_seconds"])
    assert "publish_resent_total" not in family_names(registry)
    telemetry.prepare("rabbitmq", "events", ["publish"])
    assert family_names(registry) >= BROKER_ONLY
    assert registry.get_sample_value(
        "resilient_client_publish_resent_total", {"system": "rabbitmq", "client": "events"}) == 0
