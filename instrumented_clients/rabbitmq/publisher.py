"""``ResilientPublisher``: confirmed, pipelined, buffered publishing that survives broker outages.

Threading: :meth:`ResilientPublisher.publish` may be called from any thread. It validates the
message, writes it to the spool (when one is configured), appends it to an in-memory inbox and
wakes the I/O thread (one wake-up per burst). Everything else — routing a message to the channel
or to the bounded buffer, confirms, returns, re-sends, timeouts — happens on the I/O thread that
owns the connection (:class:`~instrumented_clients.rabbitmq.connection.RabbitConnection`).

Order of sending on the I/O thread: unconfirmed messages of a lost connection (delivery-tag
order), then the buffer, then live publishes. A message's future resolves on the I/O thread, so
its done-callbacks run there: keep them short.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from datetime import datetime, timezone
from typing import Any, Literal

import pika

from instrumented_clients.client import resolve_breaker, resolve_retry
from instrumented_clients.rabbitmq.connection import (
    RabbitConnection,
    default_reconnect_policy,
)
from instrumented_clients.rabbitmq.delivery import PublisherDelivery
from instrumented_clients.rabbitmq.errors import (
    NotConnectedError,
    PublisherClosedError,
    PublishNackedError,
    PublishTimeoutError,
    UnroutableError,
    classify,
    is_transient_rmq_error,
)
from instrumented_clients.rabbitmq.message import (
    OutgoingMessage,
    PublishResult,
    build_properties,
    properties_to_dict,
)
from instrumented_clients.rabbitmq.publisher_config import PublisherConfigMixin
from instrumented_clients.rabbitmq.spool import SpooledMessages
from instrumented_clients.rabbitmq.topology import Topology
from instrumented_clients.rabbitmq.tracing import (
    end_span,
    inject_current,
    publish_sync_attributes,
    start_create,
)
from instrumented_clients.resilience.breaker import CircuitBreaker
from instrumented_clients.resilience.buffer import EventBuffer, OverflowPolicy
from instrumented_clients.resilience.clock import SYSTEM_CLOCK, Clock
from instrumented_clients.resilience.context import ClientContext
from instrumented_clients.resilience.errors import BufferFullError
from instrumented_clients.resilience.retry import Guard, RetryPolicy
from instrumented_clients.telemetry.conventions import SEND, rabbitmq_span_name
from instrumented_clients.telemetry.core import Telemetry, get_default_telemetry
from instrumented_clients.telemetry.otel import exception_type

__all__ = ["ResilientPublisher", "default_publish_policy"]

_log = logging.getLogger(__name__)
SYSTEM = "rabbitmq"
_BYTES = (bytes, bytearray, memoryview)
_FAMILIES = (
    "operation_duration_seconds", "retries_total", "retries_exhausted_total",
    "connection_state", "connection_transitions_total", "illegal_transitions_total",
    "reconnect_attempts_total", "reconnect_duration_seconds", "connection_blocked",
    "circuit_breaker_state", "circuit_breaker_rejections_total", "buffer_events",
    "buffer_capacity_events", "buffered_events_total", "buffer_flushed_events_total",
    "buffer_dropped_events_total", "publish_confirms_total", "publish_resent_total",
)


def default_publish_policy(clock: Clock = SYSTEM_CLOCK) -> RetryPolicy:
    """The blocking form's publish retry: 3 attempts, 0.5 s doubling, 5 s cap."""
    return RetryPolicy(max_attempts=3, initial_delay=0.5, max_delay=5.0, classifier=classify,
                       clock=clock)


