"""Fixtures for tests against the real RabbitMQ on 127.0.0.1:5672 (guest/guest)."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pika
import pytest

from instrumented_clients.rabbitmq import default_reconnect_policy
from instrumented_clients.rabbitmq.message import PublishResult
from instrumented_clients.rabbitmq.publisher import ResilientPublisher
from instrumented_clients.testing import CapturedTelemetry, FaultProxy, wait_until
from instrumented_clients.testing import free_port as port_outside_ephemeral_range
from scripts.local_clusters.rabbitmq_cluster import RabbitCluster

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


class Admin:
    """A plain pika BlockingConnection for setting up and checking, never the code under test."""

    def __init__(self) -> None:
        self.queues: list[str] = []
        self.exchanges: list[str] = []
        self._connection: Any = None
        self._channel: Any = None

    @property
    def channel(self) -> Any:
        if self._connection is None or not self._connection.is_open:
            self._connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
            self._channel = None
        if self._channel is None or not self._channel.is_open:
            self._channel = self._connection.channel()
        return self._channel

    def name(self, prefix: str) -> str:
        return f"ic-test-{prefix}-{uuid.uuid4().hex[:10]}"

    def queue(self, prefix: str, *, quorum: bool = False, declare: bool = True) -> str:
        name = self.name(prefix)
        self.queues.append(name)
        if declare:
            arguments = {"x-queue-type": "quorum"} if quorum else None
            self.channel.queue_declare(name, durable=True, arguments=arguments)
        return name

    def exchange_name(self, prefix: str) -> str:
        name = self.name(prefix)
        self.exchanges.append(name)
        return name

    def message_count(self, queue: str) -> int:
        return int(self.channel.queue_declare(queue, passive=True).method.message_count)

    def reconnect(self) -> None:
        """Open a fresh connection (after a broker restart killed the old one)."""
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
        self._connection = None

    def drain(self, queue: str, expected: int, timeout: float = 30.0,
              until_ids: set[str] | None = None) -> list[tuple[str, bytes]]:
        """Consume until ``expected`` messages arrived (or every id of ``until_ids`` was seen),
        or nothing came for 3 s, or ``timeout`` passed."""
        received: list[tuple[str, bytes]] = []
        seen: set[str] = set()
        channel = self.channel
        channel.basic_qos(prefetch_count=1000)
        deadline = time.monotonic() + timeout
        for method, properties, body in channel.consume(queue, inactivity_timeout=3.0):
            if method is None:
                break
            received.append((properties.message_id, body))
            seen.add(properties.message_id)
            done = len(received) >= expected or (until_ids is not None and until_ids <= seen)
            if len(received) % 500 == 0 or done:
                channel.basic_ack(method.delivery_tag, multiple=True)
            if done or time.monotonic() > deadline:
                break
        channel.cancel()
        return received

    def close(self) -> None:
        for queue in self.queues:
            with contextlib.suppress(Exception):
                self.channel.queue_delete(queue)  # `channel` reopens what an error closed
        for exchange in self.exchanges:
            with contextlib.suppress(Exception):
                self.channel.exchange_delete(exchange)
        if self._connection is not None and self._connection.is_open:
            with contextlib.suppress(Exception):
                self._connection.close()


@pytest.fixture
def admin() -> Iterator[Admin]:
    helper = Admin()
    yield helper
    helper.close()


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    fault_proxy = FaultProxy("127.0.0.1", 5672, listen_port=port_outside_ephemeral_range())
    with fault_proxy:
        yield fault_proxy


@pytest.fixture
def make_publisher(
    telemetry: CapturedTelemetry,
) -> Iterator[Callable[..., ResilientPublisher]]:
    """Build publishers with fast reconnects; all are closed after the test."""
    made: list[ResilientPublisher] = []

    def make(url: str = AMQP_URL, **kwargs: Any) -> ResilientPublisher:
        kwargs.setdefault("telemetry", telemetry)
        kwargs.setdefault("name", "test")
        kwargs.setdefault("reconnect_policy", default_reconnect_policy(20, 0.1, 0.5))
        publisher = ResilientPublisher(url, **kwargs)
        made.append(publisher)
        return publisher

    yield make
    for publisher in made:
        publisher.close(timeout=2)


@pytest.fixture(autouse=True)
def no_illegal_transitions(telemetry: CapturedTelemetry) -> Iterator[None]:
    """Every test ends with no illegal state transition counted."""
    yield
    assert telemetry.registry is not None
    total = sum(
        sample.value
        for metric in telemetry.registry.collect()
        if metric.name.endswith("illegal_transitions")
        for sample in metric.samples
        if sample.name.endswith("_total")
    )
    assert total == 0, f"{total} illegal state transition(s) counted"


@contextlib.contextmanager
def broker_stopped() -> Iterator[None]:
    """``rabbitmqctl stop_app`` now, ``start_app`` on exit, always."""
    subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True, timeout=60)
    try:
        yield
    finally:
        subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True,
                       timeout=120)
        subprocess.run(["rabbitmqctl", "await_startup"], capture_output=True, timeout=120)


def connected(publisher: ResilientPublisher) -> bool:
    return publisher.ready


def wait_connected(publisher: ResilientPublisher, timeout: float = 10.0) -> None:
    wait_until(lambda: connected(publisher), timeout,
               message=lambda: f"publisher not connected: {publisher.health()}")


@pytest.fixture(scope="session")
def rabbit_cluster() -> Iterator[RabbitCluster]:
    """Three RabbitMQ nodes clustered on ports of their own, once per session."""
    cluster = RabbitCluster(Path(tempfile.mkdtemp(prefix="ic-rabbit-cluster-")))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


class PacedLoad:
    """``threads`` producers, each publishing ``per_thread`` messages (ids ``"<thread>-<i>"``) at
    ``rate`` msg/s; records every future, when it resolved, and any error a producer met."""

    def __init__(self, publisher: ResilientPublisher, routing_key: str, *, threads: int,
                 per_thread: int, rate: float, persistent: bool = False) -> None:
        self.publisher = publisher
        self.routing_key = routing_key
        self.per_thread = per_thread
        self.rate = rate
        self.delivery_mode = 2 if persistent else None
        self.futures: dict[str, Future[PublishResult]] = {}
        self.resolved_at: dict[str, float] = {}
        self.errors: list[BaseException] = []
        self._published = 0
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._produce, args=(t,))
                         for t in range(threads)]
        self.expected = {f"{t}-{i}" for t in range(threads) for i in range(per_thread)}

    @property
    def published(self) -> int:
        with self._lock:
            return self._published

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self, timeout: float = 60) -> None:
        for thread in self._threads:
            thread.join(timeout)

    def _produce(self, thread: int) -> None:
        started = time.monotonic()
        try:
            for i in range(self.per_thread):
                delay = started + i / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # pacing the workload, not waiting for a condition
                message_id = f"{thread}-{i}"
                future = self.publisher.publish(
                    message_id.encode(), self.routing_key,
                    properties=pika.BasicProperties(message_id=message_id,
                                                    delivery_mode=self.delivery_mode))
                future.add_done_callback(lambda _, message_id=message_id: self.resolved_at
                                         .setdefault(message_id, time.monotonic()))
                self.futures[message_id] = future
                with self._lock:
                    self._published += 1
        except BaseException as exc:  # reported by the test thread
            self.errors.append(exc)
