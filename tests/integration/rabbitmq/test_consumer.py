"""ResilientConsumer against the real RabbitMQ on 127.0.0.1:5672 (guest/guest)."""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pytest
from opentelemetry.trace import SpanKind

from instrumented_clients.health import HealthRegistry
from instrumented_clients.rabbitmq import Exchange, Queue, Topology, default_reconnect_policy
from instrumented_clients.rabbitmq.consumer import ResilientConsumer
from instrumented_clients.rabbitmq.incoming import IncomingMessage
from instrumented_clients.resilience.breaker import CircuitBreaker
from instrumented_clients.telemetry.catalog import OUTCOMES
from instrumented_clients.testing import CapturedTelemetry, FaultProxy, wait_until

pytestmark = pytest.mark.integration

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


class Admin:
    """Plain pika for setting up and checking; never the code under test."""

    def __init__(self) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def name(self, prefix: str) -> str:
        return f"ic-consumer-{prefix}-{uuid.uuid4().hex[:10]}"

    def publish(self, queue: str, ids: list[str], body: bytes = b"payload") -> None:
        for message_id in ids:
            self.channel.basic_publish("", queue, body, pika.BasicProperties(
                message_id=message_id, delivery_mode=2))

    def message_count(self, queue: str) -> int:
        return int(self.channel.queue_declare(queue, passive=True).method.message_count)

    def drain(self, queue: str) -> list[str]:
        """Every message id left in ``queue`` (acked: this removes them)."""
        ids: list[str] = []
        while True:
            method, properties, _body = self.channel.basic_get(queue, auto_ack=True)
            if method is None:
                return ids
            ids.append(properties.message_id)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            channel = self.connection.channel()
            for queue in self.queues:
                channel.queue_delete(queue)
            for exchange in self.exchanges:
                channel.exchange_delete(exchange)
        with contextlib.suppress(Exception):
            self.connection.close()


class Handler:
    """Records what it handled; fails for ``poison`` ids, sleeps ``delay``, blocks on gates."""

    def __init__(self, poison: frozenset[str] = frozenset(), delay: float = 0.0) -> None:
        self.poison = poison
        self.delay = delay
        self.gates: dict[str, threading.Event] = {}
        self.entered: set[str] = set()
        self.calls: collections.Counter[str] = collections.Counter()
        self.done: list[str] = []
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, message: IncomingMessage) -> None:
        message_id = message.message_id or ""
        with self._lock:
            self.calls[message_id] += 1
            self.entered.add(message_id)
            self.threads.add(threading.current_thread().name)
        gate = self.gates.get(message_id)
        if gate is not None:
            gate.wait(30)
        if self.delay:
            time.sleep(self.delay)
        if message_id in self.poison:
            raise ValueError(f"cannot handle {message_id}")
        with self._lock:
            self.done.append(message_id)

    def done_set(self) -> set[str]:
        with self._lock:
            return set(self.done)


def ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i}" for i in range(count)]


@pytest.fixture
def admin() -> Iterator[Admin]:
    helper = Admin()
    yield helper
    helper.close()


@pytest.fixture
def make_consumer(telemetry: CapturedTelemetry) -> Iterator[Callable[..., ResilientConsumer]]:
    """Consumers with fast reconnects, stopped after the test; none may count an illegal
    state transition."""
    made: list[ResilientConsumer] = []

    def make(**kwargs: Any) -> ResilientConsumer:
        kwargs.setdefault("url", AMQP_URL)
        kwargs.setdefault("telemetry", telemetry)
        kwargs.setdefault("name", f"consumer{len(made)}")
        kwargs.setdefault("reconnect_policy", default_reconnect_policy(20, 0.1, 0.5))
        consumer = ResilientConsumer(**kwargs)
        made.append(consumer)
        return consumer

    yield make
    for consumer in made:
        consumer.close(timeout=5)
    for consumer in made:
        assert telemetry.value("illegal_transitions_total", system="rabbitmq",
                               client=consumer.name) == 0
        assert consumer.connection.illegal_transitions == 0


