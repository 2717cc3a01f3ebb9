"""The broker down at start, cut, blackholed: buffering, order, drops, reconnects."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from instrumented_clients.rabbitmq import (
    BrokerUnavailableError,
    MessageDroppedError,
    NotConnectedError,
    Queue,
    Topology,
    default_reconnect_policy,
)
from instrumented_clients.rabbitmq.message import OutgoingMessage
from instrumented_clients.rabbitmq.publisher import ResilientPublisher, default_publish_policy
from instrumented_clients.resilience import CircuitBreaker, CircuitOpenError, ConnectionState
from instrumented_clients.resilience.events import ReconnectFinished
from instrumented_clients.testing import CapturedTelemetry, FaultProxy, wait_until
from tests.integration.rabbitmq.conftest import AMQP_URL, Admin, wait_connected

pytestmark = pytest.mark.integration
MakePublisher = Callable[..., ResilientPublisher]


def test_broker_down_at_start_buffers_then_drains_in_order(
    make_publisher: MakePublisher, admin: Admin, proxy: FaultProxy,
    telemetry: CapturedTelemetry,
) -> None:
    queue = admin.queue("down-at-start")
    proxy.refuse()
    started = time.monotonic()
    publisher = make_publisher(proxy.url(AMQP_URL))
    assert time.monotonic() - started < 0.5  # the constructor never waits for the network
    futures = [publisher.publish(f"{i}".encode(), queue) for i in range(300)]
    wait_until(lambda: publisher.pending_events == 300, 5)
    # Between attempts the state is DISCONNECTED, during one CONNECTING: never CONNECTED.
    assert publisher.connection.state is not ConnectionState.CONNECTED
    assert not any(future.done() for future in futures)

    proxy.pass_through()  # the broker "appears"
    results = [future.result(15) for future in futures]

    assert {result.outcome for result in results} == {"ack"}
    assert [body for _, body in admin.drain(queue, 300)] == [f"{i}".encode()
                                                             for i in range(300)]
    assert telemetry.value("operation_duration_seconds_count", system="rabbitmq", client="test",
                           operation="publish", outcome="buffered") == 300
    assert telemetry.value("buffered_events_total", system="rabbitmq", client="test") == 300
    assert telemetry.value("buffer_flushed_events_total", system="rabbitmq",
                           client="test") == 300
    assert publisher.health()["pending_events"] == 0


def test_overflow_while_down_drops_exactly_the_excess(
    make_publisher: MakePublisher, admin: Admin, proxy: FaultProxy,
    telemetry: CapturedTelemetry,
) -> None:
    queue = admin.queue("overflow")
    dropped: list[tuple[OutgoingMessage, str]] = []
    proxy.refuse()
    publisher = make_publisher(proxy.url(AMQP_URL), max_pending_events=100,
                               on_drop=lambda message, reason: dropped.append((message, reason)))
    futures = [publisher.publish(f"{i}".encode(), queue) for i in range(150)]
    wait_until(lambda: len(dropped) == 50 and publisher.pending_events == 100, 5)

    assert telemetry.value("buffer_dropped_events_total", system="rabbitmq", client="test",
                           reason="overflow") == 50
    assert {reason for _, reason in dropped} == {"overflow"}
    assert [message.body for message, _ in dropped] == [f"{i}".encode() for i in range(50)]
    for future in futures[:50]:  # drop_oldest: the first 50 are gone, and say so
        with pytest.raises(MessageDroppedError, match="overflow"):
            future.result(1)
    proxy.pass_through()
    assert {future.result(15).outcome for future in futures[50:]} == {"ack"}
    assert [body for _, body in admin.drain(queue, 100)] == [f"{i}".encode()
                                                             for i in range(50, 150)]


def test_close_while_down_reports_undelivered_as_shutdown_drops(
    make_publisher: MakePublisher, proxy: FaultProxy, telemetry: CapturedTelemetry
) -> None:
    dropped: list[str] = []
    proxy.refuse()
    publisher = make_publisher(proxy.url(AMQP_URL),
                               on_drop=lambda message, reason: dropped.append(reason))
    futures = [publisher.publish(b"x", "nowhere") for _ in range(20)]
    wait_until(lambda: publisher.pending_events == 20, 5)
    publisher.close(timeout=0.2)

    assert dropped == ["shutdown"] * 20
    assert telemetry.value("buffer_dropped_events_total", system="rabbitmq", client="test",
                           reason="shutdown") == 20
    for future in futures:
        with pytest.raises(MessageDroppedError, match="shutdown"):
            future.result(1)


def test_required_fails_startup_once_the_policy_is_spent(
    proxy: FaultProxy, telemetry: CapturedTelemetry
) -> None:
    proxy.refuse()
    started = time.monotonic()
    with pytest.raises(BrokerUnavailableError, match="after 3 attempt") as info:
        ResilientPublisher(proxy.url("amqp://guest:hidden-pw@127.0.0.1:1/"), name="req",
                           telemetry=telemetry, required=True,
                           reconnect_policy=default_reconnect_policy(3, 0.1, 0.2))
    assert time.monotonic() - started < 5
    assert "hidden-pw" not in str(info.value)


def test_required_starts_when_the_broker_is_up(make_publisher: MakePublisher) -> None:
    publisher = make_publisher(required=True)
    assert publisher.ready or publisher.connection.connected


def test_failed_holds_until_a_background_attempt_succeeds(
    make_publisher: MakePublisher, admin: Admin, proxy: FaultProxy,
    telemetry: CapturedTelemetry,
) -> None:
    queue = admin.queue("failed-then-ok")
    proxy.refuse()
    publisher = make_publisher(proxy.url(AMQP_URL),
                               reconnect_policy=default_reconnect_policy(2, 0.05, 0.3))
    wait_until(lambda: publisher.connection.state is ConnectionState.FAILED, 5)
    # Background attempts go on at the cap without leaving FAILED.
    attempts = publisher.connection.reconnect_attempts
    wait_until(lambda: publisher.connection.reconnect_attempts >= attempts + 2, 5)
    assert publisher.connection.state is ConnectionState.FAILED
    future = publisher.publish(b"held", queue)

    proxy.pass_through()
    assert future.result(10).outcome == "ack"
    assert publisher.connection.state is ConnectionState.CONNECTED
    transitions = [s.value for _, s in publisher.connection.machine.history]
    assert transitions[-2:] == ["failed", "connected"]
    assert telemetry.value("connection_state", system="rabbitmq", client="test",
                           state="connected") == 1


def test_cut_with_unconfirmed_messages_resends_them_first(
    make_publisher: MakePublisher, admin: Admin, proxy: FaultProxy,
    telemetry: CapturedTelemetry,
) -> None:
    queue = admin.queue("resend")
    publisher = make_publisher(proxy.url(AMQP_URL))
    wait_connected(publisher)
    first = [publisher.publish(f"a{i}".encode(), queue) for i in range(50)]
    assert {future.result(10).outcome for future in first} == {"ack"}

    proxy.blackhole()  # sent but never confirmed
    in_flight = [publisher.publish(f"b{i}".encode(), queue) for i in range(50)]
    wait_until(lambda: publisher.in_flight == 50, 5)
    proxy.pass_through()  # leaving blackhole resets the held connection
    wait_until(lambda: publisher.connection.state is not ConnectionState.CONNECTED
               or publisher.connection.generation > 1, 5)
    later = [publisher.publish(f"c{i}".encode(), queue) for i in range(50)]
    results = [future.result(15) for future in in_flight + later]

    assert {result.outcome for result in results} == {"ack"}
    assert all(result.resent for result in results[:50])
    assert telemetry.value("publish_resent_total", system="rabbitmq", client="test") == 50
    bodies = [body.decode() for _, body in admin.drain(queue, 150)]
    assert sorted(bodies) == sorted([f"a{i}" for i in range(50)] + [f"b{i}" for i in range(50)]
                                    + [f"c{i}" for i in range(50)])
    # Re-sent messages go out before the live publishes queued behind them.
    assert max(bodies.index(f"b{i}") for i in range(50)) < min(
        bodies.index(f"c{i}") for i in range(50))
    finished = telemetry.events_of(ReconnectFinished)
    assert [event.outcome for event in finished] == ["success"]
    assert telemetry.value("reconnect_duration_seconds_count", system="rabbitmq",
                           client="test") == 1
    # The outage is one span of its own, from losing the connection to connected again.
    outage = [span for span in telemetry.spans() if span.name == "rabbitmq reconnect"
              and dict(span.attributes or {}).get("resilient_client.outcome") == "connected"]
    assert len(outage) >= 1
    assert any(event.name == "reconnect.attempt" for event in outage[-1].events)


def test_topology_is_declared_again_after_a_reconnect(
    make_publisher: MakePublisher, admin: Admin, proxy: FaultProxy
) -> None:
    queue = admin.queue("redeclare", declare=False)
    publisher = make_publisher(proxy.url(AMQP_URL),
                               topology=Topology(queues=[Queue(queue, durable=True)]))
    wait_connected(publisher)
    admin.channel.queue_delete(queue)  # e.g. a broker that lost its definitions
    proxy.cut()
    wait_until(lambda: publisher.connection.generation >= 2 and publisher.ready, 10)
    assert publisher.publish(b"x", queue).result(10).outcome == "ack"
    assert admin.message_count(queue) == 1


def test_publish_sync_retries_then_raises_while_down(
    make_publisher: MakePublisher, proxy: FaultProxy, telemetry: CapturedTelemetry
) -> None:
    proxy.refuse()
    publisher = make_publisher(proxy.url(AMQP_URL))
    started = time.monotonic()
    with pytest.raises(NotConnectedError):
        publisher.publish_sync(b"x", "q")
    elapsed = time.monotonic() - started
    assert 1.2 <= elapsed < 4  # 3 attempts: waits of ~0.5 s and ~1 s between them
    assert telemetry.value("retries_total", system="rabbitmq", client="test",
                           operation="publish", error_type="connection") == 2
    assert telemetry.value("operation_duration_seconds_count", system="rabbitmq", client="test",
                           operation="publish", outcome="failure_after_retry") == 1


def test_publish_sync_survives_a_short_cut(
    make_publisher: MakePublisher, admin: Admin, proxy: FaultProxy
) -> None:
    queue = admin.queue("sync-cut")
    # The default blocking policy waits 0.5 s + 1 s in all; a reconnect on a loaded 2-core
    # machine can take longer, so the test gives the blocking form more attempts of the same shape.
    policy = default_publish_policy().replace(max_attempts=8, max_delay=1.0)
    publisher = make_publisher(proxy.url(AMQP_URL), publish_policy=policy)
    wait_connected(publisher)
    proxy.cut()
    result = publisher.publish_sync(b"x", queue)
    assert result.outcome == "ack"
    assert admin.message_count(queue) >= 1


def test_open_breaker_buffers_publishes_and_rejects_blocking_ones(
    make_publisher: MakePublisher, admin: Admin, proxy: FaultProxy,
    telemetry: CapturedTelemetry,
) -> None:
    queue = admin.queue("breaker")
    breaker = CircuitBreaker(2, 1.0, failure_on=lambda exc: True, name="test",
                             system="rabbitmq", instrumentation=telemetry)
    publisher = make_publisher(proxy.url(AMQP_URL), breaker=breaker)
    wait_connected(publisher)
    breaker.on_failure(RuntimeError("one"))
    breaker.on_failure(RuntimeError("two"))
    assert publisher.health()["circuit_breaker_open"] is True

    with pytest.raises(CircuitOpenError):
        publisher.publish_sync(b"x", queue)
    futures = [publisher.publish(f"{i}".encode(), queue) for i in range(10)]
    wait_until(lambda: publisher.pending_events == 10, 5)
    assert not any(future.done() for future in futures)
    # After the cool-down one probe goes out; its ack closes the breaker and the rest follow.
    assert {future.result(10).outcome for future in futures} == {"ack"}
    assert publisher.health()["circuit_breaker"] == "closed"
    assert [body for _, body in admin.drain(queue, 10)] == [f"{i}".encode() for i in range(10)]
    assert telemetry.value("circuit_breaker_rejections_total", system="rabbitmq",
                           client="test") == 1


def test_dead_peer_is_detected_by_heartbeats_and_reconnected(
    make_publisher: MakePublisher, admin: Admin, proxy: FaultProxy
) -> None:
    queue = admin.queue("dead-peer")
    publisher = make_publisher(proxy.url(AMQP_URL), heartbeat=2, stack_timeout=5,
                               reconnect_policy=default_reconnect_policy(30, 0.5, 2.0))
    wait_connected(publisher)
    proxy.blackhole()
    blackholed_at = time.monotonic()
    wait_until(lambda: publisher.connection.state is not ConnectionState.CONNECTED, 15)
    assert time.monotonic() - blackholed_at < 15
    future = publisher.publish(b"during", queue)
    # Hold the blackhole for 20 s in all; attempts in it time out on stack_timeout.
    wait_until(lambda: time.monotonic() - blackholed_at >= 20, 25, interval=0.2)
    assert publisher.connection.state is not ConnectionState.CONNECTED
    proxy.pass_through()
    ended_at = time.monotonic()
    wait_until(lambda: publisher.connection.state is ConnectionState.CONNECTED, 10)
    assert time.monotonic() - ended_at < 10
    assert future.result(10).outcome == "ack"
