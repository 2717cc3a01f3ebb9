"""AsyncResilientConsumer against the real RabbitMQ: coroutine handlers under a concurrency limit,
poison messages, stale tags, broker cancellation, graceful close, cancellation; blockbuster
throughout."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from instrumented_clients.rabbitmq import (
    AsyncResilientConsumer,
    BrokerUnavailableError,
    IncomingMessage,
    Queue,
    default_reconnect_policy,
)
from instrumented_clients.testing import CapturedTelemetry, FaultProxy, await_until
from tests.integration.async_helpers import loop_lag, no_blocking
from tests.integration.rabbitmq.async_fixtures import (
    AsyncHandler,
    MakeAsyncConsumer,
    make_async_consumer,
)
from tests.integration.rabbitmq.test_consumer import AMQP_URL, dead_letter_topology, ids
from tests.integration.rabbitmq.test_consumer import Admin as Feeder

pytestmark = [pytest.mark.integration, pytest.mark.asyncio,
              pytest.mark.usefixtures("no_blocking", "loop_lag")]
__all__ = ["loop_lag", "make_async_consumer", "no_blocking"]  # fixtures


class AsyncFeeder:
    """The consumer tests' plain-pika admin, called off the event loop."""

    def __init__(self) -> None:
        self.sync = Feeder()
        self.queues = self.sync.queues
        self.exchanges = self.sync.exchanges

    def name(self, prefix: str) -> str:
        return self.sync.name(prefix)

    async def publish(self, queue: str, message_ids: list[str]) -> None:
        await asyncio.to_thread(self.sync.publish, queue, message_ids)

    async def declare(self, queue: str) -> None:
        await asyncio.to_thread(self.sync.channel.queue_declare, queue, durable=True)

    async def delete(self, queue: str) -> None:
        await asyncio.to_thread(self.sync.channel.queue_delete, queue)

    async def message_count(self, queue: str) -> int:
        return await asyncio.to_thread(self.sync.message_count, queue)

    async def drain(self, queue: str) -> list[str]:
        return await asyncio.to_thread(self.sync.drain, queue)


@pytest_asyncio.fixture
async def feeder() -> AsyncIterator[AsyncFeeder]:
    helper = await asyncio.to_thread(AsyncFeeder)
    yield helper
    await asyncio.to_thread(helper.sync.close)


def consumed(telemetry: CapturedTelemetry, consumer: AsyncResilientConsumer,
             outcome: str) -> float:
    return telemetry.value("consumed_messages_total", system="rabbitmq", client=consumer.name,
                           outcome=outcome) or 0.0


def reconnects(telemetry: CapturedTelemetry, consumer: AsyncResilientConsumer) -> float:
    return telemetry.value("reconnect_attempts_total", system="rabbitmq", client=consumer.name,
                           outcome="success") or 0.0


def queue_named(feeder: AsyncFeeder, prefix: str) -> str:
    name = feeder.name(prefix)
    feeder.queues.append(name)
    return name


async def test_coroutine_handlers_run_on_the_loop_up_to_the_limit_and_are_acked(
    feeder: AsyncFeeder, make_async_consumer: MakeAsyncConsumer, telemetry: CapturedTelemetry,
) -> None:
    queue = queue_named(feeder, "basic")
    handler = AsyncHandler(delay=0.01)
    consumer = await make_async_consumer(queue=Queue(queue, durable=False), handler=handler,
                                         prefetch=20, concurrency=5)
    await await_until(lambda: consumer.consuming, 10)
    expected = ids("m", 200)
    await feeder.publish(queue, expected)

    await await_until(lambda: handler.done_set() == set(expected), 20)
    await await_until(lambda: consumed(telemetry, consumer, "ack") == 200, 10)
    assert 1 < handler.most_running <= 5  # concurrent, but never above the limit
    assert await feeder.message_count(queue) == 0
    assert telemetry.value("operation_duration_seconds_count", system="rabbitmq",
                           client=consumer.name,
                           operation="process", outcome="success") == 200
    spans = [s for s in telemetry.spans() if s.name == f"process {queue}"]
    assert len(spans) == 200
    health = consumer.health()
    assert health["queue"] == queue
    assert health["consuming"] is True
    assert health["prefetch"] == 20
    assert health["in_flight"] == 0
    assert health["state"] == "connected"
    assert await consumer.check() is True
    assert "guest" not in str(health.to_dict())


