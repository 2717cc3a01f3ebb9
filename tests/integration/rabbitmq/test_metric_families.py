"""A publisher's registry holds every RabbitMQ family, each series at 0 before any traffic."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from instrumented_clients.rabbitmq.publisher import ResilientPublisher
from instrumented_clients.telemetry.catalog import families_for
from instrumented_clients.testing import CapturedTelemetry
from tests.integration.rabbitmq.conftest import wait_connected

pytestmark = pytest.mark.integration


def test_a_publisher_prepares_every_broker_family_at_zero(
    make_publisher: Callable[..., ResilientPublisher], telemetry: CapturedTelemetry
) -> None:
    publisher = make_publisher()
    wait_connected(publisher)
    registry = telemetry.registry
    assert registry is not None
    exported = {family.name for family in registry.collect()}
    broker_only = [spec for spec in families_for("rabbitmq") if spec.systems]
    assert len(broker_only) == 9
    for spec in broker_only:
        assert spec.full_name().removesuffix("_total") in exported, spec.name

    def value(name: str, **labels: str) -> float | None:
        return telemetry.value(name, system="rabbitmq", client="test", **labels)

    for outcome in ("ack", "nack", "returned", "timeout"):
        assert value("publish_confirms_total", outcome=outcome) == 0
    for reason in ("overflow", "expired", "shutdown"):
        assert value("buffer_dropped_events_total", reason=reason) == 0
    assert value("publish_resent_total") == 0
    assert value("buffered_events_total") == 0
    assert value("buffer_flushed_events_total") == 0
    assert value("connection_blocked") == 0
    assert value("buffer_events") == 0
    # No pool: the broker client exports no pool family.
    assert not {name for name in exported if "_pool_" in name}
