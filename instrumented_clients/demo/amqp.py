"""The RabbitMQ adapters of the demo: a publisher that buffers while the broker is away and a
consumer, each owning one pika ``BlockingConnection`` on one thread (pika is not thread-safe).

They stand in for ``ResilientPublisher(url, name=..., required=False)`` and ``ResilientConsumer``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from instrumented_clients.demo.adapters import Dependency, Order, legible
from instrumented_clients.demo.probes import (
    classify_driver_error,
    describe_error,
    display_address,
    rabbitmq_parameters,
)
from instrumented_clients.demo.settings import Settings
from instrumented_clients.resilience import ConnectionState, EventBuffer, Guard, RetryPolicy
from instrumented_clients.resilience import events as ev
from instrumented_clients.telemetry import Telemetry

__all__ = ["DemoConsumer", "DemoPublisher", "Topology"]

_log = logging.getLogger("instrumented_clients.demo")


class Topology:
    """The exchange, queue and binding the demo's publisher and consumer both declare."""

    def __init__(self, prefix: str, routing_key: str = "order.created") -> None:
        self.exchange = prefix
        self.queue = f"{prefix}.orders"
        self.routing_key = routing_key

    def declare(self, channel: Any) -> None:
        channel.exchange_declare(self.exchange, "topic", durable=True, auto_delete=True)
        # A durable queue that the broker deletes after ten idle minutes: a demo leaves no litter.
        channel.queue_declare(self.queue, durable=True, arguments={"x-expires": 600_000})
        channel.queue_bind(self.queue, self.exchange, routing_key=self.routing_key)