async def test_concurrency_defaults_to_the_prefetch(
    feeder: AsyncFeeder, make_async_consumer: MakeAsyncConsumer,
) -> None:
    queue = queue_named(feeder, "limit")
    handler = AsyncHandler()
    gate = asyncio.Event()
    for message_id in ids("g", 12):
        handler.gates[message_id] = gate
    consumer = await make_async_consumer(queue=Queue(queue, durable=False), handler=handler,
                                         prefetch=8)
    assert consumer.concurrency == 8
    await await_until(lambda: consumer.consuming, 10)
    await feeder.publish(queue, ids("g", 12))
    await await_until(lambda: handler.running == 8, 10)
    assert consumer.in_flight == 8  # the prefetch holds the rest at the broker
    gate.set()
    await await_until(lambda: len(handler.done) == 12, 10)


async def test_poison_message_dead_lettered_by_quorum_delivery_limit(
    feeder: AsyncFeeder, make_async_consumer: MakeAsyncConsumer, telemetry: CapturedTelemetry,
) -> None:
    dlx, dlq = feeder.name("dlx"), feeder.name("dlq")
    queue = Queue.quorum(feeder.name("quorum"), dead_letter_exchange=dlx, delivery_limit=2)
    handler = AsyncHandler(poison=frozenset({"poison"}))
    consumer = await make_async_consumer(
        queue=queue, handler=handler, prefetch=10,
        topology=dead_letter_topology(feeder.sync, queue, dlx, dlq))
    await await_until(lambda: consumer.consuming, 10)
    good = ids("good", 30)
    await feeder.publish(queue.name, [*good[:15], "poison", *good[15:]])

    await await_until(lambda: _count_is(feeder, dlq, 1), 20)
    await await_until(lambda: handler.done_set() == set(good), 10)
    assert await feeder.drain(dlq) == ["poison"]
    assert handler.calls["poison"] == 3  # delivered once, requeued twice, then dead-lettered
    await await_until(lambda: consumed(telemetry, consumer, "ack") == 30, 10)
    assert consumed(telemetry, consumer, "requeue") == 3
    assert consumed(telemetry, consumer, "reject") == 0
    assert await feeder.message_count(queue.name) == 0


async def test_poison_message_rejected_to_dead_letter_exchange_on_classic_queue(
    feeder: AsyncFeeder, make_async_consumer: MakeAsyncConsumer, telemetry: CapturedTelemetry,
) -> None:
    dlx, dlq = feeder.name("dlx"), feeder.name("dlq")
    queue = Queue(feeder.name("classic"), durable=False,
                  arguments={"x-dead-letter-exchange": dlx})
    handler = AsyncHandler(poison=frozenset({"poison"}))
    consumer = await make_async_consumer(
        queue=queue, handler=handler, prefetch=10, max_deliveries=3,
        topology=dead_letter_topology(feeder.sync, queue, dlx, dlq))
    await await_until(lambda: consumer.consuming, 10)
    good = ids("good", 30)
    await feeder.publish(queue.name, [*good[:15], "poison", *good[15:]])

    await await_until(lambda: _count_is(feeder, dlq, 1), 20)
    await await_until(lambda: handler.done_set() == set(good), 10)
    assert await feeder.drain(dlq) == ["poison"]
    assert handler.calls["poison"] == 3
    await await_until(lambda: consumed(telemetry, consumer, "ack") == 30, 10)
    assert consumed(telemetry, consumer, "requeue") == 2
    assert consumed(telemetry, consumer, "reject") == 1


async def test_close_during_processing_acks_what_finished_and_redelivers_none_of_it(
    feeder: AsyncFeeder, make_async_consumer: MakeAsyncConsumer, telemetry: CapturedTelemetry,
) -> None:
    queue = queue_named(feeder, "stop")
    handler = AsyncHandler(delay=0.2)
    consumer = await make_async_consumer(queue=Queue(queue, durable=False), handler=handler,
                                         prefetch=10, concurrency=4)
    await await_until(lambda: consumer.consuming, 10)
    expected = ids("s", 60)
    await feeder.publish(queue, expected)
    await await_until(lambda: len(handler.done) >= 8, 20)

    await consumer.close(timeout=10)
    finished = handler.done_set()
    assert len(finished) == len(handler.done)  # no message handled twice
    assert not handler.cancelled  # every running handler was allowed to finish
    assert consumer.in_flight == 0
    assert consumed(telemetry, consumer, "ack") == len(finished)

    await await_until(lambda: _count_is(feeder, queue, len(expected) - len(finished)), 10)
    redelivered = await feeder.drain(queue)
    assert not set(redelivered) & finished
    assert sorted([*redelivered, *finished]) == sorted(expected)


