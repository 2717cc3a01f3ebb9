"""ResilientConsumer without a broker: ack planning, poison counting, handler outcomes, config."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pika
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.trace import SpanKind

from instrumented_clients.config import ConfigError
from instrumented_clients.rabbitmq.consumer import ResilientConsumer
from instrumented_clients.rabbitmq.incoming import (
    Delivery,
    DeliveryCounter,
    IncomingMessage,
    RejectMessage,
    broker_delivery_count,
    plan_acks,
    poison_key,
)
from instrumented_clients.rabbitmq.settlements import SettlementBatcher
from instrumented_clients.rabbitmq.topology import Queue, Topology
from instrumented_clients.resilience import RetryPolicy
from instrumented_clients.testing import CapturedTelemetry, FakeClock

URL = "amqp://guest:secret@127.0.0.1:5672/"


# -- plan_acks -------------------------------------------------------------------------------------


def broker_acks(outstanding: list[int], upto: int | None, singles: list[int]) -> list[int]:
    """What the broker settles for these frames (basic.ack multiple acks every unsettled tag
    up to ``upto``); an unknown tag would close the channel: fail the test instead."""
    unsettled = list(outstanding)
    settled: list[int] = []
    if upto is not None:
        settled += [tag for tag in unsettled if tag <= upto]
        unsettled = [tag for tag in unsettled if tag > upto]
    for tag in singles:
        assert tag in unsettled, f"tag {tag} acked twice or unknown: PRECONDITION_FAILED"
        unsettled.remove(tag)
        settled.append(tag)
    return settled


def test_plan_acks_uses_one_multiple_ack_for_a_leading_run() -> None:
    assert plan_acks([1, 2, 3, 4, 5], {1, 2, 3}) == (3, [])
    assert plan_acks([1, 2, 3, 4, 5], {1, 2, 3, 5}) == (3, [5])


def test_plan_acks_never_covers_an_unfinished_tag() -> None:
    assert plan_acks([1, 2, 3, 4], {2, 3, 4}) == (None, [2, 3, 4])
    assert plan_acks([7, 9, 12], {7}) == (None, [7])
    assert plan_acks([], set()) == (None, [])


@given(st.lists(st.integers(1, 500), unique=True, max_size=60).map(sorted), st.data())
def test_plan_acks_settles_exactly_the_acked_tags(outstanding: list[int], data: Any) -> None:
    acks = data.draw(st.sets(st.sampled_from(outstanding)) if outstanding else st.just(set()))
    upto, singles = plan_acks(outstanding, acks)
    settled = broker_acks(outstanding, upto, singles)
    assert sorted(settled) == sorted(acks)
    assert len(settled) == len(set(settled))
    assert len(singles) + (upto is not None) <= len(acks)  # never more frames than acks


# -- poison counting -------------------------------------------------------------------------------


def test_delivery_counter_counts_failures_per_key_and_forgets() -> None:
    counter = DeliveryCounter(10)
    assert [counter.failed("a") for _ in range(3)] == [1, 2, 3]
    assert counter.failed("b") == 1
    assert counter.failed("b", at_least=5) == 5  # the broker's count wins when larger
    counter.forget("a")
    assert counter.get("a") == 0
    assert counter.get("b") == 5


@given(st.lists(st.text(min_size=1, max_size=3), max_size=200), st.integers(1, 20))
def test_delivery_counter_memory_is_bounded(keys: list[str], capacity: int) -> None:
    counter = DeliveryCounter(capacity)
    for key in keys:
        counter.failed(key)
        assert len(counter) <= capacity
    if keys:
        assert counter.get(keys[-1]) >= 1  # the most recent key is always kept


def test_delivery_counter_evicts_the_least_recently_failed() -> None:
    counter = DeliveryCounter(2)
    counter.failed("old")
    counter.failed("mid")
    counter.failed("old")  # touched again: "mid" is now the oldest
    counter.failed("new")
    assert counter.get("mid") == 0
    assert counter.get("old") == 2


@pytest.mark.parametrize("capacity", [0, -1, 1.5, True])
def test_delivery_counter_rejects_a_bad_capacity(capacity: Any) -> None:
    with pytest.raises(ValueError, match="poison_cache_size"):
        DeliveryCounter(capacity)


def test_poison_key_prefers_the_message_id_then_a_digest() -> None:
    assert poison_key("id-1", "rk", b"x") == "id-1"
    digest = poison_key(None, "rk", b"body")
    assert digest.startswith("sha:")
    assert digest == poison_key(None, "rk", b"body")
    assert digest != poison_key(None, "rk", b"other")
    assert digest != poison_key(None, "other", b"body")


def test_broker_delivery_count_reads_the_quorum_header_only() -> None:
    assert broker_delivery_count({"x-delivery-count": 3}) == 3
    assert broker_delivery_count({"x-delivery-count": "3"}) is None
    assert broker_delivery_count({"x-delivery-count": True}) is None
    assert broker_delivery_count({}) is None
    assert broker_delivery_count(None) is None


# -- handler outcomes (worker side, no I/O thread) -------------------------------------------------


@pytest.fixture
def make_consumer(telemetry: CapturedTelemetry) -> Iterator[Callable[..., ResilientConsumer]]:
    made: list[ResilientConsumer] = []

    def make(handler: Callable[[IncomingMessage], object], **kwargs: Any) -> ResilientConsumer:
        kwargs.setdefault("queue", "jobs")
        consumer = ResilientConsumer(URL, handler=handler, telemetry=telemetry,
                                     auto_start=False, **kwargs)
        made.append(consumer)
        return consumer

    yield make
    for consumer in made:
        consumer.close(timeout=0)


def deliver(consumer: ResilientConsumer, message_id: str | None = "m1", tag: int = 1,
            headers: dict[str, Any] | None = None, redelivered: bool = False,
            generation: int | None = None) -> list[tuple[str, float]]:
    """Run one delivery through the worker path, as the I/O thread would hand it over; return
    the settlements it queued (outcome, duration)."""
    key = poison_key(message_id, "rk", b"body")
    broker_count = broker_delivery_count(headers)
    count = broker_count if broker_count is not None else consumer.counter.get(key)
    message = IncomingMessage(b"body", message_id, "rk", "", redelivered, count, headers or {},
                              pika.BasicProperties(message_id=message_id, headers=headers), tag)
    gen = consumer.settlements.generation if generation is None else generation
    consumer.pool.process_inline(Delivery(tag, gen, message, key))
    settled: list[tuple[str, float]] = [
        (outcome, duration) for _d, outcome, duration in consumer.settlements.pending()]
    consumer.settlements.discard_pending()
    return settled


def failing(message: IncomingMessage) -> None:
    raise ValueError("boom")


def test_a_handler_that_returns_acks(make_consumer: Callable[..., ResilientConsumer],
                                     telemetry: CapturedTelemetry) -> None:
    seen: list[IncomingMessage] = []
    consumer = make_consumer(seen.append)
    [(outcome, duration)] = deliver(consumer)
    assert outcome == "ack"
    assert duration >= 0
    assert seen[0].body == b"body"
    assert seen[0].message_id == "m1"
    assert consumer.in_flight == 0
    assert telemetry.value("operation_duration_seconds_count", system="rabbitmq", client="consumer",
                           operation="process", outcome="success") == 1


def test_a_handler_that_raises_requeues_and_counts_a_failure(
    make_consumer: Callable[..., ResilientConsumer], telemetry: CapturedTelemetry,
) -> None:
    consumer = make_consumer(failing)
    assert deliver(consumer)[0][0] == "requeue"
    assert deliver(consumer, redelivered=True)[0][0] == "requeue"  # no limit: forever
    assert consumer.health()["consecutive_failures"] == 2
    assert telemetry.value("operation_duration_seconds_count", system="rabbitmq", client="consumer",
                           operation="process", outcome="failure") == 1
    assert telemetry.value("operation_duration_seconds_count", system="rabbitmq", client="consumer",
                           operation="process", outcome="failure_after_retry") == 1


def test_classic_poison_message_is_rejected_after_max_deliveries(
    make_consumer: Callable[..., ResilientConsumer],
) -> None:
    consumer = make_consumer(failing, max_deliveries=3)
    outcomes = [deliver(consumer, redelivered=i > 0)[0][0] for i in range(3)]
    assert outcomes == ["requeue", "requeue", "reject"]
    assert consumer.counter.get("m1") == 0  # forgotten once settled for good
    assert deliver(consumer, message_id="other")[0][0] == "requeue"  # counted per message


def test_the_quorum_delivery_count_header_decides_when_present(
    make_consumer: Callable[..., ResilientConsumer],
) -> None:
    consumer = make_consumer(failing, max_deliveries=5)
    # A restarted process knows nothing, but the broker counted 4 failed deliveries already.
    assert deliver(consumer, headers={"x-delivery-count": 4}, redelivered=True)[0][0] == "reject"


def test_reject_message_rejects_at_once(make_consumer: Callable[..., ResilientConsumer]) -> None:
    def refuse(message: IncomingMessage) -> None:
        raise RejectMessage("malformed")

    consumer = make_consumer(refuse, max_deliveries=10)
    assert deliver(consumer)[0][0] == "reject"


def test_success_after_a_failure_resets_the_count(
    make_consumer: Callable[..., ResilientConsumer],
) -> None:
    calls: list[int] = []

    def flaky(message: IncomingMessage) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("downstream blip")

    consumer = make_consumer(flaky, max_deliveries=2)
    assert deliver(consumer)[0][0] == "requeue"
    assert deliver(consumer, redelivered=True)[0][0] == "ack"
    assert consumer.counter.get("m1") == 0
    assert consumer.health()["consecutive_failures"] == 0


def test_deliveries_of_a_dead_channel_or_after_stop_are_not_handled(
    make_consumer: Callable[..., ResilientConsumer],
) -> None:
    seen: list[IncomingMessage] = []
    consumer = make_consumer(seen.append)
    consumer.settlements.new_channel()
    consumer.settlements.new_channel()
    assert consumer.settlements.generation == 2
    assert deliver(consumer, generation=1) == []  # its channel died while it waited
    consumer.pool.stop()
    assert deliver(consumer) == []
    assert seen == []
    assert consumer.in_flight == 0


def test_one_span_per_handled_message(make_consumer: Callable[..., ResilientConsumer],
                                      telemetry: CapturedTelemetry) -> None:
    consumer = make_consumer(failing, queue="orders")
    deliver(consumer, message_id="abc", redelivered=True, headers={"x-delivery-count": 1})
    [span] = [s for s in telemetry.spans() if s.name == "process orders"]
    assert span.kind is SpanKind.CONSUMER
    assert span.attributes["messaging.system"] == "rabbitmq"
    assert span.attributes["messaging.operation.type"] == "process"
    assert span.attributes["messaging.destination.name"] == "orders"
    assert span.attributes["messaging.message.id"] == "abc"
    assert span.attributes["resilient_client.settlement"] == "requeue"
    assert span.attributes["resilient_client.redelivered"] is True
    assert span.attributes["resilient_client.attempts"] == 2
    assert span.attributes["error.type"] == "ValueError"
    assert not [key for key in span.attributes if key.startswith("messaging.rabbitmq.")
                and key not in ("messaging.rabbitmq.destination.routing_key",
                                "messaging.rabbitmq.message.delivery_tag")]


# -- construction, config and health ---------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"prefetch": 0}, "prefetch"),
    ({"prefetch": 70000}, "prefetch"),
    ({"workers": 0}, "workers"),
    ({"max_deliveries": 0}, "max_deliveries"),
    ({"queue": ""}, "queue"),
    ({"poison_cache_size": 0}, "poison_cache_size"),
    ({"url": "http://nowhere"}, "url"),
])
def test_bad_arguments_fail_at_construction(kwargs: dict[str, Any], match: str,
                                            telemetry: CapturedTelemetry) -> None:
    arguments: dict[str, Any] = {"url": URL, "queue": "jobs", "handler": print,
                                 "telemetry": telemetry, "auto_start": False, **kwargs}
    with pytest.raises(ValueError, match=match):
        ResilientConsumer(**arguments)


@pytest.mark.parametrize(("queue", "passive", "topology", "declared"), [
    ("jobs", False, Topology(), (Queue("jobs"),)),
    ("jobs", True, Topology(), (Queue("jobs", passive=True),)),
    (Queue("jobs", durable=False), True, Topology(), (Queue("jobs", durable=False, passive=True),)),
    # The topology declares the named queue already: declaring it twice could conflict (406).
    ("jobs", False, Topology(queues=(Queue.quorum("jobs"),)), (Queue.quorum("jobs"),)),
    ("jobs", False, Topology(queues=(Queue("dead"),)), (Queue("dead"), Queue("jobs"))),
])
def test_the_consumers_queue_is_declared_once(
    queue: str | Queue, passive: bool, topology: Topology, declared: tuple[Queue, ...],
    telemetry: CapturedTelemetry,
) -> None:
    consumer = ResilientConsumer(URL, queue=queue, passive=passive, handler=print,
                                 topology=topology, telemetry=telemetry, auto_start=False)
    try:
        assert tuple(consumer.connection.topology.queues) == declared
        assert consumer.queue_name == "jobs"
    finally:
        consumer.close(timeout=0)


def test_a_handler_that_is_not_callable_is_a_type_error(telemetry: CapturedTelemetry) -> None:
    with pytest.raises(TypeError, match="handler"):
        ResilientConsumer(URL, queue="jobs", handler="nope",  # type: ignore[arg-type]
                          telemetry=telemetry, auto_start=False)


def test_from_env_reads_the_defaults_table(telemetry: CapturedTelemetry) -> None:
    environ = {"RABBITMQ_URL": "amqp://u:p@broker-a:5672/,amqp://u:p@broker-b:5672/",
               "RABBITMQ_PREFETCH": "7", "RABBITMQ_HEARTBEAT": "5",
               "RABBITMQ_MAX_RETRIES": "4"}
    consumer = ResilientConsumer.from_env(Queue("jobs"), print, name="worker", environ=environ,
                                          telemetry=telemetry, auto_start=False)
    try:
        assert consumer.prefetch == 7
        assert consumer.workers <= 7
        assert consumer.connection.heartbeat == 5
        assert consumer.connection.policy.max_attempts == 4
        assert len(consumer.connection.urls) == 2
        assert consumer.topology.queues[-1].name == "jobs"
    finally:
        consumer.close(timeout=0)


def test_from_env_names_a_variable_that_does_not_parse(telemetry: CapturedTelemetry) -> None:
    with pytest.raises(ConfigError, match="RABBITMQ_PREFETCH"):
        ResilientConsumer.from_env("jobs", print, environ={"RABBITMQ_PREFETCH": "lots"},
                                   telemetry=telemetry, auto_start=False)


def test_health_has_the_common_keys_and_no_password(
    make_consumer: Callable[..., ResilientConsumer], telemetry: CapturedTelemetry,
) -> None:
    consumer = make_consumer(print, prefetch=5)
    health = consumer.health()
    for key in ("system", "client", "state", "connected", "address", "last_error",
                "consecutive_failures", "circuit_breaker", "circuit_breaker_open",
                "reconnect_attempts", "queue", "in_flight", "consuming", "prefetch"):
        assert key in health
    assert health["system"] == "rabbitmq"
    assert health["queue"] == "jobs"
    assert health["consuming"] is False
    assert health["connected"] is False
    assert health["prefetch"] == 5
    assert health["address"] == "127.0.0.1:5672"
    assert "secret" not in repr(health)
    # Counters exist at zero before anything happened.
    for outcome in ("ack", "requeue", "reject"):
        assert telemetry.value("consumed_messages_total", system="rabbitmq", client="consumer",
                               outcome=outcome) == 0


def test_stop_before_start_closes_cleanly(make_consumer: Callable[..., ResilientConsumer]) -> None:
    consumer = make_consumer(print)
    consumer.close(timeout=0)
    assert consumer.wait(0)
    assert consumer.health()["state"] == "closed"
    consumer.close()  # idempotent


def test_a_retry_policy_reruns_the_handler_on_transient_errors_before_requeueing(
    make_consumer: Callable[..., ResilientConsumer],
) -> None:
    calls: list[int] = []

    def flaky(message: IncomingMessage) -> None:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("downstream blip")

    consumer = make_consumer(flaky, retry=RetryPolicy(max_attempts=3, clock=FakeClock()))
    assert deliver(consumer)[0][0] == "ack"
    assert len(calls) == 3


def test_a_retry_policy_never_reruns_a_rejected_or_permanent_failure(
    make_consumer: Callable[..., ResilientConsumer],
) -> None:
    calls: list[str] = []

    def refuses(message: IncomingMessage) -> None:
        calls.append("run")
        raise ValueError("malformed")

    consumer = make_consumer(refuses, retry=RetryPolicy(max_attempts=5, clock=FakeClock()))
    assert deliver(consumer)[0][0] == "requeue"
    assert calls == ["run"]


# -- settlement batcher ----------------------------------------------------------------------------


class Frames:
    """The frames a flush writes, in order (what a channel would send)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, bool]] = []

    def basic_ack(self, delivery_tag: int = 0, multiple: bool = False) -> None:
        self.sent.append(("ack", delivery_tag, multiple))

    def basic_nack(self, delivery_tag: int = 0, multiple: bool = False,
                   requeue: bool = True) -> None:
        self.sent.append(("nack", delivery_tag, requeue))

    def basic_reject(self, delivery_tag: int = 0, requeue: bool = True) -> None:
        self.sent.append(("reject", delivery_tag, requeue))