def consumed(telemetry: CapturedTelemetry, consumer: ResilientConsumer, outcome: str) -> float:
    value = telemetry.value("consumed_messages_total", system="rabbitmq", client=consumer.name,
                            outcome=outcome)
    assert value is not None
    return value


def reconnects(telemetry: CapturedTelemetry, consumer: ResilientConsumer) -> float:
    value = telemetry.value("reconnect_attempts_total", system="rabbitmq", client=consumer.name,
                            outcome="success")
    assert value is not None
    return value


def dead_letter_topology(admin: Admin, queue: Queue, dlx: str, dlq: str) -> Topology:
    admin.queues.extend([queue.name, dlq])
    admin.exchanges.append(dlx)
    return Topology(exchanges=(Exchange(dlx, "fanout", durable=False, auto_delete=False),),
                    queues=(Queue(dlq, durable=False),),
                    bindings=(_binding(dlq, dlx),))


def _binding(queue: str, exchange: str) -> Any:
    from instrumented_clients.rabbitmq import Binding

    return Binding(queue, exchange)


def test_handles_every_message_in_the_pool_and_acks_it(
    admin: Admin, make_consumer: Callable[..., ResilientConsumer],
    telemetry: CapturedTelemetry,
) -> None:
    queue = admin.name("basic")
    admin.queues.append(queue)
    handler = Handler()
    consumer = make_consumer(queue=Queue(queue, durable=False), handler=handler, prefetch=20,
                             workers=4)
    wait_until(lambda: consumer.consuming, 10)
    expected = ids("m", 200)
    admin.publish(queue, expected)

    wait_until(lambda: handler.done_set() == set(expected), 20)
    wait_until(lambda: consumed(telemetry, consumer, "ack") == 200, 10)
    assert admin.message_count(queue) == 0
    assert not any(name.startswith("rabbitmq-io") for name in handler.threads)
    assert all(name.startswith(f"consumer-{consumer.name}") for name in handler.threads)
    assert telemetry.value("operation_duration_seconds_count",
                           system="rabbitmq", client=consumer.name,
                           operation="process", outcome="success") == 200
    assert sum(telemetry.value("operation_duration_seconds_count", system="rabbitmq",
                               client=consumer.name, operation="process", outcome=outcome) or 0
               for outcome in OUTCOMES) == 200  # one duration per handler run, whatever its end
    spans = [s for s in telemetry.spans() if s.name == f"process {queue}"]
    assert len(spans) == 200
    attributes = spans[0].attributes
    assert attributes["messaging.system"] == "rabbitmq"
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["messaging.destination.name"] == queue
    assert {span.kind for span in spans} == {SpanKind.CONSUMER}
    health = consumer.health()
    assert health["queue"] == queue
    assert health["consuming"] is True
    assert health["connected"] is True
    assert health["prefetch"] == 20
    assert health["in_flight"] == 0
    assert health["state"] == "connected"
    assert "guest" not in str(health)


def test_poison_message_dead_lettered_by_quorum_delivery_limit(
    admin: Admin, make_consumer: Callable[..., ResilientConsumer],
    telemetry: CapturedTelemetry,
) -> None:
    dlx, dlq = admin.name("dlx"), admin.name("dlq")
    queue = Queue.quorum(admin.name("quorum"), dead_letter_exchange=dlx, delivery_limit=2)
    handler = Handler(poison=frozenset({"poison"}))
    consumer = make_consumer(queue=queue, handler=handler, prefetch=10,
                             topology=dead_letter_topology(admin, queue, dlx, dlq))
    wait_until(lambda: consumer.consuming, 10)
    good = ids("good", 30)
    admin.publish(queue.name, [*good[:15], "poison", *good[15:]])

    wait_until(lambda: admin.message_count(dlq) == 1, 20)
    wait_until(lambda: handler.done_set() == set(good), 10)
    assert admin.drain(dlq) == ["poison"]
    # delivery-limit 2: delivered once, returned twice, dead-lettered by the broker on the
    # third failure; the consumer itself only ever requeued.
    assert handler.calls["poison"] == 3
    wait_until(lambda: consumed(telemetry, consumer, "ack") == 30, 10)
    assert consumed(telemetry, consumer, "requeue") == 3
    assert consumed(telemetry, consumer, "reject") == 0
    assert admin.message_count(queue.name) == 0
    assert telemetry.value("operation_duration_seconds_count",
                           system="rabbitmq", client=consumer.name,
                           operation="process", outcome="failure_after_retry") == 2


