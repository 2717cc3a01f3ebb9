"""AsyncResilientPublisher against the real RabbitMQ: confirms awaited on the loop, the broker down
at start, overflow, re-sends, the spool, cancellation; blockbuster throughout."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from instrumented_clients.rabbitmq import (
    AsyncResilientPublisher,
    BrokerUnavailableError,
    MessageDroppedError,
    OutgoingMessage,
    PublisherClosedError,
    Queue,
    Topology,
    default_reconnect_policy,
)
from instrumented_clients.resilience import ConnectionState
from instrumented_clients.resilience.errors import BufferFullError
from instrumented_clients.testing import CapturedTelemetry, FaultProxy, await_until
from tests.integration.async_helpers import loop_lag, no_blocking
from tests.integration.rabbitmq.async_fixtures import MakeAsyncPublisher, make_async_publisher
from tests.integration.rabbitmq.conftest import AMQP_URL, Admin

pytestmark = [pytest.mark.integration, pytest.mark.asyncio,
              pytest.mark.usefixtures("no_blocking", "loop_lag")]
__all__ = ["loop_lag", "make_async_publisher", "no_blocking"]  # fixtures


async def ready(publisher: AsyncResilientPublisher) -> None:
    await await_until(lambda: publisher.ready, 10,
                      message=lambda: f"publisher not ready: {publisher.health()}")


async def drain(admin: Admin, queue: str, expected: int) -> list[bytes]:
    """The bodies in ``queue``, read by the plain-pika admin off the event loop."""
    return [body for _, body in await asyncio.to_thread(admin.drain, queue, expected)]


async def test_publish_returns_an_awaitable_result_and_counts_as_the_sync_client(
    make_async_publisher: MakeAsyncPublisher, admin: Admin, telemetry: CapturedTelemetry,
) -> None:
    queue = admin.queue("basic")
    publisher = make_async_publisher()
    await ready(publisher)
    assert await publisher.check() is True

    first = await publisher.publish(b"first", queue)
    pending = [publisher.publish(f"{i}".encode(), queue) for i in range(200)]
    assert not all(future.done() for future in pending)  # publish() itself never waits
    results = await asyncio.gather(*pending)
    event = await publisher.publish_event("order.created", {"id": 7}, routing_key=queue)

    assert first.outcome == "ack"
    assert first.ok
    assert {result.outcome for result in results} == {"ack"}
    assert len({result.message_id for result in results}) == 200
    assert event.outcome == "ack"
    bodies = await drain(admin, queue, 202)
    assert bodies[:201] == [b"first", *(f"{i}".encode() for i in range(200))]
    assert b'"type":"order.created"' in bodies[201]
    assert telemetry.value("operation_duration_seconds_count", system="rabbitmq", client="test",
                           operation="publish", outcome="success") == 202
    assert telemetry.value("publish_confirms_total", system="rabbitmq", client="test",
                           outcome="ack") == 202
    health = publisher.health()
    assert health.system == "rabbitmq"
    assert health["connected"] is True
    assert health["in_flight"] == 0
    assert health["pending_events"] == 0
    assert "guest" not in str(health.to_dict())


async def test_broker_down_at_start_buffers_then_drains_in_order(
    make_async_publisher: MakeAsyncPublisher, admin: Admin, proxy: FaultProxy,
    telemetry: CapturedTelemetry,
) -> None:
    queue = admin.queue("down-at-start")
    proxy.refuse()
    started = time.monotonic()
    publisher = make_async_publisher(proxy.url(AMQP_URL))
    await publisher.start()  # not required: returns at once
    assert time.monotonic() - started < 0.5
    futures = [publisher.publish(f"{i}".encode(), queue) for i in range(300)]
    await await_until(lambda: publisher.pending_events == 300, 5)
    assert publisher.state is not ConnectionState.CONNECTED
    assert not any(future.done() for future in futures)

    proxy.pass_through()
    results = await asyncio.wait_for(asyncio.gather(*futures), 15)

    assert {result.outcome for result in results} == {"ack"}
    assert await drain(admin, queue, 300) == [f"{i}".encode() for i in range(300)]
    assert telemetry.value("operation_duration_seconds_count", system="rabbitmq", client="test",
                           operation="publish", outcome="buffered") == 300
    assert telemetry.value("buffered_events_total", system="rabbitmq", client="test") == 300
    assert telemetry.value("buffer_flushed_events_total", system="rabbitmq",
                           client="test") == 300


@pytest.mark.parametrize(("policy", "kept"), [("drop_oldest", range(50, 150)),
                                              ("drop_newest", range(100))])
async def test_overflow_while_down_drops_exactly_the_excess(
    policy: str, kept: range, make_async_publisher: MakeAsyncPublisher, admin: Admin,
    proxy: FaultProxy, telemetry: CapturedTelemetry,
) -> None:
    queue = admin.queue("overflow")
    dropped: list[tuple[OutgoingMessage, str]] = []
    proxy.refuse()
    publisher = make_async_publisher(
        proxy.url(AMQP_URL), max_pending_events=100, overflow=policy,
        on_drop=lambda message, reason: dropped.append((message, reason)))
    futures = [publisher.publish(f"{i}".encode(), queue) for i in range(150)]
    await await_until(lambda: len(dropped) == 50 and publisher.pending_events == 100, 5)

    assert telemetry.value("buffer_dropped_events_total", system="rabbitmq", client="test",
                           reason="overflow") == 50
    assert {reason for _, reason in dropped} == {"overflow"}
    lost = sorted(set(range(150)) - set(kept))
    assert [message.body for message, _ in dropped] == [f"{i}".encode() for i in lost]
    for index in lost:
        with pytest.raises(MessageDroppedError, match="overflow"):
            await futures[index]
    proxy.pass_through()
    results = await asyncio.wait_for(asyncio.gather(*(futures[i] for i in kept)), 15)
    assert {result.outcome for result in results} == {"ack"}
    assert await drain(admin, queue, 100) == [f"{i}".encode() for i in kept]
    assert telemetry.value("buffer_dropped_events_total", system="rabbitmq", client="test",
                           reason="overflow") == 50  # nothing more once connected


async def test_overflow_block_waits_on_the_loop_for_room_then_raises(
    make_async_publisher: MakeAsyncPublisher, admin: Admin, proxy: FaultProxy,
    telemetry: CapturedTelemetry,
) -> None:
    queue = admin.queue("block")
    proxy.refuse()
    publisher = make_async_publisher(proxy.url(AMQP_URL), max_pending_events=10,
                                     overflow="block", block_timeout=0.3)
    accepted = [publisher.publish(f"{i}".encode(), queue) for i in range(10)]
    await await_until(lambda: publisher.pending_events == 10, 5)
    started = time.monotonic()
    with pytest.raises(BufferFullError):
        await publisher.publish(b"no room", queue)
    assert 0.25 <= time.monotonic() - started < 2  # waited block_timeout, on the loop
    assert telemetry.value("operation_duration_seconds_count", system="rabbitmq", client="test",
                           operation="publish", outcome="rejected") == 1

    publisher.block_timeout = 15.0
    waiting = publisher.publish(b"10", queue)  # waits for room: the broker comes back
    await asyncio.sleep(0)
    assert not waiting.done()
    proxy.pass_through()
    results = await asyncio.wait_for(asyncio.gather(*accepted, waiting), 20)
    assert {result.outcome for result in results} == {"ack"}
    assert await drain(admin, queue, 11) == [f"{i}".encode() for i in range(11)]
    assert telemetry.value("buffer_dropped_events_total", system="rabbitmq", client="test",
                           reason="overflow") == 0


async def test_cut_with_unconfirmed_messages_resends_them_first_in_tag_order(
    make_async_publisher: MakeAsyncPublisher, admin: Admin, proxy: FaultProxy,
    telemetry: CapturedTelemetry,
) -> None:
    queue = admin.queue("resend")
    publisher = make_async_publisher(proxy.url(AMQP_URL))
    await ready(publisher)
    first = await asyncio.gather(*(publisher.publish(f"a{i}".encode(), queue)
                                   for i in range(50)))
    assert {result.outcome for result in first} == {"ack"}

    proxy.blackhole()  # sent but never confirmed
    in_flight = [publisher.publish(f"b{i}".encode(), queue) for i in range(50)]
    await await_until(lambda: publisher.in_flight == 50, 5)
    proxy.pass_through()  # leaving blackhole resets the held connection
    await await_until(lambda: publisher.state is not ConnectionState.CONNECTED
                      or publisher.connection.generation > 1, 5)
    later = [publisher.publish(f"c{i}".encode(), queue) for i in range(50)]
    results = await asyncio.wait_for(asyncio.gather(*in_flight, *later), 15)

    assert {result.outcome for result in results} == {"ack"}
    assert all(result.resent for result in results[:50])
    assert telemetry.value("publish_resent_total", system="rabbitmq", client="test") == 50
    bodies = [body.decode() for body in await drain(admin, queue, 150)]
    resent = [body for body in bodies if body.startswith("b")]
    assert resent == [f"b{i}" for i in range(50)]  # delivery-tag order
    assert max(bodies.index(f"b{i}") for i in range(50)) < min(
        bodies.index(f"c{i}") for i in range(50))


async def test_topology_is_declared_again_after_a_reconnect(
    make_async_publisher: MakeAsyncPublisher, admin: Admin, proxy: FaultProxy,
) -> None:
    queue = admin.queue("redeclare", declare=False)
    publisher = make_async_publisher(proxy.url(AMQP_URL),
                                     topology=Topology(queues=[Queue(queue, durable=True)]))
    await ready(publisher)
    await asyncio.to_thread(admin.channel.queue_delete, queue)
    proxy.cut()
    await await_until(lambda: publisher.connection.generation >= 2 and publisher.ready, 10)
    assert (await publisher.publish(b"x", queue)).outcome == "ack"
    assert await asyncio.to_thread(admin.message_count, queue) == 1


async def test_spool_keeps_undelivered_messages_for_the_next_start_without_blocking_the_loop(
    make_async_publisher: MakeAsyncPublisher, admin: Admin, proxy: FaultProxy,
    tmp_path: Path,
) -> None:
    queue = admin.queue("spool")
    spool = str(tmp_path / "outbox.sqlite")
    proxy.refuse()
    first = make_async_publisher(proxy.url(AMQP_URL), spool_path=spool)
    futures = [first.publish(f"{i}".encode(), queue) for i in range(40)]
    await await_until(lambda: first.pending_events == 40, 5)
    await first.close(timeout=0)
    for future in futures:
        with pytest.raises(PublisherClosedError, match="spool"):
            await future

    second = make_async_publisher(AMQP_URL, spool_path=spool, name="second")
    await ready(second)
    await second.close(timeout=10)  # flushes what the spool held
    assert await drain(admin, queue, 40) == [f"{i}".encode() for i in range(40)]


async def test_close_flushes_the_buffer_and_waits_for_the_confirms(
    make_async_publisher: MakeAsyncPublisher, admin: Admin,
) -> None:
    queue = admin.queue("close")
    publisher = make_async_publisher()
    futures = [publisher.publish(f"{i}".encode(), queue) for i in range(500)]
    await publisher.close(timeout=10)
    assert all(future.done() for future in futures)
    assert {future.result().outcome for future in futures} == {"ack"}
    assert await asyncio.to_thread(admin.message_count, queue) == 500
    with pytest.raises(PublisherClosedError):
        publisher.publish(b"late", queue)
    await publisher.close()  # idempotent


async def test_cancelling_publishing_tasks_leaves_nothing_half_done(
    make_async_publisher: MakeAsyncPublisher, admin: Admin, telemetry: CapturedTelemetry,
) -> None:
    queue = admin.queue("cancel")
    publisher = make_async_publisher()
    await ready(publisher)
    accepted: list[str] = []

    async def produce(index: int) -> None:
        future = publisher.publish(f"{index}".encode(), queue)
        accepted.append(f"{index}")
        await future  # cancelled here, or before publish() even ran

    tasks = [asyncio.create_task(produce(i)) for i in range(300)]
    await asyncio.sleep(0)  # some tasks have published, some have not started
    for task in tasks:
        task.cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes)
    assert accepted  # the first tasks did publish before the cancellation

    # What publish() accepted is delivered exactly once; the rest never existed.
    await await_until(lambda: publisher.in_flight == 0 and publisher.pending_events == 0, 10)
    bodies = await drain(admin, queue, len(accepted))
    assert sorted(body.decode() for body in bodies) == sorted(accepted)
    assert telemetry.value("publish_confirms_total", system="rabbitmq", client="test",
                           outcome="ack") == len(accepted)
    assert (await publisher.publish(b"after", queue)).outcome == "ack"  # still in order


async def test_required_start_raises_once_the_policy_is_spent(
    proxy: FaultProxy, telemetry: CapturedTelemetry,
) -> None:
    proxy.refuse()
    started = time.monotonic()
    publisher = AsyncResilientPublisher(
        proxy.url("amqp://guest:hidden-pw@127.0.0.1:1/"), name="req", telemetry=telemetry,
        required=True, reconnect_policy=default_reconnect_policy(3, 0.1, 0.2))
    assert time.monotonic() - started < 0.5  # the constructor never waits
    try:
        with pytest.raises(BrokerUnavailableError, match="after 3 attempt") as info:
            await publisher.start()
        assert "hidden-pw" not in str(info.value)
    finally:
        await publisher.close(timeout=0)
