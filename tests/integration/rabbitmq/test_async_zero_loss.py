"""Zero loss on the asyncio clients: 4 tasks x 5,000 persistent messages through three cuts and a
broker restart, every id received by an async consumer."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import pika
import pytest

from instrumented_clients.rabbitmq import (
    AsyncResilientConsumer,
    AsyncResilientPublisher,
    IncomingMessage,
    PublishResult,
    Queue,
    default_reconnect_policy,
)
from instrumented_clients.resilience import ConnectionState
from instrumented_clients.resilience.events import ReconnectFinished
from instrumented_clients.testing import CapturedTelemetry, FaultProxy, await_until
from tests.integration.async_helpers import loop_lag, no_blocking
from tests.integration.rabbitmq.async_fixtures import (
    MakeAsyncConsumer,
    MakeAsyncPublisher,
    broker_stopped_async,
    make_async_consumer,
    make_async_publisher,
)
from tests.integration.rabbitmq.conftest import AMQP_URL, Admin

pytestmark = [pytest.mark.integration, pytest.mark.asyncio,
              pytest.mark.usefixtures("no_blocking", "loop_lag"), pytest.mark.timeout(240)]
__all__ = ["loop_lag", "make_async_consumer", "make_async_publisher", "no_blocking"]

TASKS = 4
PER_TASK = 5000
RATE_PER_TASK = 250.0  # 1,000 msg/s in all
CUT_AT = (3000, 7000, 11000)
RESTART_AT = 15000


class PacedTasks:
    """``TASKS`` coroutines, each publishing ``PER_TASK`` persistent messages (ids
    ``"<task>-<i>"``) at ``RATE_PER_TASK`` msg/s without awaiting the confirms."""

    def __init__(self, publisher: AsyncResilientPublisher, routing_key: str) -> None:
        self.publisher = publisher
        self.routing_key = routing_key
        self.futures: dict[str, asyncio.Future[PublishResult]] = {}
        self.expected = {f"{t}-{i}" for t in range(TASKS) for i in range(PER_TASK)}
        self.tasks: list[asyncio.Task[None]] = []

    @property
    def published(self) -> int:
        return len(self.futures)

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._produce(t)) for t in range(TASKS)]

    async def _produce(self, task: int) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        for i in range(PER_TASK):
            delay = started + i / RATE_PER_TASK - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing the workload, not waiting for a condition
            message_id = f"{task}-{i}"
            self.futures[message_id] = self.publisher.publish(
                message_id.encode(), self.routing_key,
                properties=pika.BasicProperties(message_id=message_id, delivery_mode=2))


async def test_every_message_arrives_through_cuts_and_a_broker_restart(
    make_async_publisher: MakeAsyncPublisher, make_async_consumer: MakeAsyncConsumer,
    admin: Admin, proxy: FaultProxy, telemetry: CapturedTelemetry,
) -> None:
    queue = admin.queue("async-zero-loss", declare=False)
    received: collections.Counter[str] = collections.Counter()

    async def record(message: IncomingMessage) -> None:
        received[message.message_id or ""] += 1

    consumer: AsyncResilientConsumer = await make_async_consumer(
        queue=Queue.quorum(queue), handler=record, name="zero-loss-consumer", prefetch=200,
        heartbeat=5, reconnect_policy=default_reconnect_policy(200, 0.1, 1.0))
    await await_until(lambda: consumer.consuming, 15)
    publisher = make_async_publisher(proxy.url(AMQP_URL), heartbeat=5, confirm_timeout=60,
                                     max_pending_events=TASKS * PER_TASK,
                                     reconnect_policy=default_reconnect_policy(200, 0.1, 1.0))
    await await_until(lambda: publisher.ready, 10)
    load = PacedTasks(publisher, queue)
    load.start()
    try:
        for count in CUT_AT:
            await await_until(lambda count=count: load.published >= count, 30)
            proxy.blackhole()  # messages go out and stay unconfirmed ...
            await await_until(lambda: publisher.in_flight >= 5, 5)
            proxy.cut()  # ... then the connection is reset under them
            proxy.pass_through()
            await await_until(lambda: publisher.state is ConnectionState.CONNECTED
                              and publisher.ready, 15)
        await await_until(lambda: load.published >= RESTART_AT, 30)
        async with broker_stopped_async():
            await await_until(lambda: publisher.state is not ConnectionState.CONNECTED, 15)
    finally:
        await asyncio.wait_for(asyncio.gather(*load.tasks), 60)

    outcomes: collections.Counter[str] = collections.Counter()
    republished: list[asyncio.Future[Any]] = []
    for message_id, future in list(load.futures.items()):
        try:
            outcome = (await asyncio.wait_for(future, 60)).outcome
        except Exception as exc:
            outcome = type(exc).__name__
        outcomes[outcome] += 1
        if outcome != "ack":  # a nack is reported, not lost: the caller publishes again
            republished.append(publisher.publish(
                message_id.encode(), queue,
                properties=pika.BasicProperties(message_id=message_id, delivery_mode=2)))
    await asyncio.gather(*republished)

    await await_until(lambda: load.expected <= received.keys(), 90,
                      message=lambda: f"{len(load.expected - received.keys())} missing")
    duplicates = sum(received.values()) - len(received)
    resent = telemetry.value("publish_resent_total", system="rabbitmq", client="test") or 0
    print(f"\nasync zero loss: {sum(received.values())} received, {duplicates} duplicate(s), "
          f"outcomes {dict(outcomes)}, republished {len(republished)}, resent {resent}")

    assert not load.expected - received.keys()
    reconnects = [e for e in telemetry.events_of(ReconnectFinished)
                  if e.outcome == "success" and e.client == "test"]
    assert len(reconnects) >= 4
    assert (telemetry.value("buffered_events_total", system="rabbitmq", client="test") or 0) > 0
    assert resent > 0
    assert telemetry.value("buffer_dropped_events_total", system="rabbitmq", client="test",
                           reason="overflow") == 0
