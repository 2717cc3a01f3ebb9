"""Fixtures and helpers of the asyncio RabbitMQ tests (the sync ones are in ``conftest.py``)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest_asyncio

from instrumented_clients.rabbitmq import (
    AsyncResilientConsumer,
    AsyncResilientPublisher,
    IncomingMessage,
    default_reconnect_policy,
)
from instrumented_clients.testing import CapturedTelemetry
from tests.integration.rabbitmq.conftest import AMQP_URL, broker_stopped

MakeAsyncPublisher = Callable[..., AsyncResilientPublisher]
MakeAsyncConsumer = Callable[..., Awaitable[AsyncResilientConsumer]]


@pytest_asyncio.fixture
async def make_async_publisher(
    telemetry: CapturedTelemetry,
) -> AsyncIterator[MakeAsyncPublisher]:
    """Async publishers with fast reconnects (built on the test's loop), closed after it."""
    made: list[AsyncResilientPublisher] = []

    def make(url: str = AMQP_URL, **kwargs: Any) -> AsyncResilientPublisher:
        kwargs.setdefault("telemetry", telemetry)
        kwargs.setdefault("name", "test")
        kwargs.setdefault("reconnect_policy", default_reconnect_policy(20, 0.1, 0.5))
        publisher = AsyncResilientPublisher(url, **kwargs)
        made.append(publisher)
        return publisher

    yield make
    for publisher in made:
        await publisher.close(timeout=2)


@pytest_asyncio.fixture
async def make_async_consumer(
    telemetry: CapturedTelemetry,
) -> AsyncIterator[MakeAsyncConsumer]:
    """Started async consumers with fast reconnects, closed after the test; none may count an
    illegal state transition."""
    made: list[AsyncResilientConsumer] = []

    async def make(**kwargs: Any) -> AsyncResilientConsumer:
        kwargs.setdefault("url", AMQP_URL)
        kwargs.setdefault("telemetry", telemetry)
        kwargs.setdefault("name", f"aconsumer{len(made)}")
        kwargs.setdefault("reconnect_policy", default_reconnect_policy(20, 0.1, 0.5))
        consumer = AsyncResilientConsumer(**kwargs)
        made.append(consumer)
        await consumer.start()
        return consumer

    yield make
    for consumer in made:
        await consumer.close(timeout=5)
    for consumer in made:
        assert telemetry.value("illegal_transitions_total", system="rabbitmq",
                               client=consumer.name) == 0


@contextlib.asynccontextmanager
async def broker_stopped_async() -> AsyncIterator[None]:
    """:func:`~tests.integration.rabbitmq.conftest.broker_stopped`, its ``rabbitmqctl`` calls
    run off the event loop."""
    stopped = broker_stopped()
    await asyncio.to_thread(stopped.__enter__)
    try:
        yield
    finally:
        await asyncio.to_thread(stopped.__exit__, None, None, None)


class AsyncHandler:
    """A coroutine handler that records what it handled; fails for ``poison`` ids, awaits
    ``delay`` seconds, and waits on ``gates`` (an ``asyncio.Event`` per message id)."""

    def __init__(self, poison: frozenset[str] = frozenset(), delay: float = 0.0) -> None:
        self.poison = poison
        self.delay = delay
        self.gates: dict[str, asyncio.Event] = {}
        self.entered: set[str] = set()
        self.cancelled: list[str] = []
        self.calls: collections.Counter[str] = collections.Counter()
        self.done: list[str] = []
        self.running = 0
        self.most_running = 0

    async def __call__(self, message: IncomingMessage) -> None:
        message_id = message.message_id or ""
        self.calls[message_id] += 1
        self.entered.add(message_id)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            gate = self.gates.get(message_id)
            if gate is not None:
                await gate.wait()
            if self.delay:
                await asyncio.sleep(self.delay)
            if message_id in self.poison:
                raise ValueError(f"cannot handle {message_id}")
            self.done.append(message_id)
        except asyncio.CancelledError:
            self.cancelled.append(message_id)
            raise
        finally:
            self.running -= 1

    def done_set(self) -> set[str]:
        return set(self.done)
