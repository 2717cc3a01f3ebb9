"""Trace context through the real broker: a request span, publish, consume, and the handler's
SQL and Redis calls are one trace, shaped as OpenTelemetry's messaging conventions say; also
across a FaultProxy cut (a re-send) and with the pika contrib instrumentation active."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.semconv._incubating.attributes import messaging_attributes as msg
from opentelemetry.semconv.attributes import db_attributes as db_attrs
from opentelemetry.trace import SpanKind

from instrumented_clients import ResilientDatabase, ResilientRedis
from instrumented_clients.rabbitmq import ResilientConsumer, default_reconnect_policy
from instrumented_clients.rabbitmq.incoming import IncomingMessage
from instrumented_clients.rabbitmq.publisher import ResilientPublisher
from instrumented_clients.testing import CapturedTelemetry, FaultProxy, wait_until
from tests.integration.rabbitmq.conftest import AMQP_URL, Admin, wait_connected

pytestmark = pytest.mark.integration

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
MakePublisher = Callable[..., ResilientPublisher]


class Work:
    """The handler: an SQL insert and a Redis SET per message, like a real service's."""

    def __init__(self, telemetry: CapturedTelemetry, table: str) -> None:
        self.table = table
        self.db = ResilientDatabase(PG_URL, name="trace-db", telemetry=telemetry)
        self.db.execute(f"CREATE TABLE IF NOT EXISTS {table} (id text PRIMARY KEY)")
        self.redis = ResilientRedis(REDIS_URL, name="trace-redis", telemetry=telemetry)
        self.seen: set[str] = set()
        self.lock = threading.Lock()

    def __call__(self, message: IncomingMessage) -> None:
        key = message.body.decode()
        self.db.execute(f"INSERT INTO {self.table} (id) VALUES (:id) ON CONFLICT DO NOTHING",
                        {"id": key})
        self.redis.set(f"trace-test:{key}", "1", ex=60)
        with self.lock:
            self.seen.add(key)

    def close(self) -> None:
        self.db.execute(f"DROP TABLE IF EXISTS {self.table}")
        self.db.close()
        self.redis.close()


@pytest.fixture
def work(telemetry: CapturedTelemetry) -> Iterator[Work]:
    handler = Work(telemetry, f"trace_{uuid.uuid4().hex[:10]}")
    yield handler
    handler.close()


@pytest.fixture
def make_consumer(telemetry: CapturedTelemetry) -> Iterator[Callable[..., ResilientConsumer]]:
    made: list[ResilientConsumer] = []

    def make(**kwargs: Any) -> ResilientConsumer:
        kwargs.setdefault("url", AMQP_URL)
        consumer = ResilientConsumer(telemetry=telemetry, name=f"trace{len(made)}",
                                     reconnect_policy=default_reconnect_policy(20, 0.1, 0.5),
                                     **kwargs)
        made.append(consumer)
        return consumer

    yield make
    for consumer in made:
        consumer.close(timeout=5)


def start_pair(make_publisher: MakePublisher, make_consumer: Callable[..., ResilientConsumer],
               admin: Admin, work: Work, prefix: str, url: str = AMQP_URL,
               **consumer_options: Any) -> tuple[str, ResilientPublisher]:
    """A fresh queue, a connected publisher (through ``url``) and a consumer running ``work``."""
    queue = admin.queue(prefix)
    publisher = make_publisher(url)
    wait_connected(publisher)
    make_consumer(queue=queue, handler=work, **consumer_options)
    return queue, publisher


def by_name(telemetry: CapturedTelemetry, name: str) -> list[ReadableSpan]:
    return [span for span in telemetry.spans() if span.name == name]


def one_trace(telemetry: CapturedTelemetry, request: ReadableSpan, queue: str,
              table: str) -> dict[str, ReadableSpan]:
    """Check the request -> create -> send/process -> SQL + Redis shape; return the spans."""
    trace_id = request.context.trace_id
    mine = [s for s in telemetry.spans() if s.context.trace_id == trace_id]
    [create] = [s for s in mine if s.name == "create amq.default"]
    assert create.kind is SpanKind.PRODUCER
    assert create.parent is not None
    assert create.parent.span_id == request.context.span_id
    assert create.attributes[msg.MESSAGING_OPERATION_TYPE] == "create"
    assert create.attributes[msg.MESSAGING_DESTINATION_NAME] == queue
    sends = [s for s in mine if s.name == "send amq.default"]
    assert sends
    for send in sends:
        assert send.kind is SpanKind.CLIENT
        assert send.parent is not None
        assert send.parent.span_id == create.context.span_id
        assert [link.context.span_id for link in send.links] == [create.context.span_id]
    [process] = [s for s in mine if s.name == f"process {queue}"]
    assert process.kind is SpanKind.CONSUMER
    assert process.parent is not None
    assert process.parent.span_id == create.context.span_id
    assert [link.context.span_id for link in process.links] == [create.context.span_id]
    assert process.attributes[msg.MESSAGING_OPERATION_TYPE] == "process"
    assert process.attributes["resilient_client.settlement"] == "ack"
    [insert] = [s for s in mine if s.name == f"INSERT {table}"]
    [redis_set] = [s for s in mine if s.name == "SET"]
    for child in (insert, redis_set):
        assert child.kind is SpanKind.CLIENT
        assert child.parent is not None
        assert child.parent.span_id == process.context.span_id
    assert insert.attributes[db_attrs.DB_SYSTEM_NAME] == "postgresql"
    assert insert.attributes[db_attrs.DB_OPERATION_NAME] == "INSERT"
    assert redis_set.attributes[db_attrs.DB_OPERATION_NAME] == "SET"
    return {"create": create, "send": sends[-1], "process": process}