async def _count_is(feeder: AsyncFeeder, queue: str, count: int) -> bool:
    return await feeder.message_count(queue) == count


async def test_close_cancels_a_handler_that_misses_the_deadline_and_leaves_it_unacked(
    feeder: AsyncFeeder, make_async_consumer: MakeAsyncConsumer, telemetry: CapturedTelemetry,
) -> None:
    queue = queue_named(feeder, "deadline")
    handler = AsyncHandler()
    handler.gates["stuck"] = asyncio.Event()
    consumer = await make_async_consumer(queue=Queue(queue, durable=False), handler=handler)
    await await_until(lambda: consumer.consuming, 10)
    await feeder.publish(queue, ["stuck", "quick"])
    await await_until(lambda: "stuck" in handler.entered and "quick" in handler.done_set(), 10)

    started = time.monotonic()
    await consumer.close(timeout=0.5)
    assert time.monotonic() - started < 5
    assert handler.cancelled == ["stuck"]  # cancelled at the deadline, never half-settled
    assert consumed(telemetry, consumer, "ack") == 1
    assert consumed(telemetry, consumer, "requeue") == 0
    await await_until(lambda: _count_is(feeder, queue, 1), 10)
    assert await feeder.drain(queue) == ["stuck"]


async def test_cancelling_the_task_that_runs_the_consumer_closes_it_gracefully(
    feeder: AsyncFeeder, telemetry: CapturedTelemetry,
) -> None:
    queue = queue_named(feeder, "run")
    handler = AsyncHandler(delay=0.05)
    consumer = AsyncResilientConsumer(AMQP_URL, queue=Queue(queue, durable=False),
                                      handler=handler, telemetry=telemetry, name="runner",
                                      prefetch=5)
    runner = asyncio.create_task(consumer.run())  # consumes until cancelled
    await await_until(lambda: consumer.consuming, 10)
    await feeder.publish(queue, ids("r", 40))
    await await_until(lambda: len(handler.done) >= 5, 10)

    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    finished = handler.done_set()
    assert not handler.cancelled  # running handlers finished (within the close timeout)
    assert consumed(telemetry, consumer, "ack") == len(finished)
    await await_until(lambda: _count_is(feeder, queue, 40 - len(finished)), 10)
    assert not set(await feeder.drain(queue)) & finished


