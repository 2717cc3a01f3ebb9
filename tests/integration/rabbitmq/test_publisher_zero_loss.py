"""Zero loss: 20,000 persistent messages through three cuts and a broker restart."""

from __future__ import annotations

from collections.abc import Callable

import pika
import pytest

from instrumented_clients.rabbitmq import default_reconnect_policy
from instrumented_clients.rabbitmq.publisher import ResilientPublisher
from instrumented_clients.resilience import ConnectionState
from instrumented_clients.resilience.events import ReconnectFinished
from instrumented_clients.testing import CapturedTelemetry, FaultProxy, wait_until
from tests.integration.rabbitmq.conftest import (
    AMQP_URL,
    Admin,
    PacedLoad,
    broker_stopped,
    wait_connected,
)

pytestmark = pytest.mark.integration

THREADS = 4
PER_THREAD = 5000
RATE_PER_THREAD = 250.0  # 1,000 msg/s in all
CUT_AT = (3000, 7000, 11000)
RESTART_AT = 15000


def test_every_message_arrives_through_cuts_and_a_broker_restart(
    make_publisher: Callable[..., ResilientPublisher], admin: Admin, proxy: FaultProxy,
    telemetry: CapturedTelemetry,
) -> None:
    queue = admin.queue("zero-loss", quorum=True)
    publisher = make_publisher(proxy.url(AMQP_URL), heartbeat=5, confirm_timeout=60,
                               max_pending_events=THREADS * PER_THREAD,
                               reconnect_policy=default_reconnect_policy(200, 0.1, 1.0))
    wait_connected(publisher)
    load = PacedLoad(publisher, queue, threads=THREADS, per_thread=PER_THREAD,
                     rate=RATE_PER_THREAD)
    load.start()
    try:
        for count in CUT_AT:
            wait_until(lambda count=count: load.published >= count, 30)
            proxy.blackhole()  # messages go out and stay unconfirmed ...
            wait_until(lambda: publisher.in_flight >= 5, 5)
            proxy.cut()  # ... then the connection is reset under them
            proxy.pass_through()
            wait_until(lambda: publisher.connection.state is ConnectionState.CONNECTED
                       and publisher.ready, 15)
        wait_until(lambda: load.published >= RESTART_AT, 30)
        with broker_stopped():
            wait_until(lambda: publisher.connection.state is not ConnectionState.CONNECTED, 15)
    finally:
        load.join(60)
    assert not load.errors

    outcomes: dict[str, int] = {}
    republished = 0
    for message_id, future in list(load.futures.items()):
        try:
            outcome = future.result(60).outcome
        except Exception as exc:
            outcome = type(exc).__name__
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if outcome != "ack":  # a nack is reported, not lost: the caller publishes again
            republished += 1
            publisher.publish_sync(message_id.encode(), queue,
                                   properties=pika.BasicProperties(message_id=message_id))

    admin.reconnect()
    expected = load.expected
    received = admin.drain(queue, len(expected) * 2, until_ids=expected)
    received_ids = [message_id for message_id, _ in received]
    missing = expected - set(received_ids)
    duplicates = len(received_ids) - len(set(received_ids))
    print(f"\nzero loss: {len(received_ids)} received, {duplicates} duplicate(s), "
          f"outcomes {outcomes}, republished {republished}, "
          f"resent {telemetry.value('publish_resent_total', system='rabbitmq', client='test')}")

    assert not missing, f"{len(missing)} message(s) lost, e.g. {sorted(missing)[:5]}"
    reconnects = [e for e in telemetry.events_of(ReconnectFinished) if e.outcome == "success"]
    assert len(reconnects) >= 4
    assert (telemetry.value("buffered_events_total", system="rabbitmq", client="test") or 0) > 0
    assert (telemetry.value("publish_resent_total", system="rabbitmq", client="test") or 0) > 0
    assert telemetry.value("buffer_dropped_events_total", system="rabbitmq", client="test",
                           reason="overflow") == 0
