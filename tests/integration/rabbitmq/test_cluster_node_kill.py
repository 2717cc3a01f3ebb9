"""A 3-node RabbitMQ cluster (started by the cluster script): the node a publisher and a consumer
are connected to is killed with ``kill -9`` under 1,000 persistent msg/s to a quorum queue, then
restarted. Every message id must arrive; duplicates are counted, and so is the time from the kill
to the first confirm from another node."""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future

import pika
import pytest

from instrumented_clients.rabbitmq import Queue, Topology, default_reconnect_policy
from instrumented_clients.rabbitmq.consumer import ResilientConsumer
from instrumented_clients.rabbitmq.incoming import IncomingMessage
from instrumented_clients.rabbitmq.message import PublishResult
from instrumented_clients.rabbitmq.publisher import ResilientPublisher
from instrumented_clients.resilience import CircuitBreaker
from instrumented_clients.testing import CapturedTelemetry, wait_until
from scripts.local_clusters.rabbitmq_cluster import RabbitCluster
from tests.integration.rabbitmq.conftest import PacedLoad

pytestmark = pytest.mark.integration

THREADS = 4
PER_THREAD = 5000
RATE_PER_THREAD = 250.0  # 1,000 msg/s in all
KILL_AT = 6000
RESTART_AT = 12000


def test_node_kill_under_load_loses_no_message(
    rabbit_cluster: RabbitCluster, make_publisher: Callable[..., ResilientPublisher],
    telemetry: CapturedTelemetry, caplog: pytest.LogCaptureFixture,
) -> None:
    cluster = rabbit_cluster
    queue = Queue.quorum(f"ic-cluster-{uuid.uuid4().hex[:10]}")
    topology = Topology(queues=(queue,))
    urls = cluster.urls()  # tried in this order: both clients start on node 1
    received: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def handle(message: IncomingMessage) -> None:
        with lock:
            received[message.message_id or ""] += 1

    consumer = ResilientConsumer(urls, queue=queue, handler=handle, topology=topology,
                                 name="cluster-consumer", telemetry=telemetry, prefetch=200,
                                 heartbeat=5,
                                 reconnect_policy=default_reconnect_policy(200, 0.1, 1.0))
    # A quorum queue nacks what arrives during its leader election; those nacks open the
    # breaker, whose cool-down then bounds the failover time (30 s by default): 1 s here.
    breaker = CircuitBreaker(5, 1.0, name="cluster-publisher", system="rabbitmq",
                             instrumentation=telemetry)
    publisher = make_publisher(urls, name="cluster-publisher", topology=topology, heartbeat=5,
                               breaker=breaker,
                               confirm_timeout=60, max_pending_events=THREADS * PER_THREAD,
                               reconnect_policy=default_reconnect_policy(200, 0.1, 1.0))
    try:
        wait_until(lambda: publisher.ready and consumer.consuming, 30)
        first = publisher.health()["address"]
        assert first == f"127.0.0.1:{cluster.nodes[0].amqp_port}"

        load = PacedLoad(publisher, queue.name, threads=THREADS, per_thread=PER_THREAD,
                         rate=RATE_PER_THREAD, persistent=True)
        with caplog.at_level(logging.INFO, logger="instrumented_clients"):
            load.start()
            try:
                wait_until(lambda: load.published >= KILL_AT, 30)
                victim = cluster.nodes[0]
                killed_at = time.monotonic()
                cluster.kill(victim)
                wait_until(lambda: publisher.ready and publisher.health()["address"] != first, 30,
                           interval=0.005)
                moved_at = time.monotonic()  # connected to another node by now (within 5 ms)
                wait_until(lambda: load.published >= RESTART_AT, 30)
                restarting_at = time.monotonic()
                cluster.restart(victim)
                restarted_at = time.monotonic()
            finally:
                load.join(60)
        assert not load.errors

        outcomes: collections.Counter[str] = collections.Counter()
        futures = load.futures
        pending = dict(futures)
        for _ in range(5):  # a nack or a return is reported, not lost: the caller sends again
            again: dict[str, Future[PublishResult]] = {}
            for message_id, future in pending.items():
                try:
                    outcome = future.result(90).outcome
                except Exception as exc:
                    outcome = type(exc).__name__
                outcomes[outcome] += 1
                if outcome != "ack":
                    again[message_id] = publisher.publish(
                        message_id.encode(), queue.name,
                        properties=pika.BasicProperties(message_id=message_id, delivery_mode=2))
            pending = again
            if not pending:
                break
        assert not pending, f"{len(pending)} message(s) never acked"
        expected = load.expected

        def all_received() -> bool:
            with lock:
                return expected <= received.keys()

        wait_until(all_received, 90, message=lambda: f"{len(expected - received.keys())} "
                   "message(s) not received")
        # Acks read from the dead node's socket just before it closed do not count.
        after_kill = [at for message_id, at in load.resolved_at.items()
                      if at > moved_at and futures[message_id].result().outcome == "ack"]
        resent = telemetry.value("publish_resent_total", system="rabbitmq",
                                 client="cluster-publisher")
        first_confirm = min(after_kill) - killed_at
        duplicates = sum(received.values()) - len(received)
        print(f"\nnode kill: {len(received)} ids received, {duplicates} duplicate deliveries, "
              f"outcomes {dict(outcomes)}, connected to another node "
              f"{moved_at - killed_at:.2f} s after the kill, first confirm from it "
              f"{first_confirm:.2f} s after the kill (restart began at "
              f"{restarting_at - killed_at:.2f} s, done at {restarted_at - killed_at:.2f} s), "
              f"resent {resent}")
        assert publisher.health()["address"] != first
        assert consumer.health()["address"] != first
        # The logs name the node each client moved to.
        assert f"connected to {publisher.health()['address']}" in caplog.text
    finally:
        consumer.close(timeout=5)
