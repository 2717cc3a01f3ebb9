"""The end-to-end workload: Redis, RabbitMQ and PostgreSQL traffic through the real clients.

Run as ``python -m tests.e2e.workload --metrics-port P --redis-port R --rabbitmq-port Q
--postgres-port S`` with each port a :class:`FaultProxy` owned by the test, which cuts and restores
the dependencies while this process keeps working.

The clients are the library's own — :class:`ResilientRedis`, :class:`ResilientPublisher` with a
:class:`ResilientConsumer` on the same queue, :class:`ResilientDatabase` — on one
:class:`Telemetry` with a fresh registry, served on ``/metrics``. They are configured through
their public constructor arguments so an outage shows within seconds: a 20-message publish
buffer (overflow drops), breakers that cool down in 2 s, reconnect delays capped at 1 s.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading
import time
import uuid
from typing import Any

import redis
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client import CollectorRegistry, start_http_server
from sqlalchemy import Connection, text

from instrumented_clients.db import ResilientDatabase
from instrumented_clients.rabbitmq import (
    IncomingMessage,
    Queue,
    RejectMessage,
    ResilientConsumer,
    ResilientPublisher,
    Topology,
    default_reconnect_policy,
)
from instrumented_clients.rabbitmq.errors import is_transient_rmq_error
from instrumented_clients.redis import ResilientRedis
from instrumented_clients.redis import default_policy as redis_policy
from instrumented_clients.resilience import CircuitBreaker, RetryBudget, RetryPolicy
from instrumented_clients.telemetry import Telemetry

TICK = 0.05  # seconds between operations of each loop
COOL_DOWN = 2.0  # every breaker's recovery_timeout
RECONNECT_CAP = 1.0  # the longest delay between reconnect attempts


def redis_loop(telemetry: Telemetry, port: int, stop: threading.Event) -> None:
    """SET then GET one key, forever; the breaker opens after 3 failed calls.

    The pool is a ``BlockingConnectionPool``, the kind that can make a caller wait for a free
    connection, so the pool-wait histogram is timed (the default pool's check-out is not)."""
    pool = redis.BlockingConnectionPool.from_url(
        f"redis://127.0.0.1:{port}/0", max_connections=4, timeout=0.5,
        socket_connect_timeout=0.5, socket_timeout=0.5, health_check_interval=30,
    )
    client = ResilientRedis(
        connection_pool=pool, name="cache", telemetry=telemetry,
        policy=redis_policy(max_attempts=3, initial_delay=0.05, max_delay=0.2),
        budget=RetryBudget(ratio=0.5, min_per_second=5),
        failure_threshold=3, recovery_timeout=COOL_DOWN, retry_writes=True,
    )
    key = f"obs-e2e:{uuid.uuid4().hex}"
    try:
        with client:
            while not stop.is_set():
                with contextlib.suppress(Exception):  # failures are what the telemetry shows
                    client.set(key, str(time.time()), ex=60)
                    client.get(key)
                stop.wait(TICK)
            with contextlib.suppress(Exception):
                client.delete(key)
    finally:
        pool.disconnect()


class Broker:
    """A confirmed publisher and a consumer of the same queue, on one broker."""

    def __init__(self, telemetry: Telemetry, port: int) -> None:
        url = f"amqp://guest:guest@127.0.0.1:{port}/"
        self.queue = f"obs-e2e-{uuid.uuid4().hex}"
        # Expires a minute after the last consumer left: nothing lingers if the test is killed.
        topology = Topology(queues=(Queue(self.queue, durable=False,
                                          arguments={"x-expires": 60_000}),))
        # Never FAILED in a short outage: the connection-down alert of these clients stays
        # un-inhibited (Alertmanager inhibits "down" while "failed" fires for the same client).
        def reconnect() -> RetryPolicy:
            return default_reconnect_policy(max_retries=10**6, retry_delay=0.2,
                                            retry_max_delay=RECONNECT_CAP)

        self.publisher = ResilientPublisher(
            url, name="events", telemetry=telemetry, topology=topology,
            reconnect_policy=reconnect(), heartbeat=5, connect_timeout=1.0,
            confirm_timeout=10.0, max_pending_events=20,
            breaker=CircuitBreaker(3, COOL_DOWN, failure_on=is_transient_rmq_error,
                                   name="events", system="rabbitmq",
                                   instrumentation=telemetry),
        )
        self.consumer = ResilientConsumer(
            url, queue=self.queue, handler=self.handle, name="events-worker",
            telemetry=telemetry, topology=topology, prefetch=10, workers=2,
            reconnect_policy=reconnect(), heartbeat=5, connect_timeout=1.0,
        )

    @staticmethod
    def handle(message: IncomingMessage) -> None:
        """Ack, except one message in 17, which is rejected (a 'poison' message)."""
        if int(message.body.split()[-1]) % 17 == 0:
            raise RejectMessage("poison")

    def run(self, stop: threading.Event) -> None:
        sent = 0
        while not stop.is_set():
            sent += 1
            # One message in 25 goes to a routing key no queue is bound to: returned.
            routing_key = f"nowhere-{uuid.uuid4().hex}" if sent % 25 == 0 else self.queue
            self.publisher.publish(f"event {sent}".encode(), routing_key)
            stop.wait(TICK)

    def close(self) -> None:
        self.consumer.close(5)
        self.publisher.close(5)


def sql_loop(telemetry: Telemetry, port: int, stop: threading.Event) -> None:
    """A SELECT and a short transaction on a table of its own, forever."""
    database = ResilientDatabase(
        f"postgresql+psycopg://postgres@127.0.0.1:{port}/test", name="orders",
        telemetry=telemetry,
        policy=RetryPolicy(max_attempts=3, initial_delay=0.05, max_delay=0.2),
        breaker=CircuitBreaker(5, COOL_DOWN, name="orders", system="postgresql",
                               instrumentation=telemetry),
        # One pooled connection and a second thread that wants it now and then: a checkout that
        # waits for a full pool is what pool_wait_seconds times.
        engine_options={"pool_size": 1, "max_overflow": 0,
                        "connect_args": {"connect_timeout": 2}},
    )
    table = f"obs_e2e_{uuid.uuid4().hex}"

    def work(connection: Connection) -> None:
        connection.execute(text(f"INSERT INTO {table} (at) VALUES (now())"))
        # Long enough that a cut of the proxy lands inside a transaction.
        connection.execute(text("SELECT pg_sleep(0.05)"))

    def contend() -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):
                database.execute("SELECT 1")
            stop.wait(TICK)

    with database:
        database.connect_with_retry(required=False)
        database.execute(f"CREATE TABLE IF NOT EXISTS {table} (id serial PRIMARY KEY, "
                         "at timestamptz NOT NULL)")
        contender = threading.Thread(target=contend, daemon=True)
        contender.start()
        try:
            while not stop.is_set():
                with contextlib.suppress(Exception):
                    database.execute("SELECT 1")
                    database.transaction(work)
                stop.wait(TICK)
        finally:
            contender.join(10)
            with contextlib.suppress(Exception):
                database.execute(f"DROP TABLE IF EXISTS {table}")


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("metrics", "redis", "rabbitmq", "postgres"):
        parser.add_argument(f"--{name}-port", type=int, required=True)
    parser.add_argument("--otlp-endpoint", help="an OTLP/HTTP traces URL to export spans to")
    args = parser.parse_args()
    registry = CollectorRegistry()
    # Spans record, so latency buckets get exemplars; exported (when asked) so that a trace id
    # in an exemplar can be looked up. A queue large enough that no span is dropped.
    provider = TracerProvider()
    if args.otlp_endpoint:
        provider.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(endpoint=args.otlp_endpoint), max_queue_size=65536,
            schedule_delay_millis=1000))
    telemetry = Telemetry(registry=registry, tracer_provider=provider, logs=False)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    broker = Broker(telemetry, args.rabbitmq_port)
    threads: list[threading.Thread] = [
        threading.Thread(target=redis_loop, args=(telemetry, args.redis_port, stop)),
        threading.Thread(target=broker.run, args=(stop,)),
        threading.Thread(target=sql_loop, args=(telemetry, args.postgres_port, stop)),
    ]
    server: Any
    server, server_thread = start_http_server(args.metrics_port, addr="127.0.0.1",
                                              registry=registry)
    for thread in threads:
        thread.start()
    print("ready", flush=True)
    try:
        while not stop.wait(0.2):
            pass
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        broker.close()
        server.shutdown()
        server_thread.join(5)


if __name__ == "__main__":
    main()
