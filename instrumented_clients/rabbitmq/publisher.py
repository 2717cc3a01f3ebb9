"""``ResilientPublisher``: confirmed, pipelined, buffered publishing that survives broker outages.

The publisher is a façade over small objects, each owning its state:

- :class:`~instrumented_clients.rabbitmq.outbox.Outbox`: accepted, unsent messages in sending
  order (re-sends, buffer, inbox), flow control and the spool;
- :class:`~instrumented_clients.rabbitmq.confirms.ConfirmTracker`: delivery tags of the
  confirm-mode channel and the messages they stand for;
- :class:`~instrumented_clients.rabbitmq.breaker_gate.BreakerGate`: the window the circuit
  breaker allows, and its half-open probe;
- :class:`~instrumented_clients.rabbitmq.outcomes.PublishOutcomes`: resolving a message
  (future, metrics, breaker, span, spool);
- :class:`~instrumented_clients.rabbitmq.confirm_channel.ConfirmChannel`: the pika channel on
  the connection's I/O thread, which drives the others.

Threading: :meth:`ResilientPublisher.publish` may be called from any thread. It validates the
message, hands it to the outbox (which spools it when a spool is configured) and wakes the I/O
thread (one wake-up per burst). Everything else — routing a message to the channel or to the
bounded buffer, confirms, returns, re-sends, timeouts — happens on the I/O thread that owns the
connection (:class:`~instrumented_clients.rabbitmq.connection.RabbitConnection`).

Order of sending on the I/O thread: unconfirmed messages of a lost connection (delivery-tag
order), then the buffer, then live publishes. A message's future resolves on the I/O thread, so
its done-callbacks run there: keep them short.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from datetime import datetime, timezone
from typing import Any, Literal, TypeVar

import pika

from instrumented_clients.client import HealthReport, resolve_breaker, resolve_retry
from instrumented_clients.rabbitmq.breaker_gate import BreakerGate
from instrumented_clients.rabbitmq.broker_client import BrokerClient
from instrumented_clients.rabbitmq.confirm_channel import ConfirmChannel
from instrumented_clients.rabbitmq.confirms import ConfirmTracker
from instrumented_clients.rabbitmq.connection import (
    RabbitConnection,
    default_reconnect_policy,
)
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
)
from instrumented_clients.rabbitmq.outbox import Outbox
from instrumented_clients.rabbitmq.outcomes import PublishOutcomes
from instrumented_clients.rabbitmq.settings import connection_settings_from_env
from instrumented_clients.rabbitmq.spool import SpooledMessages, SpoolRecord
from instrumented_clients.rabbitmq.topology import Topology
from instrumented_clients.rabbitmq.tracing import (
    end_span,
    extracted_origin,
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
from instrumented_clients.resilience.state import ConnectionState
from instrumented_clients.settings import RABBITMQ_MAX_PENDING_EVENTS
from instrumented_clients.telemetry.conventions import SEND, rabbitmq_span_name
from instrumented_clients.telemetry.core import Telemetry, get_default_telemetry
from instrumented_clients.telemetry.otel import exception_type

__all__ = ["ResilientPublisher", "default_publish_policy"]

_log = logging.getLogger(__name__)
P = TypeVar("P", bound="ResilientPublisher")
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


class ResilientPublisher(BrokerClient):
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
        spool = SpooledMessages(spool_path) if spool_path else None
        try:
            self.connection = RabbitConnection(
                url, name=name, telemetry=self.telemetry,
                reconnect_policy=reconnect_policy or default_reconnect_policy(clock=clock),
                heartbeat=heartbeat, connect_timeout=connect_timeout,
                stack_timeout=stack_timeout,
                blocked_connection_timeout=blocked_connection_timeout,
                connection_name=connection_name, topology=topology, required=required,
                clock=clock,
            )
        except BaseException:
            if spool is not None:
                spool.close()
            raise
        try:
            self._assemble(spool)
            self._recover_spool()
        except BaseException:
            self.connection.close(0)
            if spool is not None:
                spool.close()
            raise
        self.connection.add_listener(self)
        try:
            self.connection.start()
        except BaseException:
            self.close(timeout=0)
            raise

    def _assemble(self, spool: SpooledMessages | None) -> None:
        """The parts, fresh: at construction and in a forked child (which inherits nothing)."""
        self._accepting = True
        self._closed = False
        self._gate = BreakerGate(self.breaker)
        outbox = self._outbox = Outbox(
            self.max_pending_events, self.overflow, self.block_timeout, self.context,
            on_drop=self._on_drop, on_buffered=self._on_buffered, spool=spool)
        self._confirms: ConfirmTracker[OutgoingMessage] = ConfirmTracker()
        self._outcomes = PublishOutcomes(self.name, self.telemetry, self._recorder,
                                         self.connection.tracker, self._gate, outbox,
                                         self._user_on_drop)
        self.confirm_channel = ConfirmChannel(
            self.connection, outbox, self._confirms, self._outcomes, self._gate,
            self.max_in_flight, self.confirm_timeout, self._tracer, self._clock)

    # The outbox is built before the outcomes it reports to: these two forward late.
    def _on_drop(self, message: OutgoingMessage, reason: str) -> None:
        self._outcomes.dropped(message, reason)

    def _on_buffered(self, message: OutgoingMessage) -> None:
        self._outcomes.buffered(message)

    @classmethod
    def from_env(
        cls: type[P], name: str = "publisher", environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> P:
        """Build a publisher from the ``RABBITMQ_*`` variables of the settings table
        (:mod:`instrumented_clients.settings`).

        ``RABBITMQ_URL`` (comma-separated), ``RABBITMQ_REQUIRED``, ``RABBITMQ_MAX_RETRIES``,
        ``RABBITMQ_RETRY_DELAY``, ``RABBITMQ_RETRY_MAX_DELAY``, ``RABBITMQ_MAX_PENDING_EVENTS``,
        ``RABBITMQ_HEARTBEAT``, ``RABBITMQ_CONNECT_TIMEOUT``. Keyword arguments win over the
        environment. A value that does not parse raises ``ConfigError`` naming the variable.
        """
        settings: dict[str, Any] = {
            **connection_settings_from_env(environ),
            "max_pending_events": RABBITMQ_MAX_PENDING_EVENTS.read(environ),
        }
        settings.update(overrides)
        return cls(name=name, **settings)

    # -- observation -----------------------------------------------------------------------------

    @property
    def buffer(self) -> EventBuffer[OutgoingMessage]:
        """The bounded buffer of messages waiting for the broker."""
        return self._outbox.buffer

    @property
    def spool(self) -> SpooledMessages | None:
        """The durable spool, when ``spool_path`` was given (None in a forked child)."""
        return self._outbox.spool

    @property
    def ready(self) -> bool:
        """Connected, with the confirm-mode channel open: publishes go straight out."""
        return self.connection.connected and self.confirm_channel.ready

    @property
    def pending_events(self) -> int:
        """Messages accepted but not yet sent (inbox, buffer and re-sends)."""
        return self._outbox.pending

    @property
    def in_flight(self) -> int:
        """Messages sent and not yet confirmed."""
        return len(self._confirms)

    def health(self) -> HealthReport:
        """State for a health endpoint; never a password."""
        connection = self.connection
        spool = self.spool
        return HealthReport.build(
            self.system, self.name, connection.tracker, self.breaker,
            address=connection.address, connected=connection.connected,
            blocked=connection.blocked, connection_name=connection.connection_name,
            pending_events=self.pending_events, in_flight=self.in_flight,
            buffer_capacity=self.buffer.capacity, dropped_events=self.buffer.stats().dropped,
            spool=spool.path if spool is not None else None,
        )

    # -- closing ---------------------------------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting, flush the buffer, wait for confirms (up to ``timeout`` seconds,
        default 10), then close. Idempotent.

        What is still undelivered is dropped with reason ``shutdown`` (counted, logged, given to
        ``on_drop``, its futures failed) — or, with a spool, kept there for the next start.
        """
        if self._closed:
            return
        self._closed = True
        if timeout is None:
            timeout = 10.0
        self._accepting = False
        connection = self.connection
        channel = self.confirm_channel
        if timeout > 0 and connection.state in (ConnectionState.CONNECTED,
                                                 ConnectionState.CONNECTING,
                                                 ConnectionState.DISCONNECTED):
            connection.call_soon(channel.pump)
            if not connection.in_io_thread():
                self._outbox.wait_drained(timeout)
        connection.call_soon(self._shutdown)
        connection.close(max(timeout, 1.0))
        if not connection.running:
            self._shutdown()  # the loop never ran (or is gone): settle here
        spool = self.spool
        if spool is not None:
            spool.close()

    def _shutdown(self) -> None:
        self.confirm_channel.shutdown(PublisherClosedError(
            f"publisher {self.name!r} closed; message kept in the spool"))

    # -- the I/O thread: connection events -------------------------------------------------------

    def on_connection_ready(self, connection: Any) -> None:
        self.confirm_channel.on_connection_ready(connection)

    def on_connection_lost(self, error: BaseException | None) -> None:
        self.confirm_channel.on_connection_lost(error)

    # -- spool and fork ---------------------------------------------------------------------------

    def _recover_spool(self) -> None:
        """Queue what a previous process left in the spool: sent before anything new."""
        count = self._outbox.recover(_recovered_message)
        if count:
            _log.info("rabbitmq %s: %d message(s) recovered from the spool %s", self.name,
                      count, self.spool.path if self.spool is not None else "")

    def on_fork_child(self) -> None:
        """In a forked child: a fresh, empty publisher state; the parent keeps its buffer,
        confirms and spool (the spool has one owner: the child runs without it)."""
        spool = self.spool
        if spool is not None:
            self.connection.keep_after_fork(spool)
            spool.abandon_after_fork()
        self._assemble(None)

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
        outbox = self._outbox
        # A done-callback on the I/O thread must never wait for room.
        if outbox.full() and not self.connection.in_io_thread() \
                and not outbox.wait_for_room(self.confirm_channel.ready):
            self._recorder.record("rejected", time.monotonic() - message.started)
            raise BufferFullError(
                f"publisher {self.name!r}: {self.max_pending_events} messages pending"
                + (f" for {self.block_timeout}s" if self.overflow is OverflowPolicy.BLOCK
                   else ""))
        outbox.accept(message)
        self.confirm_channel.wake()

    def _publish_attempt(self, payload: bytes, routing_key: str, exchange: str,
                         headers: Mapping[str, Any] | None, properties: Any,
                         mandatory: bool) -> PublishResult:
        if not self.ready:
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


def _recovered_message(record: SpoolRecord) -> OutgoingMessage:
    message = OutgoingMessage(record.exchange, record.routing_key, record.body,
                              pika.BasicProperties(**record.properties), record.mandatory, None,
                              0.0)
    message.spool_id = record.spool_id
    message.origin = extracted_origin(message.properties.headers)
    message.recorded = True  # counted by the process that accepted it
    return message
