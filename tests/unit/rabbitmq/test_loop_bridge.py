"""The asyncio clients' loop side without a broker: the hand-off from the I/O thread, the loop's
handler pool, and the async handler path of the consumer (no network, no sleeps)."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Iterator
from typing import Any

import pika
import pytest

from instrumented_clients.rabbitmq import AsyncResilientConsumer, RejectMessage
from instrumented_clients.rabbitmq.incoming import Delivery, IncomingMessage
from instrumented_clients.rabbitmq.loop_bridge import LoopFuture, LoopHandoff, resolve
from instrumented_clients.rabbitmq.loop_pool import LoopHandlerPool
from instrumented_clients.testing import CapturedTelemetry

URL = "amqp://guest:guest@127.0.0.1:1/"


def delivery(tag: int, generation: int = 1, message_id: str = "m") -> Delivery:
    message = IncomingMessage(b"body", f"{message_id}{tag}", "rk", "", False, 0, {},
                              pika.BasicProperties(message_id=f"{message_id}{tag}"), tag)
    return Delivery(tag, generation, message)


# -- LoopHandoff and LoopFuture -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_burst_is_delivered_in_order_with_one_wake_up() -> None:
    loop = asyncio.get_running_loop()
    received: list[int] = []
    bursts: list[int] = []
    handoff: LoopHandoff[int] = LoopHandoff(loop, received.append,
                                            after=lambda: bursts.append(len(received)))
    for item in range(1000):  # nothing runs on the loop in between: one burst
        handoff.push(item)
    await asyncio.sleep(0)
    assert received == list(range(1000))
    assert bursts == [1000]


@pytest.mark.asyncio
async def test_items_pushed_from_another_thread_arrive_in_order() -> None:
    loop = asyncio.get_running_loop()
    received: list[int] = []
    done = asyncio.Event()

    def deliver(item: int) -> None:
        received.append(item)
        if item == 4999:
            done.set()

    handoff: LoopHandoff[int] = LoopHandoff(loop, deliver)
    pusher = threading.Thread(target=lambda: [handoff.push(i) for i in range(5000)])
    pusher.start()
    await asyncio.wait_for(done.wait(), 10)
    pusher.join()
    assert received == list(range(5000))


@pytest.mark.asyncio
async def test_a_failing_delivery_is_logged_and_the_next_one_still_arrives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    received: list[int] = []

    def deliver(item: int) -> None:
        if item == 1:
            raise RuntimeError("bad item")
        received.append(item)

    handoff: LoopHandoff[int] = LoopHandoff(asyncio.get_running_loop(), deliver)
    for item in range(3):
        handoff.push(item)
    await asyncio.sleep(0)
    assert received == [0, 2]
    assert "delivering to the event loop failed" in caplog.text


def test_pushing_to_a_closed_loop_drops_the_item_quietly() -> None:
    loop = asyncio.new_event_loop()
    received: list[int] = []
    handoff: LoopHandoff[int] = LoopHandoff(loop, received.append)
    loop.close()
    handoff.push(1)  # nothing waits on a closed loop: no error for the I/O thread
    assert received == []


@pytest.mark.asyncio
async def test_loop_futures_resolve_from_another_thread_and_cancelled_ones_stay_cancelled(
) -> None:
    loop = asyncio.get_running_loop()
    handoff: LoopHandoff[tuple[asyncio.Future[Any], bool, Any]] = LoopHandoff(loop, resolve)
    ok: LoopFuture[str] = LoopFuture(handoff)
    failed: LoopFuture[str] = LoopFuture(handoff)
    cancelled: LoopFuture[str] = LoopFuture(handoff)
    cancelled.future.cancel()
    assert cancelled.done()

    def settle() -> None:
        ok.set_result("ack")
        failed.set_exception(ValueError("dropped"))
        cancelled.set_result("late")

    await asyncio.to_thread(settle)
    assert await ok.future == "ack"
    with pytest.raises(ValueError, match="dropped"):
        await failed.future
    await asyncio.sleep(0)
    assert cancelled.future.cancelled()


@pytest.mark.asyncio
async def test_a_failed_result_nobody_awaits_is_not_logged_again() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        handoff: LoopHandoff[tuple[asyncio.Future[Any], bool, Any]] = LoopHandoff(loop, resolve)
        LoopFuture[str](handoff).set_exception(ValueError("dropped, and counted"))
        await asyncio.sleep(0)
        gc.collect()
    finally:
        loop.set_exception_handler(None)
    assert reported == []


# -- LoopHandlerPool ------------------------------------------------------------------------------


class Gated:
    """``run`` for the pool: waits on a gate per tag, records order and concurrency."""

    def __init__(self) -> None:
        self.gates: dict[int, asyncio.Event] = {}
        self.started: list[int] = []
        self.finished: list[int] = []
        self.cancelled: list[int] = []

    async def __call__(self, item: Delivery) -> None:
        self.started.append(item.tag)
        gate = self.gates.setdefault(item.tag, asyncio.Event())
        try:
            await gate.wait()
        except asyncio.CancelledError:
            self.cancelled.append(item.tag)
            raise
        self.finished.append(item.tag)

    def open(self, tag: int) -> None:
        self.gates.setdefault(tag, asyncio.Event()).set()


async def settle_loop() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_the_pool_runs_at_most_its_concurrency_in_arrival_order() -> None:
    run = Gated()
    pool = LoopHandlerPool(3, run, lambda _d: True)
    pool.bind(asyncio.get_running_loop())
    await asyncio.to_thread(lambda: [pool.submit(delivery(tag)) for tag in range(1, 8)])
    await settle_loop()
    assert run.started == [1, 2, 3]
    assert (pool.running, pool.in_flight) == (3, 7)
    run.open(2)
    await settle_loop()
    assert run.started == [1, 2, 3, 4]
    for tag in range(1, 8):
        run.open(tag)
    await settle_loop()
    assert sorted(run.finished) == list(range(1, 8))
    assert (pool.running, pool.in_flight) == (0, 0)


@pytest.mark.asyncio
async def test_deliveries_of_a_dead_channel_are_skipped() -> None:
    run = Gated()
    pool = LoopHandlerPool(5, run, lambda d: d.generation == 2)
    pool.bind(asyncio.get_running_loop())
    for tag, generation in ((1, 1), (2, 2), (3, 1)):
        pool.submit(delivery(tag, generation))
    await settle_loop()
    assert run.started == [2]
    assert pool.in_flight == 1


@pytest.mark.asyncio
async def test_stop_skips_what_waits_and_wait_cancels_what_runs_past_the_deadline() -> None:
    run = Gated()
    pool = LoopHandlerPool(2, run, lambda _d: True)
    pool.bind(asyncio.get_running_loop())
    for tag in range(1, 5):
        pool.submit(delivery(tag))
    await settle_loop()
    run.open(1)
    await settle_loop()
    pool.stop()
    await settle_loop()
    assert run.started == [1, 2, 3]  # 4 was waiting when the pool stopped: skipped
    assert await pool.wait_for_handlers(0) == 2
    assert sorted(run.cancelled) == [2, 3]
    assert (pool.running, pool.in_flight) == (0, 0)


@pytest.mark.asyncio
async def test_wait_returns_at_once_when_nothing_runs() -> None:
    pool = LoopHandlerPool(2, Gated(), lambda _d: True)
    pool.bind(asyncio.get_running_loop())
    assert await pool.wait_for_handlers(10) == 0


def test_a_pool_on_one_loop_refuses_another() -> None:
    pool = LoopHandlerPool(2, Gated(), lambda _d: True)
    first, second = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:
        pool.bind(first)
        pool.bind(first)
        with pytest.raises(RuntimeError, match="another event loop"):
            pool.bind(second)
    finally:
        first.close()
        second.close()


# -- the consumer's async handler path -------------------------------------------------------------


@pytest.fixture
def consumers(telemetry: CapturedTelemetry) -> Iterator[list[AsyncResilientConsumer]]:
    made: list[AsyncResilientConsumer] = []
    yield made
    for consumer in made:
        consumer.connection.close(0)


def consumer_for(consumers: list[AsyncResilientConsumer], telemetry: CapturedTelemetry,
                 handler: Any, **kwargs: Any) -> AsyncResilientConsumer:
    consumer = AsyncResilientConsumer(URL, queue="jobs", handler=handler, telemetry=telemetry,
                                      **kwargs)
    consumers.append(consumer)
    return consumer


@pytest.mark.asyncio
async def test_async_outcomes_are_decided_as_for_a_sync_handler(
    consumers: list[AsyncResilientConsumer], telemetry: CapturedTelemetry,
) -> None:
    async def handler(message: IncomingMessage) -> None:
        if message.message_id == "m2":
            raise ValueError("boom")
        if message.message_id == "m3":
            raise RejectMessage("poison")

    consumer = consumer_for(consumers, telemetry, handler)
    outcomes = [(await consumer.runner.arun(delivery(tag)))[0] for tag in (1, 2, 3)]
    assert outcomes == ["ack", "requeue", "reject"]
    assert telemetry.value("operation_duration_seconds_count", system="rabbitmq", client="consumer",
                           operation="process", outcome="success") == 1
    assert telemetry.value("operation_duration_seconds_count", system="rabbitmq", client="consumer",
                           operation="process", outcome="failure") == 2
    assert consumer.health()["concurrency"] == 100  # the prefetch


@pytest.mark.asyncio
async def test_a_cancelled_handler_settles_and_counts_nothing(
    consumers: list[AsyncResilientConsumer], telemetry: CapturedTelemetry,
) -> None:
    entered = asyncio.Event()

    async def handler(_message: IncomingMessage) -> None:
        entered.set()
        await asyncio.Event().wait()

    consumer = consumer_for(consumers, telemetry, handler)
    task = asyncio.ensure_future(consumer.runner.arun(delivery(1)))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for outcome in ("success", "failure"):
        assert telemetry.value("operation_duration_seconds_count", system="rabbitmq",
                               client="consumer",
                               operation="process", outcome=outcome) == 0
    assert consumer.settlements.pending() == []


@pytest.mark.parametrize("bad", [{"concurrency": 0}, {"concurrency": -3}, {"prefetch": 0}])
def test_bad_arguments_fail_at_construction(bad: dict[str, Any],
                                            telemetry: CapturedTelemetry) -> None:
    async def handler(_message: IncomingMessage) -> None:
        return None

    with pytest.raises(ValueError, match=next(iter(bad))):
        AsyncResilientConsumer(URL, queue="jobs", handler=handler, telemetry=telemetry, **bad)


def test_a_synchronous_handler_is_a_type_error(telemetry: CapturedTelemetry) -> None:
    with pytest.raises(TypeError, match="coroutine function"):
        AsyncResilientConsumer(URL, queue="jobs", handler=print, telemetry=telemetry)
