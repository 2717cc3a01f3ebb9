"""Trace context through the real broker with the asyncio clients: a request span, an async
publish, an async consumer whose coroutine handler awaits SQL and Redis — one trace, shaped as
with the sync clients."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from opentelemetry.trace import SpanKind

from instrumented_clients import AsyncResilientDatabase, AsyncResilientRedis
from instrumented_clients.rabbitmq import IncomingMessage
from instrumented_clients.testing import CapturedTelemetry, await_until
from tests.integration.async_helpers import loop_lag, no_blocking
from tests.integration.rabbitmq.async_fixtures import (
    MakeAsyncConsumer,
    MakeAsyncPublisher,
    make_async_consumer,
    make_async_publisher,
)
from tests.integration.rabbitmq.conftest import Admin
from tests.integration.rabbitmq.test_trace_propagation import PG_URL, REDIS_URL, by_name, one_trace

pytestmark = [pytest.mark.integration, pytest.mark.asyncio,
              pytest.mark.usefixtures("no_blocking", "loop_lag")]
__all__ = ["loop_lag", "make_async_consumer", "make_async_publisher", "no_blocking"]


class AsyncWork:
    """The coroutine handler: an SQL insert and a Redis SET per message."""

    def __init__(self, telemetry: CapturedTelemetry, table: str) -> None:
        self.table = table
        self.db = AsyncResilientDatabase(PG_URL, name="trace-db", telemetry=telemetry)
        self.redis = AsyncResilientRedis(REDIS_URL, name="trace-redis", telemetry=telemetry)
        self.seen: set[str] = set()

    async def __call__(self, message: IncomingMessage) -> None:
        key = message.body.decode()
        await self.db.execute(
            f"INSERT INTO {self.table} (id) VALUES (:id) ON CONFLICT DO NOTHING", {"id": key})
        await self.redis.set(f"trace-test:{key}", "1", ex=60)
        self.seen.add(key)


@pytest_asyncio.fixture
async def work(telemetry: CapturedTelemetry) -> AsyncIterator[AsyncWork]:
    handler = AsyncWork(telemetry, f"trace_{uuid.uuid4().hex[:10]}")
    await handler.db.execute(f"CREATE TABLE IF NOT EXISTS {handler.table} (id text PRIMARY KEY)")
    yield handler
    await handler.db.execute(f"DROP TABLE IF EXISTS {handler.table}")
    await handler.db.close()
    await handler.redis.close()


async def test_request_async_publish_async_consume_sql_and_redis_are_one_trace(
    make_async_publisher: MakeAsyncPublisher, make_async_consumer: MakeAsyncConsumer,
    admin: Admin, work: AsyncWork, telemetry: CapturedTelemetry,
) -> None:
    queue = admin.queue("async-trace", declare=False)
    consumer = await make_async_consumer(queue=queue, handler=work, name="trace-consumer")
    await await_until(lambda: consumer.consuming, 10)
    publisher = make_async_publisher()
    await await_until(lambda: publisher.ready, 10)
    tracer = telemetry.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("POST /orders", kind=SpanKind.SERVER) as request:
        result = await publisher.publish(b"order-1", queue)
    assert result.outcome == "ack"
    await await_until(lambda: "order-1" in work.seen and by_name(telemetry, f"process {queue}"),
                      20)
    one_trace(telemetry, request, queue, work.table)  # type: ignore[arg-type]