class ResilientPublisher(PublisherDelivery, PublisherConfigMixin):
    """Publish to RabbitMQ with confirms, buffering, re-sends after reconnects and telemetry.

    Args:
        url: broker URL(s), comma-separated or a sequence; tried in turn.
        name: the ``client`` label and the connection's ``connection_name``.
        telemetry: where metrics, spans and logs go (default: the package's).
        topology: exchanges/queues/bindings declared on every (re)connect.
        required: wait in the constructor until connected; raise
            :class:`~instrumented_clients.rabbitmq.errors.BrokerUnavailableError` once the
            reconnect policy is spent. False (default): the constructor never waits.
        reconnect_policy: reconnect attempts before FAILED (default 10, 1 s -> 30 s).
        heartbeat, connect_timeout, stack_timeout, blocked_connection_timeout: pika settings.
        max_in_flight: unconfirmed messages at most (the confirm window).
        confirm_timeout: seconds after sending before an unconfirmed message resolves as
            ``timeout``.
        max_pending_events: buffer capacity (messages waiting for the broker).
        overflow: ``drop_oldest`` (default), ``drop_newest``, ``block`` (publish waits up to
            ``block_timeout`` for room, then raises ``BufferFullError``) or ``raise``.
        on_drop: ``on_drop(message, reason)`` for every dropped message.
        publish_policy: the blocking form's retry (default: 3 attempts, 0.5 s doubling, cap 5 s).
        retry: the same as ``publish_policy`` (``False``: one attempt), the name every client
            shares.
        breaker: None (default): a breaker that opens after ``failure_threshold`` consecutive
            transient failures for ``recovery_timeout`` seconds; ``False``: none; or that one.
        failure_threshold, recovery_timeout: the default breaker's settings (5, 30 s).
        persistent: delivery mode 2 unless the caller's properties say otherwise.
        serializer: turns a non-bytes body into bytes; without one a non-bytes body is a
            TypeError.
        spool_path: SQLite file that keeps buffered and unconfirmed messages across a crash.
        event_exchange: exchange of :meth:`publish_event`.
        clock: time source.
    """

    def __init__(
        self,
        url: str | Sequence[str] = "amqp://guest:guest@localhost:5672/",
        *,
        name: str = "publisher",
        telemetry: Telemetry | None = None,
        topology: Topology | None = None,
        required: bool = False,
        reconnect_policy: RetryPolicy | None = None,
        heartbeat: float = 60.0,
        connect_timeout: float = 10.0,
        stack_timeout: float | None = None,
        blocked_connection_timeout: float | None = None,
        connection_name: str | None = None,
        max_in_flight: int = 1000,
        confirm_timeout: float = 30.0,
        max_pending_events: int = 1000,
        overflow: OverflowPolicy | str = OverflowPolicy.DROP_OLDEST,
        block_timeout: float = 5.0,
        on_drop: Callable[[OutgoingMessage, str], object] | None = None,
        publish_policy: RetryPolicy | None = None,
        retry: RetryPolicy | Literal[False] | None = None,
        breaker: CircuitBreaker | Literal[False] | None = None,
        failure_threshold: int = 5,
        recovery_timeout: float = 30.0,
        persistent: bool = True,
        serializer: Callable[[Any], bytes] | None = None,
        spool_path: str | None = None,
        event_exchange: str = "",
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) \
                or max_in_flight < 1:
            raise ValueError(f"max_in_flight must be an int >= 1, got {max_in_flight!r}")
        if isinstance(max_pending_events, bool) or not isinstance(max_pending_events, int) \
                or max_pending_events < 1:
            raise ValueError(f"max_pending_events must be an int >= 1 (the buffer capacity), "
                             f"got {max_pending_events!r}")
        if not isinstance(confirm_timeout, (int, float)) or confirm_timeout <= 0:
            raise ValueError(f"confirm_timeout must be a number of seconds > 0, "
                             f"got {confirm_timeout!r}")
        try:
            self.overflow = OverflowPolicy(overflow)
        except ValueError:
            choices = ", ".join(p.value for p in OverflowPolicy)
            raise ValueError(f"overflow must be one of {choices}, got {overflow!r}") from None
        self.name = name
        self.telemetry = telemetry or get_default_telemetry()
        self.telemetry.prepare(SYSTEM, name, ("publish", "connect"), _FAMILIES)
        self.max_in_flight = max_in_flight
        self.confirm_timeout = float(confirm_timeout)
        self.max_pending_events = max_pending_events
        self.block_timeout = block_timeout
        self.persistent = persistent
        self.serializer = serializer
        self.event_exchange = event_exchange
        self._user_on_drop = on_drop
        self._clock = clock
        self.publish_policy = resolve_retry(retry, publish_policy,
                                            lambda: default_publish_policy(clock))
        self.context = ClientContext(SYSTEM, name, clock, self.telemetry)
        self.breaker = resolve_breaker(breaker, lambda: CircuitBreaker(
            failure_threshold, recovery_timeout, failure_on=is_transient_rmq_error,
            context=self.context,
        ))
        self._recorder = self.telemetry.observe_operation(SYSTEM, name, "publish")
        self._cached_tracer: Any = None
        self._tracer_checked_at = float("-inf")
        self._guards: dict[str, Guard] = {}
        self._spool_path = spool_path
        self.spool = SpooledMessages(spool_path) if spool_path else None
        self.connection = RabbitConnection(
            url, name=name, telemetry=self.telemetry,
            reconnect_policy=reconnect_policy or default_reconnect_policy(clock=clock),
            heartbeat=heartbeat, connect_timeout=connect_timeout, stack_timeout=stack_timeout,
            blocked_connection_timeout=blocked_connection_timeout,
            connection_name=connection_name, topology=topology, required=required, clock=clock,
        )
        try:
            self._reset_state()
            self._recover_spool()
        except BaseException:
            self.connection.close(0)
            if self.spool is not None:
                self.spool.close()
            raise
        self.connection.add_listener(self)
        try:
            self.connection.start()
        except BaseException:
            self.close(timeout=0)
            raise

    def _reset_state(self) -> None:
        """Everything a forked child must not inherit (and the initial state)."""
        buffer_policy = (OverflowPolicy.DROP_NEWEST
                         if self.overflow in (OverflowPolicy.BLOCK, OverflowPolicy.RAISE)
                         else self.overflow)
        self.buffer: EventBuffer[OutgoingMessage] = EventBuffer(
            self.max_pending_events, overflow=buffer_policy, on_drop=self._on_buffer_drop,
            context=self.context,
        )
        self._inbox: deque[OutgoingMessage] = deque()
        self._resend: deque[OutgoingMessage] = deque()
        self._unconfirmed: OrderedDict[int, OutgoingMessage] = OrderedDict()
        self._missing_exchanges: dict[str, tuple[float, str]] = {}
        self._spool_settled: list[int] = []
        self._room = threading.Condition(threading.Lock())
        self._room_waiters = 0
        self._drained = threading.Event()
        self._accepting = True
        self._closed = False
        self._pump_scheduled = False
        self._channel: Any = None
        self._channel_ready = False
        self._next_tag = 1
        self._probe: OutgoingMessage | None = None
        self._breaker_timer: Any = None
        self._sweep_timer: Any = None

    # -- publishing (any thread) -----------------------------------------------------------------

    def publish(
        self,
        body: Any,
        routing_key: str,
        exchange: str = "",
        headers: Mapping[str, Any] | None = None,
        properties: Any = None,
        mandatory: bool = True,
    ) -> Future[PublishResult]:
        """Publish one message; never blocks on the network.

        Returns a ``concurrent.futures.Future`` resolving to a :class:`PublishResult` (``ack``,
        ``nack``, ``returned`` or ``timeout``), or failing with
        :class:`~instrumented_clients.rabbitmq.errors.MessageDroppedError` (the buffer dropped
        it) or :class:`~instrumented_clients.rabbitmq.errors.ChannelClosedError` (a permanent
        refusal such as a missing exchange). ``asyncio.wrap_future`` works on it.

        Raises:
            TypeError: a non-bytes body and no ``serializer``; before any I/O.
            PublisherClosedError: after :meth:`close`.
            BufferFullError: ``overflow="block"`` found no room within ``block_timeout``
                (or ``overflow="raise"`` found none at once).
        """
        message = self._make_message(body, routing_key, exchange, headers, properties,
                                     mandatory, None)
        tracer = self._tracer()
        if tracer is None:
            self._submit(message)
        else:
            # Ended here: creating the message is publish()'s part; each transmission is a
            # send span of its own, ended at the confirm.
            create = start_create(tracer, message)
            try:
                self._submit(message)
            except BaseException as exc:
                end_span(create, exception_type(exc), str(exc))
                raise
            create.end()
        assert message.future is not None
        return message.future

    def publish_sync(
        self,
        body: Any,
        routing_key: str,
        exchange: str = "",
        headers: Mapping[str, Any] | None = None,
        properties: Any = None,
        mandatory: bool = True,
    ) -> PublishResult:
        """Publish and wait for the broker's ack, retrying on the publish policy (default
        3 attempts, 0.5 s, 5 s cap), then raise.

        Not buffered: while disconnected each attempt fails with ``NotConnectedError``. Raises
        ``PublishNackedError``/``PublishTimeoutError``/``ConnectionLostError`` (transient,
        retried), ``UnroutableError``/``ChannelClosedError`` (permanent, not retried) or
        ``CircuitOpenError`` (the breaker is open: nothing was sent).
        """
        if self.connection.in_io_thread():
            raise RuntimeError("publish_sync() called on the publisher's I/O thread (from a "
                               "future's done-callback?): it would wait for itself; use "
                               "publish() there")
        guard = self._guards.get(exchange)
        if guard is None:
            guard = self._guards[exchange] = Guard(
                self.publish_policy, breaker=self.breaker, context=self.context,
                operation="publish", span_kind="producer",
                span_name=rabbitmq_span_name(SEND, exchange),
                span_attributes=publish_sync_attributes(exchange),
            )
        payload = self._serialize(body)
        return guard.call(self._publish_attempt, payload, routing_key, exchange, headers,
                          properties, mandatory)

    def publish_event(self, event_type: str, data: Any, *, routing_key: str | None = None,
                      exchange: str | None = None) -> Future[PublishResult]:
        """Publish an event as JSON, ``{"type", "data", "timestamp"}``, routed by
        ``routing_key`` (default: the event type) to ``event_exchange``."""
        if not isinstance(event_type, str) or not event_type:
            raise TypeError(f"event_type must be a non-empty str, got {event_type!r}")
        body = json.dumps(
            {"type": event_type, "data": data,
             "timestamp": datetime.now(timezone.utc).isoformat()},
            separators=(",", ":"), default=str,
        ).encode()
        props = pika.BasicProperties(content_type="application/json", type=event_type)
        return self.publish(body, routing_key or event_type,
                            self.event_exchange if exchange is None else exchange,
                            properties=props)

    def _serialize(self, body: Any) -> bytes:
        if isinstance(body, _BYTES):
            return bytes(body) if not isinstance(body, bytes) else body
        if self.serializer is None:
            raise TypeError(f"body must be bytes, bytearray or memoryview, got "
                            f"{type(body).__name__}; pass serializer= to the publisher or use "
                            f"publish_event() for JSON")
        payload = self.serializer(body)
        if not isinstance(payload, bytes):
            raise TypeError(f"serializer must return bytes, returned {type(payload).__name__}")
        return payload

    def _make_message(self, body: Any, routing_key: str, exchange: str,
                      headers: Mapping[str, Any] | None, properties: Any, mandatory: bool,
                      future: Future[PublishResult] | None, sync: bool = False
                      ) -> OutgoingMessage:
        payload = self._serialize(body)
        if not isinstance(routing_key, str) or not isinstance(exchange, str):
            raise TypeError(f"routing_key and exchange must be str, got {routing_key!r}, "
                            f"{exchange!r}")
        if not self._accepting:
            raise PublisherClosedError(f"publisher {self.name!r} is closed")
        props = build_properties(properties, headers, self.persistent)
        return OutgoingMessage(exchange, routing_key, payload, props, mandatory,
                               future or Future(), time.monotonic(), sync)

    def _tracer(self) -> Any:
        """The OpenTelemetry tracer, or None. Without an SDK the answer is re-checked at most
        once a second (an application may configure tracing after creating the publisher)."""
        tracer = self._cached_tracer
        if tracer is not None:
            return tracer
        now = time.monotonic()
        if now < self._tracer_checked_at + 1.0:
            return None
        self._tracer_checked_at = now
        otel = self.telemetry.otel
        self._cached_tracer = tracer = otel.tracer if otel is not None else None
        return tracer

    def _submit(self, message: OutgoingMessage) -> None:
        if len(self._inbox) + len(self.buffer) >= self.max_pending_events \
                and not self.connection.in_io_thread():  # a done-callback must never wait
            self._wait_for_room(message)
        if self.spool is not None and not self.spool.closed:
            message.spool_id = self.spool.add(
                message.exchange, message.routing_key, message.body,
                properties_to_dict(message.properties), message.mandatory)
        if self._drained.is_set():
            self._drained.clear()
        self._inbox.append(message)
        if not self._pump_scheduled:
            self._pump_scheduled = True
            self.connection.call_soon(self._pump)

    def _wait_for_room(self, message: OutgoingMessage) -> None:
        """Flow control. With ``block``, always wait for room (then raise); with ``raise``,
        raise at once. With the drop policies, wait only while the broker is connected — it is
        draining, so the wait is short and nothing is dropped for a burst; while disconnected
        the buffer's drop policy applies instead."""
        policy = self.overflow
        if policy is OverflowPolicy.RAISE:
            room = False
        elif policy is OverflowPolicy.BLOCK or self._channel_ready:
            capacity = self.max_pending_events
            deadline = time.monotonic() + self.block_timeout
            with self._room:
                self._room_waiters += 1
                try:
                    # Short slices: the I/O thread reads _room_waiters without the lock, so a
                    # notify can be missed; a slice bounds that to 50 ms.
                    while len(self._inbox) + len(self.buffer) >= capacity:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self._room.wait(min(remaining, 0.05))
                finally:
                    self._room_waiters -= 1
            room = len(self._inbox) + len(self.buffer) < capacity
        else:
            return
        if room or policy not in (OverflowPolicy.BLOCK, OverflowPolicy.RAISE):
            return
        self._recorder.record("rejected", time.monotonic() - message.started)
        raise BufferFullError(
            f"publisher {self.name!r}: {self.max_pending_events} messages pending"
            + (f" for {self.block_timeout}s" if policy is OverflowPolicy.BLOCK else ""))

    def _publish_attempt(self, payload: bytes, routing_key: str, exchange: str,
                         headers: Mapping[str, Any] | None, properties: Any,
                         mandatory: bool) -> PublishResult:
        if not (self.connection.connected and self._channel_ready):
            raise NotConnectedError(f"publisher {self.name!r} is {self.connection.state.value}")
        message = self._make_message(payload, routing_key, exchange, headers, properties,
                                     mandatory, None, sync=True)
        if self._tracer() is not None:
            inject_current(message)
        self._submit(message)
        assert message.future is not None
        try:
            result = message.future.result(self.confirm_timeout + 1.0)
        except TimeoutError:
            raise PublishTimeoutError(f"no confirm within {self.confirm_timeout}s",
                                      message.message_id) from None
        if result.outcome == "ack":
            return result
        if result.outcome == "nack":
            raise PublishNackedError("the broker nacked the message", result.message_id)
        if result.outcome == "returned":
            raise UnroutableError(f"message returned: ({result.reply_code}) {result.reply_text}",
                                  result.message_id)
        raise PublishTimeoutError(f"no confirm within {self.confirm_timeout}s",
                                  result.message_id)
