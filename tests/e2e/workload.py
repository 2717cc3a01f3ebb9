"""The end-to-end workload: Redis, RabbitMQ and PostgreSQL traffic whose telemetry is scraped.

Run as ``python -m tests.e2e.workload --metrics-port P --redis-port R --rabbitmq-port Q
--postgres-port S`` with each port a :class:`FaultProxy` owned by the test, which cuts and restores
the dependencies while this process keeps working.

It drives the resilience core directly (Guard + RetryPolicy + CircuitBreaker, a
ConnectionStateMachine, an EventBuffer, Telemetry on a fresh registry) over raw redis-py, pika and
SQLAlchemy, because the real clients are built in parallel. Every block marked ``REAL CLIENT:`` is
what one client does; swapping in ``ResilientRedis`` / ``ResilientPublisher`` /
``ResilientDatabase`` replaces that block with a constructor and a call, and the telemetry they
emit is the same catalog.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
import redis
import sqlalchemy
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, start_http_server
from redis.backoff import NoBackoff
from redis.retry import Retry

from instrumented_clients.resilience import (
    CircuitBreaker,
    CircuitOpenError,
    ConnectionState,
    ConnectionStateMachine,
    ErrorCategory,
    EventBuffer,
    Guard,
    RetryBudget,
    RetryPolicy,
    classify_exception,
)
from instrumented_clients.resilience.events import (
    MessageConsumed,
    MessagesResent,
    PublishConfirmed,
    ReconnectAttempt,
    ReconnectFinished,
)
from instrumented_clients.telemetry import Telemetry

TICK = 0.05  # seconds between operations of each loop


def classify(error: BaseException) -> ErrorCategory:
    """The drivers' connection errors are transient; everything else as the core decides."""
    if isinstance(error, (redis.ConnectionError, redis.TimeoutError,
                          pika.exceptions.AMQPError,
                          sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
        return ErrorCategory.CONNECTION
    return classify_exception(error)


def transient(error: BaseException) -> bool:
    return classify(error).is_transient


COMMON = ("operations_total", "operation_duration_seconds", "retries_total",
          "retries_exhausted_total", "retry_budget_denied_total", "connection_state",
          "connection_transitions_total", "illegal_transitions_total", "reconnect_attempts_total",
          "reconnect_duration_seconds", "circuit_breaker_state",
          "circuit_breaker_transitions_total", "circuit_breaker_rejections_total")
POOL = ("pool_connections", "pool_max_connections", "pool_wait_seconds")
BROKER = ("connection_blocked", "buffer_events", "buffer_capacity_events",
          "buffered_events_total", "buffer_flushed_events_total", "buffer_dropped_events_total",
          "publish_confirms_total", "publish_resent_total", "consumed_messages_total")


def policy() -> RetryPolicy:
    return RetryPolicy(max_attempts=3, initial_delay=0.05, max_delay=0.2, classifier=classify)


class Reconnector:
    """A connection's state and reconnect cycle, reported as the clients report them."""

    def __init__(self, telemetry: Telemetry, system: str, client: str, max_failures: int = 5
                 ) -> None:
        self.telemetry = telemetry
        self.system = system
        self.client = client
        self.max_failures = max_failures
        self.state = ConnectionStateMachine(system, client, instrumentation=telemetry)
        self.failures = 0
        self.lost_at: float | None = time.monotonic()

    def lost(self) -> None:
        if self.state.state is ConnectionState.CONNECTED:
            self.state.transition(ConnectionState.DISCONNECTED, "connection lost")
            self.lost_at = time.monotonic()
            self.failures = 0

    def attempt(self, connect: Callable[[], object]) -> bool:
        """One reconnect attempt; True when connected."""
        if self.state.state is not ConnectionState.FAILED:
            self.state.transition(ConnectionState.CONNECTING)
        try:
            connect()
        except Exception as error:
            self.failures += 1
            self.telemetry.emit(ReconnectAttempt(self.system, self.client, self.failures,
                                                 "failure", classify(error).value, error))
            if self.failures >= self.max_failures:
                if self.state.state is not ConnectionState.FAILED:
                    self.state.transition(ConnectionState.FAILED, "reconnect policy spent")
            else:
                self.state.transition(ConnectionState.DISCONNECTED)
            return False
        self.telemetry.emit(ReconnectAttempt(self.system, self.client, self.failures + 1,
                                             "success"))
        self.state.transition(ConnectionState.CONNECTED)
        if self.lost_at is not None:
            self.telemetry.emit(ReconnectFinished(self.system, self.client, "success",
                                                  time.monotonic() - self.lost_at,
                                                  self.failures + 1))
        self.lost_at = None
        return True


# -- Redis ------------------------------------------------------------------------------------


def redis_loop(telemetry: Telemetry, port: int, stop: threading.Event) -> None:
    # REAL CLIENT: ResilientRedis(url=f"redis://127.0.0.1:{port}/0", name="cache",
    # telemetry=telemetry) replaces everything up to the loop, and the loop body becomes
    # client.set(key, value); client.get(key).
    system, client = "redis", "cache"
    telemetry.prepare(system, client, ("get", "set"), (*COMMON, *POOL))
    pool = redis.ConnectionPool(host="127.0.0.1", port=port, max_connections=4,
                                socket_connect_timeout=0.5, socket_timeout=0.5,
                                retry=Retry(NoBackoff(), 0))
    connection = redis.Redis(connection_pool=pool)
    breaker = CircuitBreaker(failure_threshold=3, recovery_timeout=1.0, name=client,
                             system=system, failure_on=transient, instrumentation=telemetry)
    budget = RetryBudget(ratio=0.5, min_per_second=5)
    guards = {op: Guard(policy(), breaker=breaker, budget=budget, instrumentation=telemetry,
                        system=system, client=client, operation=op) for op in ("get", "set")}
    link = Reconnector(telemetry, system, client)
    metrics = telemetry.metrics
    assert metrics is not None
    metrics["pool_max_connections"].labels(system, client).set(pool.max_connections)
    key = f"obs-e2e:{uuid.uuid4().hex}"
    try:
        while not stop.is_set():
            if link.state.state is not ConnectionState.CONNECTED:
                link.attempt(connection.ping)
            try:
                guards["set"].call(connection.set, key, str(time.time()), ex=60)
                guards["get"].call(connection.get, key)
            except CircuitOpenError:
                pass
            except Exception as error:
                if classify(error) is ErrorCategory.CONNECTION:
                    link.lost()
            # The pool's own counts (redis-py keeps them in these lists).
            in_use = len(pool._in_use_connections)
            metrics["pool_connections"].labels(system, client, "in_use").set(in_use)
            metrics["pool_connections"].labels(system, client, "idle").set(
                len(pool._available_connections))
            stop.wait(TICK)
    finally:
        with contextlib.suppress(Exception):
            connection.delete(key)
        connection.close()
        pool.disconnect()


# -- RabbitMQ ---------------------------------------------------------------------------------


class Publisher:
    """A confirmed publisher with a buffer for while the broker is away."""

    system, client = "rabbitmq", "events"

    def __init__(self, telemetry: Telemetry, port: int) -> None:
        # REAL CLIENT: ResilientPublisher(url=..., name="events", telemetry=telemetry,
        # max_pending_events=20) replaces this class; publish_event() replaces publish().
        self.telemetry = telemetry
        telemetry.prepare(self.system, self.client, ("publish", "process"), (*COMMON, *BROKER))
        self.parameters = pika.ConnectionParameters(
            host="127.0.0.1", port=port, heartbeat=5, connection_attempts=1,
            socket_timeout=1.0, blocked_connection_timeout=2.0,
            client_properties={"connection_name": "obs-e2e-workload"},
        )
        self.queue = f"obs-e2e-{uuid.uuid4().hex}"
        self.connection: Any = None
        self.channel: Any = None
        # Never FAILED in a short outage: the connection-down alert of this client stays
        # un-inhibited (Alertmanager inhibits "down" while "failed" fires for the same client).
        self.link = Reconnector(telemetry, self.system, self.client, max_failures=10**6)
        self.breaker = CircuitBreaker(failure_threshold=3, recovery_timeout=1.0,
                                      name=self.client, system=self.system,
                                      failure_on=transient, instrumentation=telemetry)
        self.publish_guard = Guard(policy().replace(max_attempts=1), breaker=self.breaker,
                                   instrumentation=telemetry, system=self.system,
                                   client=self.client, operation="publish")
        self.process_guard = Guard(policy().replace(max_attempts=1), instrumentation=telemetry,
                                   system=self.system, client=self.client, operation="process")
        self.buffered = telemetry.observe_operation(self.system, self.client, "publish")
        self.buffer: EventBuffer[bytes] = EventBuffer(
            capacity=20, system=self.system, client=self.client, instrumentation=telemetry)
        self.unconfirmed: bytes | None = None
        self.sent = 0

    def connect(self) -> None:
        connection = pika.BlockingConnection(self.parameters)
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            channel.queue_declare(self.queue, auto_delete=True, arguments={"x-expires": 60000})
        except Exception:
            connection.close()
            raise
        self.connection, self.channel = connection, channel

    def _drop_connection(self) -> None:
        connection, self.connection, self.channel = self.connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()
        self.link.lost()

    def _send(self, body: bytes, routing_key: str | None = None) -> None:
        try:
            self.channel.basic_publish("", routing_key or self.queue, body, mandatory=True)
        except pika.exceptions.UnroutableError:
            self.telemetry.emit(PublishConfirmed(self.system, self.client, "returned"))
            return
        except pika.exceptions.NackError:
            self.telemetry.emit(PublishConfirmed(self.system, self.client, "nack"))
            return
        self.telemetry.emit(PublishConfirmed(self.system, self.client, "ack"))

    def publish(self, body: bytes, routing_key: str | None = None) -> None:
        if self.channel is None:
            self.buffer.put(body)
            self.buffered.record("buffered", 0.0)
            return
        try:
            self.publish_guard.call(self._send, body, routing_key)
        except CircuitOpenError:
            self.buffer.put(body)
        except Exception as error:
            if classify(error) is not ErrorCategory.CONNECTION:
                raise
            self.unconfirmed = body  # sent, not confirmed: re-sent first after reconnect
            self._drop_connection()

    def flush(self) -> None:
        """After a reconnect: the unconfirmed message first, then the buffer."""
        if self.unconfirmed is not None:
            body, self.unconfirmed = self.unconfirmed, None
            self._send(body)
            self.telemetry.emit(MessagesResent(self.system, self.client, 1))
        for body in self.buffer.take():
            self._send(body)

    def consume_one(self) -> None:
        method, _properties, body = self.channel.basic_get(self.queue)
        if method is None:
            return
        started = time.monotonic()
        self.process_guard.call(len, body)  # the handler
        if self.sent % 17 == 0:
            self.channel.basic_reject(method.delivery_tag, requeue=False)
            outcome = "reject"
        else:
            self.channel.basic_ack(method.delivery_tag)
            outcome = "ack"
        self.telemetry.emit(MessageConsumed(self.system, self.client, outcome,
                                            time.monotonic() - started))

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                if self.channel is None and self.link.attempt(self.connect):
                    try:
                        self.flush()
                    except Exception:
                        self._drop_connection()
                self.sent += 1
                # One message in 25 goes to a routing key no queue is bound to: returned.
                unroutable = f"nowhere-{uuid.uuid4().hex}" if self.sent % 25 == 0 else None
                self.publish(f"event {self.sent}".encode(), unroutable)
                if self.channel is not None:
                    try:
                        self.consume_one()
                    except Exception:
                        self._drop_connection()
                stop.wait(TICK)
        finally:
            if self.connection is not None:
                with contextlib.suppress(Exception):
                    self.channel.queue_delete(self.queue)
                with contextlib.suppress(Exception):
                    self.connection.close()


# -- PostgreSQL -------------------------------------------------------------------------------


def sql_loop(telemetry: Telemetry, port: int, stop: threading.Event) -> None:
    # REAL CLIENT: ResilientDatabase(f"postgresql+psycopg://postgres@127.0.0.1:{port}/test",
    # name="orders", telemetry=telemetry) replaces the engine, guards and pool gauges; the loop
    # becomes db.execute("SELECT 1") and db.transaction(work).
    system, client = "postgresql", "orders"
    telemetry.prepare(system, client, ("execute", "transaction"), (*COMMON, *POOL))
    engine = sqlalchemy.create_engine(
        f"postgresql+psycopg://postgres@127.0.0.1:{port}/test", pool_size=3, max_overflow=0,
        pool_pre_ping=True, hide_parameters=True, connect_args={"connect_timeout": 2},
    )
    breaker = CircuitBreaker(failure_threshold=5, recovery_timeout=1.0, name=client,
                             system=system, failure_on=transient, instrumentation=telemetry)
    guards = {op: Guard(policy(), breaker=breaker, instrumentation=telemetry, system=system,
                        client=client, operation=op) for op in ("execute", "transaction")}
    link = Reconnector(telemetry, system, client)
    metrics = telemetry.metrics
    assert metrics is not None
    pool: Any = engine.pool
    metrics["pool_max_connections"].labels(system, client).set(pool.size())
    wait = metrics["pool_wait_seconds"].labels(system, client)

    def checkout() -> sqlalchemy.Connection:
        started = time.monotonic()
        connection = engine.connect()
        wait.observe(time.monotonic() - started)
        return connection

    def execute() -> None:
        with checkout() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))

    def transaction() -> None:
        with checkout() as connection, connection.begin():
            # Long enough that a cut of the proxy lands inside a transaction.
            connection.execute(sqlalchemy.text("SELECT pg_sleep(0.05)"))

    try:
        while not stop.is_set():
            if link.state.state is not ConnectionState.CONNECTED:
                link.attempt(execute)
            with contextlib.suppress(Exception):
                guards["execute"].call(execute)
                guards["transaction"].call(transaction)
            in_use = pool.checkedout()
            metrics["pool_connections"].labels(system, client, "in_use").set(in_use)
            metrics["pool_connections"].labels(system, client, "idle").set(pool.checkedin())
            stop.wait(TICK)
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("metrics", "redis", "rabbitmq", "postgres"):
        parser.add_argument(f"--{name}-port", type=int, required=True)
    args = parser.parse_args()
    registry = CollectorRegistry()
    # An SDK tracer provider without exporters: spans record, so latency buckets get exemplars.
    telemetry = Telemetry(registry=registry, tracer_provider=TracerProvider(), logs=False)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    publisher = Publisher(telemetry, args.rabbitmq_port)
    threads = [
        threading.Thread(target=redis_loop, args=(telemetry, args.redis_port, stop)),
        threading.Thread(target=publisher.run, args=(stop,)),
        threading.Thread(target=sql_loop, args=(telemetry, args.postgres_port, stop)),
    ]
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
        server.shutdown()
        server_thread.join(5)


if __name__ == "__main__":
    main()
