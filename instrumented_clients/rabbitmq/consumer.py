"""``ResilientConsumer``: consume a queue with a handler in a worker pool, surviving the broker.

Threading: the I/O thread of a :class:`~instrumented_clients.rabbitmq.connection.RabbitConnection`
owns the channel. Each delivery is handed to a ``ThreadPoolExecutor``; the handler never runs on
the I/O thread, so a slow handler cannot starve heartbeats. When it returns, its settlement
(ack / requeue / reject) is queued and the I/O thread is woken once per burst to send the
frames, acking a run of consecutive tags with one ``multiple=True`` frame.

Every delivery carries the generation of the channel it came on. A new channel (after a lost
connection, a broker-side channel close or a consumer cancellation) starts a new generation;
settlements of an older generation are discarded, never acked on the new channel (pika's tags
restart at 1 per channel, so an old tag would ack the wrong message or close the channel with
406 PRECONDITION_FAILED). The broker redelivers those messages: the guarantee is at-least-once.

Poison messages (a handler that always fails): a failure nacks with ``requeue=True``. On a
quorum queue declared with ``x-delivery-limit`` and a dead-letter exchange the broker counts the
deliveries and dead-letters the message itself. On a classic queue, set ``max_deliveries``: the
consumer counts failed deliveries per ``message_id`` in process memory (bounded LRU; a restart
resets it) and rejects with ``requeue=False`` at the limit, so the queue's dead-letter exchange
receives it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from pika import exceptions as pika_errors

from instrumented_clients.client import resolve_breaker, resolve_retry
from instrumented_clients.rabbitmq.connection import RabbitConnection, default_reconnect_policy
from instrumented_clients.rabbitmq.consumer_config import ConsumerConfigMixin
from instrumented_clients.rabbitmq.consumer_worker import HandlerRunnerMixin
from instrumented_clients.rabbitmq.errors import reply_code_category
from instrumented_clients.rabbitmq.incoming import (
    Delivery,
    DeliveryCounter,
    IncomingMessage,
    broker_delivery_count,
    plan_acks,
    positive_int,
)
from instrumented_clients.rabbitmq.settings import DEFAULT_URL
from instrumented_clients.rabbitmq.topology import Queue, Topology, declare_topology
from instrumented_clients.redaction import redact_text
from instrumented_clients.resilience.breaker import BreakerState, CircuitBreaker
from instrumented_clients.resilience.clock import SYSTEM_CLOCK, Clock
from instrumented_clients.resilience.context import ClientContext
from instrumented_clients.resilience.errors import CircuitOpenError
from instrumented_clients.resilience.events import ConsumeOutcome, MessageConsumed
from instrumented_clients.resilience.retry import RetryPolicy
from instrumented_clients.telemetry.conventions import PROCESS
from instrumented_clients.telemetry.core import Telemetry, get_default_telemetry

__all__ = ["Handler", "ResilientConsumer"]

_log = logging.getLogger(__name__)
SYSTEM = "rabbitmq"
_FAMILIES = (
    "operation_duration_seconds", "connection_state",
    "connection_transitions_total", "illegal_transitions_total", "reconnect_attempts_total",
    "reconnect_duration_seconds", "connection_blocked", "consumed_messages_total",
)

Handler = Callable[[IncomingMessage], object]


class ResilientConsumer(ConsumerConfigMixin, HandlerRunnerMixin):
    """Consume one queue; run ``handler`` per message in a worker pool; ack when it returns.

    The handler gets an :class:`~instrumented_clients.rabbitmq.incoming.IncomingMessage`.
    Returning acks the message; raising requeues it (``basic.nack``), unless the message has
    reached ``max_deliveries`` or the handler raised
    :class:`~instrumented_clients.rabbitmq.incoming.RejectMessage`: then it is rejected without
    requeue, to the queue's dead-letter exchange.

    Args:
        url: broker URL(s), comma-separated or a sequence; tried in turn.
        queue: the queue to consume, declared (with ``topology``) on every connect, reconnect
            and consumer cancellation: a :class:`~instrumented_clients.rabbitmq.topology.Queue`
            as given, or a name, declared as ``Queue(name)`` (durable, classic) unless
            ``topology`` already declares a queue of that name. A queue that cannot be consumed
            (missing with ``passive=True``, access refused, declared elsewhere with other
            arguments) keeps the consumer unhealthy, with the broker's reason in ``last_error``.
        passive: only check that the queue exists (passive declare), never create or change it.
        handler: called in a worker thread, once per delivery.
        name: the ``client`` label and the connection's name.
        telemetry: where metrics, spans and logs go (default: the package's).
        topology: exchanges/queues/bindings declared with the queue (e.g. a dead-letter
            exchange and its queue).
        prefetch: unacked deliveries at most (``RABBITMQ_PREFETCH``, default 100).
        workers: handler threads (default: ``min(prefetch, cpu count + 4, 32)``).
        max_deliveries: reject (requeue=False) a message after this many failed deliveries,
            counted in process; None (default) requeues forever, leaving the limit to a quorum
            queue's ``x-delivery-limit`` (broker-side: ``delivery_limit = max_deliveries - 1``).
        poison_cache_size: messages whose failures are remembered (least recently used out).
        trace_link_only: a delivery's ``process`` span starts a new trace linked to the
            producer's context instead of continuing it (the default: a child, also linked).
        required, reconnect_policy, heartbeat, connect_timeout, stack_timeout,
        blocked_connection_timeout, connection_name: as for the connection.
        breaker: the circuit breaker over the handler: None (default) for one that opens
            after ``failure_threshold`` consecutive failures for ``recovery_timeout`` seconds,
            ``False`` for none, or that one. While it is open the consumer stops consuming
            (``basic.cancel``) instead of requeueing message after message; after the cool-down
            one probe message is consumed (prefetch 1), and its success resumes full
            consumption. Failures count by the breaker's ``failure_on`` (default: transient
            errors such as ``ConnectionError``, not a poison message's ``ValueError``).
        failure_threshold, recovery_timeout: the default breaker's settings (5, 30 s).
        retry: the handler's retries inside this process before the message is requeued:
            None (default) or ``False`` for one run per delivery (the broker's redelivery is the
            retry), or a policy under which transient errors the handler raises (a dependency's
            ``ConnectionError``, ...) are retried in the worker thread first. Each run counts
            towards the breaker; :class:`RejectMessage` and permanent errors are never retried.
        auto_start: start consuming in the constructor (else call :meth:`start`).
        clock: time source of the reconnect policy.
    """

    def __init__(
        self,
        url: str | Sequence[str] = DEFAULT_URL,
        *,
        queue: str | Queue,
        handler: Handler,
        passive: bool = False,
        name: str = "consumer",
        telemetry: Telemetry | None = None,
        topology: Topology | None = None,
        prefetch: int = 100,
        workers: int | None = None,
        max_deliveries: int | None = None,
        poison_cache_size: int = 10_000,
        trace_link_only: bool = False,
        required: bool = False,
        reconnect_policy: RetryPolicy | None = None,
        heartbeat: float = 60.0,
        connect_timeout: float = 10.0,
        stack_timeout: float | None = None,
        blocked_connection_timeout: float | None = None,
        connection_name: str | None = None,
        breaker: CircuitBreaker | Literal[False] | None = None,
        failure_threshold: int = 5,
        recovery_timeout: float = 30.0,
        retry: RetryPolicy | Literal[False] | None = None,
        auto_start: bool = True,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {handler!r}")
        if isinstance(queue, Queue):
            self.queue_name = queue.name
        elif isinstance(queue, str) and queue:
            self.queue_name = queue
        else:
            raise ValueError(f"queue must be a non-empty queue name or a Queue, got {queue!r}")
        self.prefetch = positive_int("prefetch", prefetch, 65535)
        default_workers = min(prefetch, (os.cpu_count() or 1) + 4, 32)
        self.workers = positive_int("workers", default_workers if workers is None else workers)
        self.max_deliveries = (None if max_deliveries is None
                               else positive_int("max_deliveries", max_deliveries))
        self._counter = DeliveryCounter(poison_cache_size)
        self.trace_link_only = bool(trace_link_only)
        self.handler = handler
        self.name = name
        self.telemetry = telemetry or get_default_telemetry()
        self.context = ClientContext(SYSTEM, name, clock, self.telemetry)
        self.handler_policy = resolve_retry(
            retry, None, lambda: RetryPolicy(max_attempts=1, clock=clock))
        self.breaker = resolve_breaker(breaker, lambda: CircuitBreaker(
            failure_threshold, recovery_timeout, context=self.context))
        self.telemetry.prepare(SYSTEM, name, ("process",), _FAMILIES + (
            ("circuit_breaker_state", "circuit_breaker_transitions_total") if self.breaker
            else ()))
        # Attributes are set per delivery (the exchange and routing key are the message's).
        self._recorder = self.telemetry.observe_operation(
            SYSTEM, name, "process", span_name=f"{PROCESS} {self.queue_name}",
            span_kind="consumer",
        )
        self.topology = (topology or Topology()).merged(
            _own_queue(queue, passive, topology or Topology()))
        self.connection = RabbitConnection(
            url, name=name, telemetry=self.telemetry,
            reconnect_policy=reconnect_policy or default_reconnect_policy(clock=clock),
            heartbeat=heartbeat, connect_timeout=connect_timeout, stack_timeout=stack_timeout,
            blocked_connection_timeout=blocked_connection_timeout,
            connection_name=connection_name, topology=self.topology, required=required,
            clock=clock,
        )
        self._reset_state()
        self.connection.add_listener(self)
        if auto_start:
            self.start()

    def _reset_state(self) -> None:
        """The initial state, and all a forked child must not inherit."""
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix=f"consumer-{self.name}")
        self._cond = threading.Condition(threading.Lock())
        self._local = threading.local()
        self._in_flight = 0      # delivered, handler not yet finished (or skipped)
        self._running = 0        # handlers executing right now
        self._stopping = False
        self._stopped = threading.Event()
        self._settlements: deque[tuple[Delivery, ConsumeOutcome, float]] = deque()
        self._flush_scheduled = False
        # I/O-thread state
        self._conn: Any = None
        self._channel: Any = None
        self._opening = False
        self._generation = 0
        self._consumer_tag: str | None = None
        self._consuming = False
        self._outstanding: dict[int, None] = {}  # unsettled tags of the channel, oldest first
        self._needs_declare = False
        self._channel_failures = 0
        self._reopen_timer: Any = None
        self._paused = False      # the breaker is open: not consuming
        self._probing = False     # half-open: consuming one message at a time
        self._resume_timer: Any = None
        # observation
        self.cancellations = 0
        self.channel_closed_by_broker = 0
        self.stale_settlements = 0
        self.last_error: str | None = None
        self.queue_error: str | None = None  # the broker refused the queue; cleared on consume-ok

    # -- life cycle (any thread) -------------------------------------------------------------------

    def start(self, required_timeout: float | None = None) -> None:
        """Connect and start consuming (idempotent). With ``required=True``, raise
        :class:`~instrumented_clients.rabbitmq.errors.BrokerUnavailableError` when the
        reconnect policy is spent."""
        try:
            self.connection.start(required_timeout)
        except BaseException:
            self.close(timeout=0)
            raise

    def close(self, timeout: float | None = None) -> None:
        """Stop consuming, let running handlers finish (up to ``timeout`` seconds, default 10),
        ack them, close the connection.

        ``basic.cancel`` stops new deliveries; deliveries whose handler has not started are
        not run and stay unacked, as does a handler still running at the deadline: closing the
        channel returns them to the queue and the broker redelivers them. Idempotent.
        """
        if self._stopped.is_set():
            return
        if timeout is None:
            timeout = 10.0
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._cond:
            self._stopping = True
        io_alive = self.connection._thread is not None and self.connection._thread.is_alive()
        if io_alive:
            self.connection.call_soon(self._cancel_consumer)
        own = 1 if getattr(self._local, "in_handler", False) else 0  # close() from a handler
        with self._cond:
            self._cond.wait_for(lambda: self._running <= own,
                                timeout=max(deadline - time.monotonic(), 0.0))
            unfinished = self._running - own
        if io_alive:
            # call_soon is FIFO: the acks are written before close() queues the close frames.
            self.connection.call_soon(self._flush)
        self.connection.close(max(deadline - time.monotonic(), 1.0))
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._stopped.set()
        if unfinished:
            _log.warning("rabbitmq %s: stopped with %d handler(s) still running; their messages "
                         "stay unacked and will be redelivered", self.name, unfinished)

    # -- the I/O thread: channel and consumer -----------------------------------------------------

    def on_connection_ready(self, connection: Any) -> None:
        """Connected, topology declared (by the connection): open the consuming channel."""
        self._cancel_reopen()
        self._conn = connection
        self._channel = None
        self._opening = False
        self._needs_declare = False
        self._channel_failures = 0
        self._open_channel(connection)

    def on_connection_lost(self, error: BaseException | None) -> None:
        """Every channel died with the connection: their tags are void."""
        self._cancel_reopen()
        self._drop_channel()
        self._conn = None
        self._opening = False

    def on_fork_child(self) -> None:
        """In a forked child: a fresh pool and state; the parent's deliveries stay its own."""
        self._reset_state()

    def _open_channel(self, connection: Any) -> None:
        self._reopen_timer = None
        if (self._stopping or connection is not self._conn or not connection.is_open
                or self._channel is not None or self._opening):
            return
        self._opening = True
        connection.channel(on_open_callback=self.connection.guarded(self._on_channel_open))

    def _on_channel_open(self, channel: Any) -> None:
        self._opening = False
        if self._stopping or self._conn is None or channel.connection is not self._conn:
            channel.close()
            return
        self._generation += 1
        self._channel = channel
        self._outstanding = {}
        guarded = self.connection.guarded
        channel.add_on_close_callback(guarded(self._on_channel_closed))
        channel.add_on_cancel_callback(guarded(self._on_cancelled))
        channel.basic_qos(prefetch_count=1 if self._probing else self.prefetch,
                          callback=guarded(lambda _frame: self._after_qos(channel)))

    def _after_qos(self, channel: Any) -> None:
        if channel is not self._channel:
            return
        if self._needs_declare and self.topology:
            declare_topology(channel, self.topology,
                             self.connection.guarded(lambda: self._consume(channel)))
        else:
            self._consume(channel)

    def _consume(self, channel: Any) -> None:
        if channel is not self._channel or self._stopping or self._paused \
                or self._consumer_tag is not None:
            return
        self._needs_declare = False
        guarded = self.connection.guarded
        self._consumer_tag = channel.basic_consume(
            self.queue_name, guarded(self._on_message),
            callback=guarded(lambda _frame: self._on_consume_ok(channel)))

    def _on_consume_ok(self, channel: Any) -> None:
        if channel is not self._channel:
            return
        self._consuming = True
        self._channel_failures = 0
        self.queue_error = None
        _log.info("rabbitmq %s: consuming (prefetch %d)", self.name, self.prefetch)

    def _on_cancelled(self, _frame: Any) -> None:
        """The broker cancelled the consumer (queue deleted, quorum leader moved): start over on
        a new channel, re-declaring the topology."""
        self.cancellations += 1
        self._consuming = False
        _log.warning("rabbitmq %s: the broker cancelled the consumer (queue deleted or node "
                     "failover); re-declaring and consuming again", self.name)
        channel = self._channel
        if channel is not None and channel.is_open:
            channel.close()  # _on_channel_closed opens the next one

    def _on_channel_closed(self, channel: Any, reason: BaseException) -> None:
        if channel is not self._channel:
            return
        self._drop_channel()
        connection = self._conn
        if self._stopping or connection is None or not connection.is_open:
            return  # stopping, or the connection is going: on_connection_ready reopens
        if isinstance(reason, pika_errors.ChannelClosedByBroker):
            self.channel_closed_by_broker += 1
            self.last_error = redact_text(
                f"channel closed by the broker: ({reason.reply_code}) {reason.reply_text}")[:500]
            _log.warning("rabbitmq %s: %s", self.name, self.last_error)
            if not reply_code_category(reason.reply_code).is_transient:
                self.queue_error = self.last_error
        self._needs_declare = True
        self._channel_failures += 1
        failures = self._channel_failures
        delay = 0.0 if failures == 1 else self.connection.policy.backoff(failures - 1)
        self._reopen_timer = self.connection.call_later(
            delay, lambda: self._open_channel(connection))

    def _drop_channel(self) -> None:
        """Forget the channel: its unsettled tags are void from now on."""
        self._channel = None
        self._consuming = False
        self._consumer_tag = None
        self._outstanding = {}
        self._generation += 1

    def _cancel_reopen(self) -> None:
        if self._reopen_timer is not None:
            self.connection.remove_timeout(self._reopen_timer)
            self._reopen_timer = None

    def _cancel_consumer(self) -> None:
        channel = self._channel
        self._consuming = False
        if channel is not None and channel.is_open and self._consumer_tag is not None:
            channel.basic_cancel(self._consumer_tag)
            self._consumer_tag = None

    # -- the I/O thread: the breaker pauses consumption --------------------------------------------

    def _pause(self) -> None:
        breaker = self.breaker
        remaining = breaker.remaining() if breaker is not None else 0.0
        if self._paused or self._stopping or remaining <= 0:
            return
        self._paused = True
        self._probing = False
        _log.warning("rabbitmq %s: circuit breaker open after %d consecutive handler failures: "
                     "consumption paused for %.1f s", self.name, self.consecutive_failures,
                     remaining)
        self._cancel_consumer()
        self._resume_timer = self.connection.call_later(remaining + 0.01, self._resume)

    def _resume(self) -> None:
        """The cool-down is over: consume one probe message (half-open)."""
        self._resume_timer = None
        breaker = self.breaker
        if breaker is None or not self._paused or self._stopping:
            return
        try:
            breaker.before_call("process")  # OPEN -> HALF_OPEN, admitting this probe
        except CircuitOpenError as exc:
            self._resume_timer = self.connection.call_later(max(exc.remaining, 0.05),
                                                            self._resume)
            return
        self._paused = False
        self._probing = breaker.state is BreakerState.HALF_OPEN
        channel = self._channel
        if channel is not None and channel.is_open:  # else the next channel consumes
            channel.basic_qos(
                prefetch_count=1 if self._probing else self.prefetch,
                callback=self.connection.guarded(lambda _frame: self._consume(channel)))

    def _end_probe(self) -> None:
        """The probe succeeded and the breaker closed: back to the full prefetch."""
        if not self._probing:
            return
        self._probing = False
        _log.info("rabbitmq %s: circuit breaker closed: consumption resumed", self.name)
        channel = self._channel
        if channel is not None and channel.is_open:
            channel.basic_qos(prefetch_count=self.prefetch)

    # -- the I/O thread: deliveries and settlements -----------------------------------------------

    def _on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        if channel is not self._channel:
            return
        tag = method.delivery_tag
        headers = properties.headers or {}
        message_id = properties.message_id
        message = IncomingMessage(body, message_id, method.routing_key, method.exchange,
                                  bool(method.redelivered), 0, headers, properties, tag)
        delivery = Delivery(tag, self._generation, message)
        count = broker_delivery_count(headers)
        if count is None and len(self._counter):
            count = self._counter.get(delivery.key)
        if count:
            delivery.message = dataclasses.replace(message, delivery_count=count)
        self._outstanding[tag] = None
        with self._cond:
            self._in_flight += 1
        try:
            self._pool.submit(self._process, delivery)
        except RuntimeError:  # the pool is shut down (stopping): leave it unacked
            with self._cond:
                self._in_flight -= 1
                self._cond.notify_all()

    def _flush(self) -> None:
        """Send the queued settlements: discard stale ones, batch the acks."""
        self._flush_scheduled = False  # before draining: a settlement queued now wakes us again
        items = self._settlements
        channel = self._channel
        live = channel is not None and channel.is_open
        outstanding = self._outstanding
        acks: dict[int, float] = {}
        emit = self.telemetry.emit
        for _ in range(len(items)):
            delivery, outcome, duration = items.popleft()
            if not live or delivery.generation != self._generation \
                    or delivery.tag not in outstanding:
                self.stale_settlements += 1
                continue
            if outcome == "ack":
                acks[delivery.tag] = duration
                continue
            del outstanding[delivery.tag]
            if outcome == "requeue":
                channel.basic_nack(delivery.tag, multiple=False, requeue=True)
            else:
                channel.basic_reject(delivery.tag, requeue=False)
            emit(MessageConsumed(SYSTEM, self.name, outcome, duration))
        if not acks:
            return
        upto, singles = plan_acks(outstanding, acks)
        if upto is not None:
            channel.basic_ack(upto, multiple=True)
        for tag in singles:
            channel.basic_ack(tag)
        for tag, duration in acks.items():
            del outstanding[tag]
            emit(MessageConsumed(SYSTEM, self.name, "ack", duration))

    def __repr__(self) -> str:
        return (f"ResilientConsumer({self.name!r}, queue={self.queue_name!r}, "
                f"{self.connection.state.value})")


def _own_queue(queue: str | Queue, passive: bool, topology: Topology) -> Topology:
    """What the consumer declares for its queue besides ``topology``.

    A name alone is a durable classic queue, unless ``topology`` declares that name already: two
    declarations of one queue with different arguments would close the channel with 406.
    """
    if isinstance(queue, str):
        if any(declared.name == queue for declared in topology.queues):
            return Topology()
        queue = Queue(queue)
    return Topology(queues=(dataclasses.replace(queue, passive=True) if passive else queue,))