class _AmqpWorker(Dependency):
    """One pika ``BlockingConnection`` owned by one thread, reconnecting with the policy's
    backoff: FAILED once the policy is spent, then attempts continue at the cap interval."""

    def __init__(self, urls: list[str], name: str, *, required: bool, settings: Settings,
                 telemetry: Telemetry, topology: Topology, breaker_cooldown: float,
                 operations: tuple[str, ...], heartbeat: int | None = None) -> None:
        super().__init__(name, "rabbitmq", display_address(urls[0]), required=required,
                         telemetry=telemetry, breaker_cooldown=breaker_cooldown,
                         operations=operations)
        self._urls = urls
        self._policy = settings.rabbitmq_reconnect_policy(classify_driver_error)
        self._connect_timeout = settings.rabbitmq_connect_timeout
        self._heartbeat = settings.rabbitmq_heartbeat if heartbeat is None else heartbeat
        self.topology = topology
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._connection: Any = None
        self._channel: Any = None
        self.blocked = False
        self._thread = threading.Thread(target=self._run, name=f"amqp-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _connect(self) -> None:
        import pika

        url = self._urls[self.reconnect_attempts % len(self._urls)]
        if self.state is not ConnectionState.FAILED:  # FAILED holds until an attempt succeeds
            self._move(ConnectionState.CONNECTING)
        connection = pika.BlockingConnection(rabbitmq_parameters(
            url, self._connect_timeout, self._heartbeat, f"instrumented-clients demo {self.name}"))
        try:
            connection.add_on_connection_blocked_callback(self._on_blocked)
            connection.add_on_connection_unblocked_callback(self._on_unblocked)
            channel = connection.channel()
            self.topology.declare(channel)
            self._on_channel(channel)
        except Exception:
            with contextlib.suppress(Exception):
                connection.close()
            raise
        self._connection, self._channel = connection, channel
        self.address = display_address(url)

    def _on_channel(self, channel: Any) -> None:
        """Set the channel up (confirms, QoS) after the topology is declared."""

    def _on_blocked(self, _connection: Any, frame: Any) -> None:
        reason = getattr(getattr(frame, "method", None), "reason", None)
        self.blocked = True
        self.telemetry.emit(ev.ConnectionBlocked(self.system, self.name, True, reason))

    def _on_unblocked(self, _connection: Any, _frame: Any) -> None:
        self.blocked = False
        self.telemetry.emit(ev.ConnectionBlocked(self.system, self.name, False))

    def _work(self) -> None:
        """One turn of work on a live connection; raising drops the connection."""
        raise NotImplementedError

    def _disconnect(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()

    def _run(self) -> None:
        previous: float | None = None
        max_retries = self._policy.max_attempts - 1
        while not self._stop.is_set():
            if self._connection is None:
                try:
                    self._connect()
                except Exception as error:
                    previous = self._after_connect_failure(error, previous, max_retries)
                    self._wake.wait(previous)
                    self._wake.clear()
                    continue
                previous = None
                self._mark_up()
            try:
                self._work()
            except Exception as error:
                self.last_error = describe_error(error)
                self.consecutive_failures += 1
                if self.state is ConnectionState.CONNECTED:
                    self._down_since = time.monotonic()
                self._move(ConnectionState.DISCONNECTED, self.last_error)
                self._disconnect()
                self._on_down()
        self._disconnect()

    def _after_connect_failure(self, error: BaseException, previous: float | None,
                               max_retries: int) -> float:
        """Count and report a failed attempt; returns the delay before the next one."""
        category = classify_driver_error(error)
        self.last_error = describe_error(error)
        self.consecutive_failures += 1
        self.reconnect_attempts += 1
        attempts = self.reconnect_attempts
        spent = self.state is ConnectionState.FAILED or attempts >= max_retries
        # Once the policy is spent, attempts continue at the cap interval (DESIGN: FAILED).
        delay = self._policy.max_delay if spent else self._policy.backoff(attempts, previous)
        self.telemetry.emit(ev.ReconnectAttempt(self.system, self.name, attempts, "failure",
                                                category.value, legible(error), delay))
        if spent and self.state is not ConnectionState.FAILED:
            self._move(ConnectionState.FAILED, self.last_error)
            if self._down_since is not None:
                self.telemetry.emit(ev.ReconnectFinished(
                    self.system, self.name, "failure", time.monotonic() - self._down_since,
                    attempts))
        elif not spent:
            self._move(ConnectionState.DISCONNECTED, self.last_error)
        self._on_down()
        return delay

    def _on_down(self) -> None:
        """Called each time the connection is found down."""

    def reconnect_now(self) -> None:
        """Cut the current backoff wait short (at shutdown, to flush while there is time)."""
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=3)  # a connect in progress may take RABBITMQ_CONNECT_TIMEOUT
        super().close()


class DemoPublisher(_AmqpWorker):
    """Stands in for ``ResilientPublisher(url, name=..., required=False)``.

    ``publish`` never raises and never blocks on the network: while the broker is away events
    wait in a bounded :class:`EventBuffer` (``RABBITMQ_MAX_PENDING_EVENTS``); after a reconnect the
    buffer is flushed first, with publisher confirms.
    """

    def __init__(self, urls: list[str], *, name: str = "order-events", required: bool = False,
                 settings: Settings, telemetry: Telemetry, topology: Topology,
                 breaker_cooldown: float = 5.0, heartbeat: int | None = None) -> None:
        super().__init__(urls, name, required=required, settings=settings, telemetry=telemetry,
                         topology=topology, breaker_cooldown=breaker_cooldown,
                         operations=("publish",), heartbeat=heartbeat)
        self.buffer: EventBuffer[Order] = EventBuffer(
            settings.rabbitmq_max_pending_events, system="rabbitmq", client=name,
            instrumentation=telemetry)
        self._outbound: queue.Queue[Order] = queue.Queue()
        self._buffered_recorder = telemetry.observe_operation("rabbitmq", name, "publish")
        self._guard = Guard(RetryPolicy(max_attempts=1, classifier=classify_driver_error),
                            breaker=self.breaker, instrumentation=telemetry, system="rabbitmq",
                            client=name, operation="publish",
                            span_name=f"publish {topology.exchange}")
        self.confirmed = 0
        self.returned = 0
        telemetry.emit(ev.EventBuffered("rabbitmq", name, 0, self.buffer.capacity))

    def publish(self, event: Order) -> None:
        """Hand ``event`` to the I/O thread, or buffer it while the broker is unreachable."""
        if self.state is ConnectionState.CONNECTED and not self._stop.is_set():
            self._outbound.put(event)
        else:
            self.buffer.put(event)
            self._buffered_recorder.record("buffered", 0.0)

    def step(self, order: Order) -> None:
        self.publish(order)

    @property
    def pending(self) -> int:
        return len(self.buffer) + self._outbound.qsize()

    def _on_channel(self, channel: Any) -> None:
        channel.confirm_delivery()

    def _send(self, event: Order) -> None:
        import pika
        from pika.exceptions import NackError, UnroutableError

        properties = pika.BasicProperties(content_type="application/json", delivery_mode=2,
                                          message_id=event["id"], type="order.created")
        body = json.dumps(event).encode()
        try:
            self._guard.call(self._channel.basic_publish, self.topology.exchange,
                             self.topology.routing_key, body, properties, True)
        except UnroutableError:
            self.returned += 1  # reported, never re-sent (DESIGN: returned messages)
            self.telemetry.emit(ev.PublishConfirmed("rabbitmq", self.name, "returned"))
            return
        except NackError:
            self.telemetry.emit(ev.PublishConfirmed("rabbitmq", self.name, "nack"))
            raise
        self.confirmed += 1
        self.telemetry.emit(ev.PublishConfirmed("rabbitmq", self.name, "ack"))

    def _work(self) -> None:
        batch = self.buffer.take(100)
        for index, event in enumerate(batch):
            try:
                self._send(event)
            except Exception:
                self.buffer.restore(batch[index:])
                raise
        try:
            event = self._outbound.get(timeout=0 if batch else 0.05)
        except queue.Empty:
            self._connection.process_data_events(time_limit=0)
            return
        try:
            self._send(event)
        except Exception:
            self.buffer.put(event)
            raise
        self._connection.process_data_events(time_limit=0)

    def _on_down(self) -> None:
        # Live events that raced the disconnect move to the buffer, so "pending" is exact.
        while True:
            try:
                event = self._outbound.get_nowait()
            except queue.Empty:
                return
            self.buffer.put(event)

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every pending event to be confirmed."""
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.05)
        return self.pending == 0

    def close(self) -> None:
        super().close()
        self._on_down()
        lost = self.buffer.drain_for_shutdown()
        if lost:
            _log.warning("%s: %d event(s) still buffered at shutdown were dropped", self.name,
                         len(lost))

    def _extra_health(self) -> dict[str, Any]:
        stats = self.buffer.stats()
        return {"blocked": self.blocked, "pending_events": self.pending,
                "buffer_capacity": stats.capacity, "dropped_events": stats.dropped_total,
                "confirmed": self.confirmed, "returned": self.returned}


class DemoConsumer(_AmqpWorker):
    """Stands in for ``ResilientConsumer``: consumes the order events and acks each one after its
    handler ran; a handler that raises rejects the message."""

    def __init__(self, urls: list[str], handler: Callable[[Order], None], *,
                 name: str = "order-consumer", required: bool = False, settings: Settings,
                 telemetry: Telemetry, topology: Topology, breaker_cooldown: float = 5.0,
                 heartbeat: int | None = None) -> None:
        super().__init__(urls, name, required=required, settings=settings, telemetry=telemetry,
                         topology=topology, breaker_cooldown=breaker_cooldown,
                         operations=("process",), heartbeat=heartbeat)
        self._handler = handler
        self._prefetch = settings.rabbitmq_prefetch
        self.consumed = 0

    def _on_channel(self, channel: Any) -> None:
        channel.basic_qos(prefetch_count=self._prefetch)

    def _work(self) -> None:
        channel = self._channel
        for method, _properties, body in channel.consume(self.topology.queue,
                                                          inactivity_timeout=0.2):
            if method is None or self._stop.is_set():
                break
            started = time.monotonic()
            try:
                self._handler(json.loads(body))
            except Exception as error:
                _log.warning("%s: handler failed, message rejected: %s", self.name,
                             describe_error(error))
                channel.basic_reject(method.delivery_tag, requeue=False)
                self.telemetry.emit(ev.MessageConsumed("rabbitmq", self.name, "reject",
                                                       time.monotonic() - started))
                continue
            channel.basic_ack(method.delivery_tag)
            self.consumed += 1
            self.telemetry.emit(ev.MessageConsumed("rabbitmq", self.name, "ack",
                                                   time.monotonic() - started))
        if self._stop.is_set():
            with contextlib.suppress(Exception):
                channel.cancel()

    def _extra_health(self) -> dict[str, Any]:
        return {"blocked": self.blocked, "consumed": self.consumed, "queue": self.topology.queue}