def test_request_publish_consume_sql_and_redis_are_one_trace(
    make_publisher: MakePublisher, make_consumer: Callable[..., ResilientConsumer],
    admin: Admin, work: Work, telemetry: CapturedTelemetry,
) -> None:
    queue, publisher = start_pair(make_publisher, make_consumer, admin, work, "trace")
    tracer = telemetry.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("POST /orders", kind=SpanKind.SERVER) as request:
        assert publisher.publish(b"order-1", queue).result(10).outcome == "ack"
    wait_until(lambda: "order-1" in work.seen and by_name(telemetry, f"process {queue}"), 20)
    one_trace(telemetry, request, queue, work.table)  # type: ignore[arg-type]


def test_link_only_starts_a_new_trace_linked_to_the_producer(
    make_publisher: MakePublisher, make_consumer: Callable[..., ResilientConsumer],
    admin: Admin, work: Work, telemetry: CapturedTelemetry,
) -> None:
    queue, publisher = start_pair(make_publisher, make_consumer, admin, work, "trace-link",
                                  trace_link_only=True)
    assert publisher.publish(b"order-2", queue).result(10).outcome == "ack"
    wait_until(lambda: by_name(telemetry, f"process {queue}"), 20)
    [create] = by_name(telemetry, "create amq.default")
    [process] = by_name(telemetry, f"process {queue}")
    assert process.parent is None
    assert process.context.trace_id != create.context.trace_id
    assert [link.context.span_id for link in process.links] == [create.context.span_id]


def test_a_message_resent_after_a_cut_keeps_its_trace(
    make_publisher: MakePublisher, make_consumer: Callable[..., ResilientConsumer],
    admin: Admin, proxy: FaultProxy, work: Work, telemetry: CapturedTelemetry,
) -> None:
    queue, publisher = start_pair(make_publisher, make_consumer, admin, work, "trace-cut",
                                  proxy.url(AMQP_URL))
    tracer = telemetry.tracer_provider.get_tracer("test")
    proxy.blackhole()  # the publish goes out but no confirm comes back
    with tracer.start_as_current_span("POST /orders", kind=SpanKind.SERVER) as request:
        future = publisher.publish(b"order-3", queue)
    wait_until(lambda: by_name(telemetry, "create amq.default"), 5)
    proxy.cut()
    proxy.pass_through()
    assert future.result(30).outcome == "ack"
    wait_until(lambda: "order-3" in work.seen and by_name(telemetry, f"process {queue}"), 30)
    spans = one_trace(telemetry, request, queue, work.table)  # type: ignore[arg-type]
    sends = [s for s in by_name(telemetry, "send amq.default")
             if s.context.trace_id == request.context.trace_id]  # type: ignore[attr-defined]
    assert len(sends) >= 2  # the lost transmission and the re-send: a span each
    assert not sends[0].status.is_ok
    assert sends[0].attributes["error.type"] == "ConnectionLostError"
    assert sends[-1].attributes["resilient_client.resent"] is True
    assert spans["send"].status.is_ok


def test_with_the_pika_instrumentation_active_the_consumer_sees_the_callers_trace(
    make_publisher: MakePublisher, make_consumer: Callable[..., ResilientConsumer],
    admin: Admin, work: Work, telemetry: CapturedTelemetry,
) -> None:
    from opentelemetry.instrumentation.pika import PikaInstrumentor

    instrumentor = PikaInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider)
    try:
        queue, publisher = start_pair(make_publisher, make_consumer, admin, work, "trace-contrib")
        tracer = telemetry.tracer_provider.get_tracer("test")
        with tracer.start_as_current_span("POST /orders", kind=SpanKind.SERVER) as request:
            assert publisher.publish(b"order-4", queue).result(10).outcome == "ack"
        wait_until(lambda: "order-4" in work.seen and by_name(telemetry, f"process {queue}"),
                   20)
        one_trace(telemetry, request, queue, work.table)  # type: ignore[arg-type]
        # the contrib wrapper was on our channel's basic_publish, yet made no span of its own
        assert hasattr(publisher.confirm_channel.channel.basic_publish, "_original_function")
        assert not [s for s in telemetry.spans() if s.instrumentation_scope is not None
                    and s.instrumentation_scope.name == "opentelemetry.instrumentation.pika"]
    finally:
        instrumentor.uninstrument()