def test_poison_message_rejected_to_dead_letter_exchange_on_classic_queue(
    admin: Admin, make_consumer: Callable[..., ResilientConsumer],
    telemetry: CapturedTelemetry,
) -> None:
    dlx, dlq = admin.name("dlx"), admin.name("dlq")
    queue = Queue(admin.name("classic"), durable=False,
                  arguments={"x-dead-letter-exchange": dlx})
    handler = Handler(poison=frozenset({"poison"}))
    consumer = make_consumer(queue=queue, handler=handler, prefetch=10, max_deliveries=3,
                             topology=dead_letter_topology(admin, queue, dlx, dlq))
    wait_until(lambda: consumer.consuming, 10)
    good = ids("good", 30)
    admin.publish(queue.name, [*good[:15], "poison", *good[15:]])

    wait_until(lambda: admin.message_count(dlq) == 1, 20)
    wait_until(lambda: handler.done_set() == set(good), 10)
    assert admin.drain(dlq) == ["poison"]
    assert handler.calls["poison"] == 3
    wait_until(lambda: consumed(telemetry, consumer, "ack") == 30, 10)
    assert consumed(telemetry, consumer, "requeue") == 2
    assert consumed(telemetry, consumer, "reject") == 1
    assert admin.message_count(queue.name) == 0


def test_stop_acks_finished_messages_and_leaves_the_rest_for_redelivery(
    admin: Admin, make_consumer: Callable[..., ResilientConsumer],
    telemetry: CapturedTelemetry,
) -> None:
    queue = admin.name("stop")
    admin.queues.append(queue)
    handler = Handler(delay=0.2)
    consumer = make_consumer(queue=Queue(queue, durable=False), handler=handler, prefetch=10,
                             workers=4)
    wait_until(lambda: consumer.consuming, 10)
    expected = ids("s", 60)
    admin.publish(queue, expected)
    wait_until(lambda: len(handler.done) >= 8, 20)

    consumer.close(timeout=10)
    finished = handler.done_set()
    assert len(finished) == len(handler.done)  # no message handled twice
    assert consumer.in_flight == 0
    assert consumed(telemetry, consumer, "ack") == len(finished)

    # A plain consumer reconnecting afterwards receives every unfinished message, no finished one.
    wait_until(lambda: admin.message_count(queue) == len(expected) - len(finished), 10)
    redelivered = admin.drain(queue)
    assert not set(redelivered) & finished
    assert sorted([*redelivered, *finished]) == sorted(expected)