async def test_connection_cut_mid_consumption_never_acks_stale_tags(
    feeder: AsyncFeeder, make_async_consumer: MakeAsyncConsumer, telemetry: CapturedTelemetry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    queue = queue_named(feeder, "cut")
    expected = ids("c", 300)
    gated = [expected[60], expected[180]]
    handler = AsyncHandler(delay=0.002)
    for message_id in gated:
        handler.gates[message_id] = asyncio.Event()
    await feeder.declare(queue)
    await feeder.publish(queue, expected)
    with FaultProxy("127.0.0.1", 5672) as proxy:
        consumer = await make_async_consumer(url=proxy.url(AMQP_URL), queue=Queue(queue),
                                             handler=handler, prefetch=50)
        for cut, message_id in enumerate(gated, start=1):
            # The gated handler runs while its channel dies: its ack belongs to a dead channel.
            await await_until(lambda m=message_id: m in handler.entered, 20)
            assert proxy.cut() >= 1
            await await_until(lambda n=cut: reconnects(telemetry, consumer) >= n, 20)
            await await_until(lambda: consumer.consuming, 10)
            handler.gates[message_id].set()
        await await_until(lambda: handler.done_set() == set(expected), 40)
        # A gated message's first run counts as done, but its ack was for a dead channel: the
        # broker redelivers it, so it runs again (never acked on the old channel's tag).
        await await_until(lambda: all(handler.calls[m] >= 2 for m in gated), 20)
        await await_until(lambda: consumer.in_flight == 0, 20)
        await await_until(lambda: _count_is(feeder, queue, 0), 20)

    assert consumer.stale_settlements >= 2
    assert consumer.channel_closed_by_broker == 0  # no 406 PRECONDITION_FAILED
    assert "PRECONDITION_FAILED" not in caplog.text


async def test_broker_cancel_of_a_deleted_queue_is_handled_and_consumption_resumes(
    feeder: AsyncFeeder, make_async_consumer: MakeAsyncConsumer, telemetry: CapturedTelemetry,
) -> None:
    queue = queue_named(feeder, "deleted")
    handler = AsyncHandler()
    consumer = await make_async_consumer(queue=Queue(queue, durable=False), handler=handler)
    await await_until(lambda: consumer.consuming, 10)
    first, second = ids("a", 20), ids("b", 20)
    await feeder.publish(queue, first)
    await await_until(lambda: handler.done_set() == set(first), 10)

    await feeder.delete(queue)  # the broker sends basic.cancel
    await await_until(lambda: consumer.cancellations == 1, 10)
    await await_until(lambda: consumer.consuming, 10)
    await feeder.publish(queue, second)

    await await_until(lambda: handler.done_set() == {*first, *second}, 10)
    assert reconnects(telemetry, consumer) == 0  # the connection stayed up
    assert consumer.health()["cancellations"] == 1


async def test_a_handler_awaiting_three_heartbeats_keeps_the_connection(
    feeder: AsyncFeeder, make_async_consumer: MakeAsyncConsumer, telemetry: CapturedTelemetry,
) -> None:
    queue = queue_named(feeder, "slow")
    handler = AsyncHandler()
    slow_done = asyncio.Event()

    async def slow_handler(message: IncomingMessage) -> None:
        if message.message_id == "slow":
            await asyncio.sleep(3.0)  # 3 x the heartbeat
            slow_done.set()
        await handler(message)

    consumer = await make_async_consumer(queue=Queue(queue, durable=False),
                                         handler=slow_handler, heartbeat=1)
    await await_until(lambda: consumer.consuming, 10)
    await feeder.publish(queue, ["slow", *ids("q", 5)])
    await await_until(lambda: len(handler.done) >= 5, 10)  # the others ran meanwhile
    await asyncio.wait_for(slow_done.wait(), 15)
    await await_until(lambda: consumed(telemetry, consumer, "ack") == 6, 10)
    assert reconnects(telemetry, consumer) == 0
    assert consumer.health()["connected"] is True


async def test_starts_while_the_broker_is_down_and_consumes_once_it_appears(
    feeder: AsyncFeeder, make_async_consumer: MakeAsyncConsumer, telemetry: CapturedTelemetry,
) -> None:
    queue = queue_named(feeder, "late")
    await feeder.declare(queue)
    expected = ids("l", 20)
    await feeder.publish(queue, expected)
    handler = AsyncHandler()
    with FaultProxy("127.0.0.1", 5672) as proxy:
        proxy.refuse()
        started = time.monotonic()
        consumer = await make_async_consumer(url=proxy.url(AMQP_URL), queue=Queue(queue),
                                             handler=handler)
        assert time.monotonic() - started < 1.0  # required=False: never waits for the broker
        await await_until(lambda: consumer.connection.reconnect_attempts >= 2, 10)
        assert not consumer.consuming
        proxy.pass_through()
        await await_until(lambda: handler.done_set() == set(expected), 20)
        # The ack is counted on the I/O thread, after the handler returned.
        await await_until(lambda: consumed(telemetry, consumer, "ack") == 20, 10)


async def test_required_consumer_start_raises_when_the_broker_stays_down(
    telemetry: CapturedTelemetry,
) -> None:
    async def ignore(_message: IncomingMessage) -> None:
        return None

    with FaultProxy("127.0.0.1", 5672) as proxy:
        proxy.refuse()
        consumer = AsyncResilientConsumer(
            proxy.url(AMQP_URL), queue="never", handler=ignore, telemetry=telemetry,
            name="required", required=True,
            reconnect_policy=default_reconnect_policy(2, 0.05, 0.1))
        try:
            with pytest.raises(BrokerUnavailableError, match="could not connect"):
                await consumer.start()
        finally:
            await consumer.close(timeout=0)
    assert "guest" not in str(telemetry.events)


async def test_a_synchronous_handler_is_refused(telemetry: CapturedTelemetry) -> None:
    def not_a_coroutine(_message: IncomingMessage) -> None:
        return None

    with pytest.raises(TypeError, match="coroutine function"):
        AsyncResilientConsumer(AMQP_URL, queue="q", handler=not_a_coroutine,
                               telemetry=telemetry)