def delivered(batcher: SettlementBatcher, tag: int) -> Delivery:
    message = IncomingMessage(b"", f"m{tag}", "rk", "", False, 0, {}, None, tag)
    return Delivery(tag, batcher.delivered(tag), message)


def test_the_batcher_acks_a_leading_run_with_one_frame_and_settles_the_rest() -> None:
    batcher = SettlementBatcher()
    batcher.new_channel()
    deliveries = [delivered(batcher, tag) for tag in range(1, 6)]
    assert batcher.add(deliveries[0], "ack", 0.1)  # the first of a burst asks for a flush
    assert not batcher.add(deliveries[1], "ack", 0.1)
    batcher.add(deliveries[2], "requeue", 0.1)
    batcher.add(deliveries[4], "reject", 0.1)
    frames = Frames()
    sent = batcher.flush(frames)
    assert frames.sent == [("nack", 3, True), ("reject", 5, False), ("ack", 2, True)]
    assert sorted(outcome for outcome, _ in sent) == ["ack", "ack", "reject", "requeue"]
    assert batcher.add(deliveries[3], "ack", 0.1)  # flushed: the next one asks again
    batcher.flush(frames)
    assert frames.sent[-1] == ("ack", 4, False)  # alone: a multiple ack would cover nothing else
    assert batcher.stale == 0


def test_settlements_of_a_dead_channel_are_discarded_never_sent() -> None:
    batcher = SettlementBatcher()
    batcher.new_channel()
    old = delivered(batcher, 1)
    batcher.new_channel()  # the channel died; the next one numbers its tags from 1 again
    assert not batcher.is_current(old)
    new = delivered(batcher, 1)
    batcher.add(old, "ack", 0.1)
    batcher.add(new, "requeue", 0.1)
    frames = Frames()
    assert batcher.flush(frames) == [("requeue", 0.1)]
    assert frames.sent == [("nack", 1, True)]
    assert batcher.stale == 1
    batcher.add(delivered(batcher, 2), "ack", 0.1)
    assert batcher.flush(None) == []  # the channel is closed: nothing can be sent
    assert batcher.stale == 2