def test_connection_cut_mid_consumption_reconnects_and_never_acks_stale_tags(
    admin: Admin, make_consumer: Callable[..., ResilientConsumer],
    telemetry: CapturedTelemetry, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    queue = admin.name("cut")
    admin.queues.append(queue)
    expected = ids("c", 300)
    gated = [expected[60], expected[180]]
    handler = Handler(delay=0.002)
    for message_id in gated:
        handler.gates[message_id] = threading.Event()
    admin.channel.queue_declare(queue, durable=True)
    admin.publish(queue, expected)
    with FaultProxy("127.0.0.1", 5672) as proxy:
        consumer = make_consumer(url=proxy.url(AMQP_URL), queue=Queue(queue), handler=handler,
                                 prefetch=50, workers=4)
        for cut, message_id in enumerate(gated, start=1):
            # The gated handler is running while its channel dies: its ack is for a dead
            # channel and must be discarded after the reconnect, not sent on the new channel.
            wait_until(lambda m=message_id: m in handler.entered, 20)
            assert proxy.cut() >= 1
            wait_until(lambda n=cut: reconnects(telemetry, consumer) >= n, 20)
            wait_until(lambda: consumer.consuming, 10)
            handler.gates[message_id].set()
        wait_until(lambda: handler.done_set() == set(expected), 40)
        wait_until(lambda: admin.message_count(queue) == 0 and consumer.in_flight == 0, 20)

    duplicates = len(handler.done) - len(set(handler.done))
    print(f"\nprocessed {len(handler.done)} for {len(expected)} messages: "
          f"{duplicates} duplicate(s) after 2 cuts, {consumer.stale_settlements} stale "
          f"settlement(s) discarded")
    assert consumer.stale_settlements >= 2  # at least the two gated ones
    assert consumer.channel_closed_by_broker == 0  # no 406 PRECONDITION_FAILED
    assert "PRECONDITION_FAILED" not in caplog.text
    assert "unknown delivery tag" not in caplog.text
    assert reconnects(telemetry, consumer) >= 2  # the first connect is not a reconnect
    assert consumed(telemetry, consumer, "ack") >= len(expected)
    # Each gated message was handled on a dead channel, then redelivered (maybe more than once:
    # a cut can also catch its redelivered copy before the ack is sent).
    assert all(handler.calls[message_id] >= 2 for message_id in gated)


def test_queue_deleted_while_consuming_is_redeclared_and_consumption_resumes(
    admin: Admin, make_consumer: Callable[..., ResilientConsumer],
    telemetry: CapturedTelemetry,
) -> None:
    queue = admin.name("deleted")
    admin.queues.append(queue)
    handler = Handler()
    consumer = make_consumer(queue=Queue(queue, durable=False), handler=handler)
    wait_until(lambda: consumer.consuming, 10)
    first, second = ids("a", 20), ids("b", 20)
    admin.publish(queue, first)
    wait_until(lambda: handler.done_set() == set(first), 10)

    admin.channel.queue_delete(queue)
    wait_until(lambda: consumer.cancellations == 1, 10)
    wait_until(lambda: consumer.consuming, 10)
    admin.publish(queue, second)

    wait_until(lambda: handler.done_set() == {*first, *second}, 10)
    assert reconnects(telemetry, consumer) == 0  # the connection stayed up
    assert consumer.channel_closed_by_broker == 0
    assert consumer.health()["cancellations"] == 1


def test_handler_blocking_three_heartbeats_keeps_the_connection(
    admin: Admin, make_consumer: Callable[..., ResilientConsumer],
    telemetry: CapturedTelemetry,
) -> None:
    queue = admin.name("slow")
    admin.queues.append(queue)
    handler = Handler()
    slow_done = threading.Event()

    def slow_handler(message: IncomingMessage) -> None:
        if message.message_id == "slow":
            time.sleep(6.0)  # 3 x heartbeat; a handler on the I/O thread would kill it
            slow_done.set()
        handler(message)

    consumer = make_consumer(queue=Queue(queue, durable=False), handler=slow_handler,
                             heartbeat=2, workers=2)
    wait_until(lambda: consumer.consuming, 10)
    admin.publish(queue, ["slow", *ids("q", 5)])
    wait_until(lambda: len(handler.done) >= 5, 10)  # the others ran meanwhile
    assert slow_done.wait(15)
    wait_until(lambda: consumed(telemetry, consumer, "ack") == 6, 10)
    assert consumer.connection.heartbeat == 2
    assert reconnects(telemetry, consumer) == 0  # no reconnect: the first connect is not one
    assert telemetry.value("connection_transitions_total", system="rabbitmq",
                           client=consumer.name, from_state="connected",
                           to_state="disconnected") in (None, 0.0)
    assert consumer.health()["connected"] is True


def test_open_breaker_pauses_consumption_instead_of_requeueing_in_a_loop(
    admin: Admin, make_consumer: Callable[..., ResilientConsumer],
    telemetry: CapturedTelemetry,
) -> None:
    queue = admin.name("breaker")
    admin.queues.append(queue)
    down = threading.Event()
    down.set()
    failures: list[str] = []
    handler = Handler()

    def needs_a_database(message: IncomingMessage) -> None:
        if down.is_set():
            failures.append(message.message_id or "")
            raise ConnectionError("database unavailable")
        handler(message)

    name = "breaker-consumer"
    breaker = CircuitBreaker(3, 1.5, name=name, system="rabbitmq", instrumentation=telemetry)
    consumer = make_consumer(queue=Queue(queue, durable=False), handler=needs_a_database,
                             name=name, prefetch=5, workers=2, breaker=breaker)
    wait_until(lambda: consumer.consuming, 10)
    expected = ids("b", 20)
    admin.publish(queue, expected)

    wait_until(lambda: consumer.health()["paused"], 10)
    health = consumer.health()
    assert health["circuit_breaker_open"] is True
    assert health["consuming"] is False
    wait_until(lambda: consumer.in_flight == 0, 10)
    # Without the breaker the requeue loop would spin thousands of times in the cool-down:
    # here the failures stop at the threshold plus what was already prefetched.
    paused_failures = len(failures)
    assert paused_failures <= 3 + 5
    down.clear()

    wait_until(lambda: handler.done_set() == set(expected), 20)  # probe, close, full speed
    wait_until(lambda: consumer.health()["circuit_breaker"] == "closed", 10)
    assert consumer.consuming
    assert len(failures) == paused_failures  # nothing failed after the dependency came back
    assert telemetry.value("circuit_breaker_transitions_total", system="rabbitmq", client=name,
                           from_state="closed", to_state="open") == 1
    assert telemetry.value("circuit_breaker_transitions_total", system="rabbitmq", client=name,
                           from_state="half_open", to_state="closed") == 1
    wait_until(lambda: admin.message_count(queue) == 0, 10)


def test_starts_while_the_broker_is_down_and_consumes_once_it_appears(
    admin: Admin, make_consumer: Callable[..., ResilientConsumer],
    telemetry: CapturedTelemetry,
) -> None:
    queue = admin.name("late")
    admin.queues.append(queue)
    admin.channel.queue_declare(queue, durable=True)
    expected = ids("l", 20)
    admin.publish(queue, expected)
    handler = Handler()
    with FaultProxy("127.0.0.1", 5672) as proxy:
        proxy.refuse()
        started = time.monotonic()
        consumer = make_consumer(url=proxy.url(AMQP_URL), queue=Queue(queue), handler=handler)
        assert time.monotonic() - started < 1.0  # required=False: never waits for the broker
        wait_until(lambda: consumer.connection.reconnect_attempts >= 2, 10)
        assert not consumer.consuming
        assert consumer.health()["last_error"]
        proxy.pass_through()
        wait_until(lambda: handler.done_set() == set(expected), 20)
    assert consumed(telemetry, consumer, "ack") == 20


def test_required_consumer_fails_start_up_when_the_broker_stays_down(
    telemetry: CapturedTelemetry,
) -> None:
    from instrumented_clients.rabbitmq import BrokerUnavailableError

    with FaultProxy("127.0.0.1", 5672) as proxy:
        proxy.refuse()
        with pytest.raises(BrokerUnavailableError, match="could not connect"):
            ResilientConsumer(proxy.url(AMQP_URL), queue="never", handler=print,
                              telemetry=telemetry, name="required", required=True,
                              reconnect_policy=default_reconnect_policy(2, 0.05, 0.1))
    assert "guest" not in str(telemetry.events)


def test_stop_leaves_a_handler_that_misses_the_deadline_unacked(
    admin: Admin, make_consumer: Callable[..., ResilientConsumer],
    telemetry: CapturedTelemetry, caplog: pytest.LogCaptureFixture,
) -> None:
    queue = admin.name("deadline")
    admin.queues.append(queue)
    handler = Handler()
    handler.gates["stuck"] = threading.Event()
    consumer = make_consumer(queue=Queue(queue, durable=False), handler=handler, workers=2)
    wait_until(lambda: consumer.consuming, 10)
    admin.publish(queue, ["stuck", "quick"])
    wait_until(lambda: "stuck" in handler.entered and "quick" in handler.done_set(), 10)

    started = time.monotonic()
    consumer.close(timeout=0.5)
    assert time.monotonic() - started < 5
    assert "1 handler(s) still running" in caplog.text
    handler.gates["stuck"].set()  # finishes after the connection is gone: never acked
    wait_until(lambda: "stuck" in handler.done_set(), 10)
    assert consumed(telemetry, consumer, "ack") == 1
    wait_until(lambda: admin.message_count(queue) == 1, 10)
    assert admin.drain(queue) == ["stuck"]


# -- a queue given by name ----------------------------------------------------------------------


def test_a_queue_given_by_name_is_declared_and_consumed(
    admin: Admin, make_consumer: Callable[..., ResilientConsumer],
) -> None:
    queue = admin.name("by-name")
    admin.queues.append(queue)
    handler = Handler()
    consumer = make_consumer(queue=queue, handler=handler)
    wait_until(lambda: consumer.consuming, 10)
    admin.publish(queue, ["first", "second"])
    wait_until(lambda: handler.done_set() == {"first", "second"}, 10)
    declared = admin.channel.queue_declare(queue, passive=True)  # exists now: no 404
    assert declared.method.queue == queue
    health = consumer.health()
    assert health["healthy"] is True
    assert health["queue_error"] is None


def test_a_passive_consumer_of_a_missing_queue_is_unhealthy_until_the_queue_exists(
    admin: Admin, make_consumer: Callable[..., ResilientConsumer],
) -> None:
    queue = admin.name("passive")
    admin.queues.append(queue)
    handler = Handler()
    consumer = make_consumer(queue=queue, passive=True, handler=handler)
    registry = HealthRegistry()
    registry.register(consumer, required=True)
    wait_until(lambda: "NOT_FOUND" in (consumer.health()["last_error"] or ""), 10)
    health = consumer.health()
    assert health["state"] != "connected"
    assert health["healthy"] is False
    assert not consumer.consuming
    report = registry.check()
    assert report["status"] == "unhealthy"
    assert not registry.ready()
    assert f"no queue '{queue}'" in report["issues"][0]
    # Passive: the consumer never created it.
    probe = admin.connection.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="NOT_FOUND"):
        probe.queue_declare(queue, passive=True)

    admin.channel.queue_declare(queue, durable=True)  # someone else creates it: consumed
    wait_until(lambda: consumer.consuming, 15)
    assert registry.ready()
    admin.publish(queue, ["late"])
    wait_until(lambda: handler.done_set() == {"late"}, 10)


