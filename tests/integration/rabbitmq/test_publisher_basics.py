"""ResilientPublisher against the real broker: confirms, bad input, permanent errors, close."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import pika
import pytest

from instrumented_clients.rabbitmq import (
    BrokerUnavailableError,
    ChannelClosedError,
    Queue,
    Topology,
    UnroutableError,
    default_reconnect_policy,
    is_transient_rmq_error,
)
from instrumented_clients.rabbitmq.publisher import ResilientPublisher
from instrumented_clients.resilience import ConnectionState, ErrorCategory
from instrumented_clients.resilience.events import ReconnectAttempt
from instrumented_clients.testing import CapturedTelemetry, wait_until
from tests.integration.rabbitmq.conftest import AMQP_URL, Admin, wait_connected

pytestmark = pytest.mark.integration
MakePublisher = Callable[..., ResilientPublisher]


def test_publishes_are_confirmed_with_generated_ids_and_counted(
    make_publisher: MakePublisher, admin: Admin, telemetry: CapturedTelemetry
) -> None:
    queue = admin.queue("basic")
    publisher = make_publisher()
    wait_connected(publisher)
    futures = [publisher.publish(f"m{i}".encode(), queue) for i in range(500)]
    results = [future.result(10) for future in futures]

    assert {result.outcome for result in results} == {"ack"}
    assert len({result.message_id for result in results}) == 500
    assert telemetry.value("publish_confirms_total", system="rabbitmq", client="test",
                           outcome="ack") == 500
    assert telemetry.value("operation_duration_seconds_count", system="rabbitmq", client="test",
                           operation="publish", outcome="success") == 500
    received = admin.drain(queue, 500)
    assert [body for _, body in received] == [f"m{i}".encode() for i in range(500)]
    assert [message_id for message_id, _ in received] == [r.message_id for r in results]


def test_caller_message_id_and_headers_are_kept(
    make_publisher: MakePublisher, admin: Admin
) -> None:
    queue = admin.queue("props")
    publisher = make_publisher()
    wait_connected(publisher)
    props = pika.BasicProperties(message_id="my-id-1", content_type="text/plain")
    result = publisher.publish(b"x", queue, headers={"k": "v"}, properties=props).result(10)

    assert result.message_id == "my-id-1"
    channel = admin.channel
    method, properties, body = channel.basic_get(queue, auto_ack=True)
    assert method is not None
    # the caller's headers, plus the trace context publish() injects (tracing is on here)
    trace_headers = {"traceparent", "tracestate", "baggage"}
    caller_headers = {k: v for k, v in properties.headers.items() if k not in trace_headers}
    assert (properties.message_id, properties.content_type, caller_headers, body) == (
        "my-id-1", "text/plain", {"k": "v"}, b"x")
    assert "traceparent" in properties.headers
    assert properties.delivery_mode == 2


def test_publish_event_serialises_json(make_publisher: MakePublisher, admin: Admin) -> None:
    queue = admin.queue("event")
    publisher = make_publisher()
    wait_connected(publisher)
    result = publisher.publish_event("order.created", {"id": 7}, routing_key=queue).result(10)

    assert result.outcome == "ack"
    method, properties, body = admin.channel.basic_get(queue, auto_ack=True)
    assert method is not None
    document = json.loads(body)
    assert (document["type"], document["data"]) == ("order.created", {"id": 7})
    assert properties.content_type == "application/json"


@pytest.mark.parametrize("body", ["text", {"a": 1}, 12, None])
def test_non_bytes_body_is_a_type_error_before_any_io(
    make_publisher: MakePublisher, body: Any
) -> None:
    publisher = make_publisher("amqp://guest:guest@127.0.0.1:1/")  # nothing listens there
    with pytest.raises(TypeError, match="body must be bytes"):
        publisher.publish(body, "queue")
    with pytest.raises(TypeError, match="body must be bytes"):
        publisher.publish_sync(body, "queue")
    assert publisher.pending_events == 0


def test_serializer_turns_objects_into_bytes(make_publisher: MakePublisher,
                                             admin: Admin) -> None:
    queue = admin.queue("serializer")
    publisher = make_publisher(serializer=lambda obj: json.dumps(obj).encode())
    wait_connected(publisher)
    assert publisher.publish({"a": 1}, queue).result(10).outcome == "ack"
    assert admin.channel.basic_get(queue, auto_ack=True)[2] == b'{"a": 1}'


@pytest.mark.parametrize("url", [
    "not a url",
    "http://guest:secret-pw@127.0.0.1:5672/",
    "amqp://guest:secret-pw@127.0.0.1:notaport/",
    "amqp://guest:secret-pw@:5672/",
    "",
])
def test_malformed_url_fails_at_construction_without_the_password(url: str) -> None:
    with pytest.raises(ValueError, match="url") as info:
        ResilientPublisher(url, name="bad-url", telemetry=CapturedTelemetry())
    assert "secret-pw" not in str(info.value)


def test_wrong_password_goes_failed_quickly_without_a_retry_storm(
    make_publisher: MakePublisher, telemetry: CapturedTelemetry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    attempts: list[tuple[float, ReconnectAttempt]] = []

    class AttemptTimes:
        def emit(self, event: object) -> None:
            if isinstance(event, ReconnectAttempt):
                attempts.append((time.monotonic(), event))

    telemetry.add_sink(AttemptTimes())
    started = time.monotonic()
    publisher = make_publisher("amqp://guest:wrong-secret@127.0.0.1:5672/",
                               reconnect_policy=default_reconnect_policy(10, 0.05, 2.0))
    assert time.monotonic() - started < 1.0  # required=False never waits
    wait_until(lambda: publisher.connection.state is ConnectionState.FAILED, 5)
    assert time.monotonic() - started < 3.0

    health = publisher.health()
    assert publisher.connection.last_error_category is ErrorCategory.AUTH
    assert "ACCESS_REFUSED" in (health["last_error"] or "")
    assert "wrong-secret" not in json.dumps(health, default=str)
    assert health["address"] == "127.0.0.1:5672"
    # No retry storm: the next attempt waits for the policy's cap (2 s), not its 50 ms start.
    wait_until(lambda: len(attempts) >= 2, 6)
    (first_at, first), (second_at, _) = attempts[:2]
    assert first.outcome == "failure"
    assert first.error_type == "auth"
    assert first.next_delay == pytest.approx(2.0)
    assert second_at - first_at >= 1.8
    assert publisher.connection.state is ConnectionState.FAILED
    assert caplog.records, "the failures were logged"
    assert "wrong-secret" not in caplog.text  # ours and pika's log lines alike


def test_required_with_wrong_password_raises_a_clear_error(telemetry: CapturedTelemetry) -> None:
    started = time.monotonic()
    with pytest.raises(BrokerUnavailableError, match="required") as info:
        ResilientPublisher("amqp://guest:wrong-secret@127.0.0.1:5672/", name="req",
                           telemetry=telemetry, required=True)
    assert time.monotonic() - started < 5
    assert "wrong-secret" not in str(info.value)
    assert "ACCESS_REFUSED" in str(info.value)


def test_unroutable_mandatory_message_is_returned_and_counted(
    make_publisher: MakePublisher, admin: Admin, telemetry: CapturedTelemetry
) -> None:
    publisher = make_publisher()
    wait_connected(publisher)
    nowhere = admin.name("nowhere")
    result = publisher.publish(b"x", nowhere).result(10)

    assert (result.outcome, result.reply_code) == ("returned", 312)
    assert telemetry.value("publish_confirms_total", system="rabbitmq", client="test",
                           outcome="returned") == 1
    with pytest.raises(UnroutableError):
        publisher.publish_sync(b"y", nowhere)
    assert telemetry.value("retries_total", system="rabbitmq", client="test",
                           operation="publish", error_type="not_found") is None
    # A non-mandatory message to the same place is simply acked (and discarded by the broker).
    assert publisher.publish(b"z", nowhere, mandatory=False).result(10).outcome == "ack"


def test_missing_exchange_is_permanent_and_not_retried(
    make_publisher: MakePublisher, admin: Admin, telemetry: CapturedTelemetry
) -> None:
    queue = admin.queue("after-404")
    publisher = make_publisher()
    wait_connected(publisher)
    missing = admin.name("no-exchange")
    future = publisher.publish(b"x", "key", exchange=missing)
    with pytest.raises(ChannelClosedError) as info:
        future.result(10)
    assert info.value.reply_code == 404
    assert not is_transient_rmq_error(info.value)

    with pytest.raises(ChannelClosedError):
        publisher.publish_sync(b"x", "key", exchange=missing)
    assert telemetry.value("retries_total", system="rabbitmq", client="test",
                           operation="publish", error_type="not_found") is None
    # The publisher goes on working on a new channel.
    wait_connected(publisher)
    assert publisher.publish(b"ok", queue).result(10).outcome == "ack"
    assert publisher.connection.state is ConnectionState.CONNECTED


def test_topology_with_quorum_queue_and_dead_letter_exchange_is_declared(
    make_publisher: MakePublisher, admin: Admin
) -> None:
    from instrumented_clients.rabbitmq import Binding, Exchange

    exchange = admin.exchange_name("ex")
    dlx = admin.exchange_name("dlx")
    queue = admin.queue("quorum", declare=False)
    topology = Topology(
        exchanges=[Exchange(exchange, "topic"), Exchange(dlx, "fanout")],
        queues=[Queue.quorum(queue, dead_letter_exchange=dlx, delivery_limit=3)],
        bindings=[Binding(queue, exchange, "orders.*")],
    )
    publisher = make_publisher(topology=topology)
    wait_connected(publisher)
    assert publisher.publish(b"x", "orders.new", exchange=exchange).result(10).outcome == "ack"
    wait_until(lambda: admin.message_count(queue) == 1, 5)
    # Declared with the same arguments again: a mismatch would be a 406.
    admin.channel.queue_declare(queue, durable=True, passive=False, arguments={
        "x-queue-type": "quorum", "x-dead-letter-exchange": dlx, "x-delivery-limit": 3})


def test_close_flushes_and_waits_for_confirms(
    make_publisher: MakePublisher, admin: Admin, telemetry: CapturedTelemetry
) -> None:
    queue = admin.queue("close")
    publisher = make_publisher()
    wait_connected(publisher)
    futures = [publisher.publish(b"x" * 100, queue) for _ in range(2000)]
    publisher.close(timeout=20)

    assert all(future.done() and future.result().outcome == "ack" for future in futures)
    assert publisher.health()["state"] == "closed"
    assert telemetry.value("buffer_dropped_events_total", system="rabbitmq", client="test",
                           reason="shutdown") == 0
    assert admin.message_count(queue) == 2000
    with pytest.raises(Exception, match="closed"):
        publisher.publish(b"late", queue)


def test_from_env_reads_the_defaults_table(telemetry: CapturedTelemetry) -> None:
    from instrumented_clients.config import ConfigError

    environ = {"RABBITMQ_URL": f"amqp://guest:guest@127.0.0.1:1/,{AMQP_URL}",
               "RABBITMQ_MAX_RETRIES": "4", "RABBITMQ_RETRY_DELAY": "0.2",
               "RABBITMQ_RETRY_MAX_DELAY": "0.4", "RABBITMQ_MAX_PENDING_EVENTS": "7",
               "RABBITMQ_HEARTBEAT": "5", "RABBITMQ_CONNECT_TIMEOUT": "2"}
    publisher = ResilientPublisher.from_env(name="env", environ=environ, telemetry=telemetry)
    try:
        assert publisher.connection.urls == ("amqp://guest:guest@127.0.0.1:1/", AMQP_URL)
        assert publisher.connection.policy.max_attempts == 4
        assert publisher.connection.policy.max_delay == 0.4
        assert publisher.buffer.capacity == 7
        assert (publisher.connection.heartbeat, publisher.connection.connect_timeout) == (5, 2)
        # The first URL refuses; the second, tried in turn, connects.
        wait_connected(publisher)
        assert publisher.health()["address"] == "127.0.0.1:5672"
    finally:
        publisher.close(timeout=2)
    with pytest.raises(ConfigError, match="RABBITMQ_MAX_RETRIES='many'"):
        ResilientPublisher.from_env(environ={"RABBITMQ_MAX_RETRIES": "many"})
    with pytest.raises(ConfigError, match="RABBITMQ_REQUIRED"):
        ResilientPublisher.from_env(environ={"RABBITMQ_REQUIRED": "perhaps"})


def test_one_producer_span_per_publish_and_no_names_in_metric_labels(
    make_publisher: MakePublisher, admin: Admin, telemetry: CapturedTelemetry
) -> None:
    from opentelemetry.trace import SpanKind

    from instrumented_clients.rabbitmq import Binding, Exchange

    exchange = admin.exchange_name("spans")
    queue = admin.queue("spans")
    publisher = make_publisher(topology=Topology(exchanges=[Exchange(exchange)],
                                                 bindings=[Binding(queue, exchange, "k")]))
    wait_connected(publisher)
    results = [publisher.publish(b"x", "k", exchange=exchange).result(10) for _ in range(3)]

    spans = [span for span in telemetry.spans() if span.name == f"create {exchange}"]
    assert len(spans) == 3
    assert {span.kind for span in spans} == {SpanKind.PRODUCER}
    attributes = dict(spans[0].attributes or {})
    assert attributes["messaging.system"] == "rabbitmq"
    assert attributes["messaging.destination.name"] == f"{exchange}:k"
    assert attributes["messaging.rabbitmq.destination.routing_key"] == "k"
    assert attributes["messaging.operation.type"] == "create"
    assert {span.attributes["messaging.message.id"] for span in spans} == {
        result.message_id for result in results}
    # one send span per transmission, a child of its create span and linked to it
    wait_until(lambda: len([s for s in telemetry.spans() if s.name == f"send {exchange}"]) == 3,
               5)
    creates = {span.context.span_id: span for span in spans}
    for send in (s for s in telemetry.spans() if s.name == f"send {exchange}"):
        assert send.kind is SpanKind.CLIENT
        assert send.attributes["messaging.operation.type"] == "send"
        assert send.parent is not None
        assert send.parent.span_id in creates
        assert [link.context.span_id for link in send.links] == [send.parent.span_id]
        assert send.status.is_ok
    scrape = telemetry.scrape()
    assert exchange not in scrape
    assert queue not in scrape
    assert "guest" not in scrape
    assert 'operation="publish"' in scrape


def test_a_message_pika_cannot_encode_fails_alone(
    make_publisher: MakePublisher, admin: Admin
) -> None:
    queue = admin.queue("encode")
    publisher = make_publisher()
    wait_connected(publisher)
    bad = publisher.publish(b"x", queue, headers={"when": object()})
    good = publisher.publish(b"y", queue)
    with pytest.raises(Exception, match="object"):
        bad.result(10)
    assert good.result(10).outcome == "ack"
    assert admin.message_count(queue) == 1


async def _awaited(publisher: ResilientPublisher, queue: str) -> str:
    import asyncio

    result = await asyncio.wrap_future(publisher.publish(b"async", queue))
    return result.outcome


def test_the_future_works_with_asyncio(make_publisher: MakePublisher, admin: Admin) -> None:
    import asyncio

    queue = admin.queue("asyncio")
    publisher = make_publisher()
    wait_connected(publisher)
    assert asyncio.run(_awaited(publisher, queue)) == "ack"


def test_done_callbacks_may_publish_but_not_wait(make_publisher: MakePublisher,
                                                 admin: Admin) -> None:
    queue = admin.queue("callback")
    publisher = make_publisher()
    wait_connected(publisher)
    chained: list[Any] = []
    refused: list[BaseException] = []

    def on_done(_future: Any) -> None:  # runs on the I/O thread
        chained.append(publisher.publish(b"second", queue))
        try:
            publisher.publish_sync(b"never", queue)
        except RuntimeError as exc:
            refused.append(exc)

    publisher.publish(b"first", queue).add_done_callback(on_done)
    wait_until(lambda: chained and chained[0].done(), 10)
    assert chained[0].result().outcome == "ack"
    assert len(refused) == 1
    assert [body for _, body in admin.drain(queue, 2)] == [b"first", b"second"]