def test_a_queue_deleted_under_a_passive_consumer_makes_it_unhealthy(
    admin: Admin, make_consumer: Callable[..., ResilientConsumer],
) -> None:
    queue = admin.name("deleted")
    admin.queues.append(queue)
    admin.channel.queue_declare(queue, durable=True)
    consumer = make_consumer(queue=queue, passive=True, handler=Handler())
    registry = HealthRegistry()
    registry.register(consumer, required=True)
    wait_until(lambda: consumer.consuming, 10)
    assert registry.ready()

    admin.channel.queue_delete(queue)
    wait_until(lambda: consumer.health()["queue_error"] is not None, 10)
    health = consumer.health()
    assert "NOT_FOUND" in health["queue_error"]
    assert health["connected"] is True  # the connection itself is fine
    assert health["healthy"] is False
    assert not registry.ready()

    admin.channel.queue_declare(queue, durable=True)
    wait_until(lambda: consumer.consuming, 15)
    assert consumer.health()["queue_error"] is None
    assert registry.ready()


def test_a_queue_declared_elsewhere_with_other_arguments_is_reported(
    admin: Admin, make_consumer: Callable[..., ResilientConsumer],
) -> None:
    queue = admin.name("mismatch")
    admin.queues.append(queue)
    admin.channel.queue_declare(queue, durable=False)  # the consumer would declare it durable
    consumer = make_consumer(queue=queue, handler=Handler())
    wait_until(lambda: "PRECONDITION_FAILED" in (consumer.health()["last_error"] or ""), 10)
    health = consumer.health()
    assert health["healthy"] is False
    assert health["state"] == "failed"  # a 406 does not heal by retrying
    assert not consumer.consuming
