"""``ResilientConsumer``: consume a queue with a handler in a worker pool, surviving the broker.

The consumer is a façade over small objects:
:class:`~instrumented_clients.rabbitmq.consume_channel.ConsumeChannel` (the channel, on the I/O
thread), :class:`~instrumented_clients.rabbitmq.consumer_worker.HandlerPool` and
:class:`~instrumented_clients.rabbitmq.consumer_worker.HandlerRunner` (the handler, in worker
threads) and :class:`~instrumented_clients.rabbitmq.settlements.SettlementBatcher` (outcomes back
to the channel).

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
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar

from instrumented_clients.client import HealthReport, resolve_breaker, resolve_retry
from instrumented_clients.rabbitmq.broker_client import BrokerClient
from instrumented_clients.rabbitmq.connection import RabbitConnection, default_reconnect_policy
from instrumented_clients.rabbitmq.consume_channel import ConsumeChannel
from instrumented_clients.rabbitmq.consumer_worker import HandlerPool, HandlerRunner
from instrumented_clients.rabbitmq.incoming import (
    Delivery,
    DeliveryCounter,
    IncomingMessage,
    positive_int,
)
from instrumented_clients.rabbitmq.settings import DEFAULT_URL, connection_settings_from_env
from instrumented_clients.rabbitmq.settlements import SettlementBatcher
from instrumented_clients.rabbitmq.topology import Queue, Topology
from instrumented_clients.resilience.breaker import BreakerState, CircuitBreaker
from instrumented_clients.resilience.clock import SYSTEM_CLOCK, Clock
from instrumented_clients.resilience.context import ClientContext
from instrumented_clients.resilience.retry import RetryPolicy
from instrumented_clients.settings import RABBITMQ_PREFETCH
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
C = TypeVar("C", bound="ResilientConsumer")


class ResilientConsumer(BrokerClient):
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
        self.counter = DeliveryCounter(poison_cache_size)
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
        self._assemble()
        self.connection.add_listener(self)
        if auto_start:
            self.start()

    def _assemble(self) -> None:
        """The parts, fresh: at construction and in a forked child (which inherits nothing)."""
        self.settlements = SettlementBatcher()
        self.pool = HandlerPool(self.workers, self.name, self._handle,
                                self.settlements.is_current)
        self.consume_channel = ConsumeChannel(
            self.connection, queue_name=self.queue_name, prefetch=self.prefetch,
            topology=self.topology, breaker=self.breaker, pool=self.pool,
            batcher=self.settlements, counter=self.counter, telemetry=self.telemetry)
        self.runner = HandlerRunner(
            name=self.name, queue_name=self.queue_name, handler=self.handler,
            policy=self.handler_policy, breaker=self.breaker, counter=self.counter,
            max_deliveries=self.max_deliveries, recorder=self._recorder,
            tracker=self.connection.tracker, trace_link_only=self.trace_link_only,
            on_breaker_open=self.consume_channel.request_pause,
            on_breaker_closed=self.consume_channel.request_end_probe)
        self._stopped = threading.Event()

    def _handle(self, delivery: Delivery) -> None:
        """In a worker: run the handler, queue the outcome for the I/O thread."""
        outcome, duration = self.runner.run(delivery)
        if self.settlements.add(delivery, outcome, duration) and not self._stopped.is_set():
            self.consume_channel.wake()

    @classmethod
    def from_env(
        cls: type[C], queue: str | Queue, handler: Callable[[IncomingMessage], object],
        name: str = "consumer", environ: Mapping[str, str] | None = None, **overrides: Any,
    ) -> C:
        """Build a consumer from the ``RABBITMQ_*`` variables of the settings table
        (:mod:`instrumented_clients.settings`).

        ``RABBITMQ_URL`` (comma-separated), ``RABBITMQ_REQUIRED``, ``RABBITMQ_MAX_RETRIES``,
        ``RABBITMQ_RETRY_DELAY``, ``RABBITMQ_RETRY_MAX_DELAY``, ``RABBITMQ_HEARTBEAT``,
        ``RABBITMQ_CONNECT_TIMEOUT``, ``RABBITMQ_PREFETCH``. Keyword arguments win over the
        environment. A value that does not parse raises ``ConfigError`` naming the variable.
        """
        settings: dict[str, Any] = {
            **connection_settings_from_env(environ),
            "prefetch": RABBITMQ_PREFETCH.read(environ),
        }
        settings.update(overrides)
        return cls(queue=queue, handler=handler, name=name, **settings)

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
        self.pool.stop()
        channel = self.consume_channel
        channel.stop()
        io_alive = self.connection.running
        if io_alive:
            self.connection.call_soon(channel.cancel)
        unfinished = self.pool.wait_for_handlers(deadline - time.monotonic())
        if io_alive:
            # call_soon is FIFO: the acks are written before close() queues the close frames.
            self.connection.call_soon(channel.flush)
        self.connection.close(max(deadline - time.monotonic(), 1.0))
        self.pool.shutdown()
        self._stopped.set()
        if unfinished:
            _log.warning("rabbitmq %s: stopped with %d handler(s) still running; their messages "
                         "stay unacked and will be redelivered", self.name, unfinished)

    def stop(self, timeout: float | None = None) -> None:
        """Deprecated spelling of :meth:`close`."""
        warnings.warn("ResilientConsumer.stop() is deprecated: use close(timeout=...)",
                      DeprecationWarning, stacklevel=2)
        self.close(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until :meth:`close` finished (e.g. from a signal handler); True if it did."""
        return self._stopped.wait(timeout)

    # -- the I/O thread: connection events ---------------------------------------------------------

    def on_connection_ready(self, connection: Any) -> None:
        self.consume_channel.on_connection_ready(connection)

    def on_connection_lost(self, error: BaseException | None) -> None:
        self.consume_channel.on_connection_lost(error)

    def on_fork_child(self) -> None:
        """In a forked child: a fresh pool and state; the parent's deliveries stay its own."""
        self._assemble()

    # -- observation -------------------------------------------------------------------------------

    @property
    def consecutive_failures(self) -> int:
        """Failures in a row (handler runs and connection attempts) since the last success."""
        return self.connection.tracker.consecutive_failures

    @property
    def consuming(self) -> bool:
        """True while the broker has confirmed the consumer (``basic.consume-ok``)."""
        return self.consume_channel.consuming

    @property
    def in_flight(self) -> int:
        """Deliveries received whose handler has not finished yet."""
        return self.pool.in_flight

    @property
    def cancellations(self) -> int:
        """Times the broker cancelled the consumer (queue deleted, node failover)."""
        return self.consume_channel.cancellations

    @property
    def channel_closed_by_broker(self) -> int:
        """Times the broker closed the consuming channel."""
        return self.consume_channel.channel_closed_by_broker

    @property
    def stale_settlements(self) -> int:
        """Settlements discarded because their channel was gone (the broker redelivers)."""
        return self.settlements.stale

    @property
    def last_error(self) -> str | None:
        """The broker's last reason for closing the consuming channel (redacted)."""
        return self.consume_channel.last_error

    @property
    def queue_error(self) -> str | None:
        """The broker refuses the queue (missing, access refused, other arguments)."""
        return self.consume_channel.queue_error

    def health(self) -> HealthReport:
        """State for a health endpoint; never a password.

        Without a breaker (``breaker=False``), ``circuit_breaker`` reads ``closed``: nothing
        ever pauses. ``healthy`` is False while the connection is down, the breaker is open, or
        the broker refuses the queue (``queue_error``: missing, access refused, other arguments).
        """
        connection = self.connection
        channel = self.consume_channel
        breaker_open = self.breaker is not None and self.breaker.state is BreakerState.OPEN
        report = HealthReport.build(
            SYSTEM, self.name, connection.tracker, self.breaker, address=connection.address,
            connected=connection.connected, blocked=connection.blocked,
            connection_name=connection.connection_name,
            healthy=connection.connected and not breaker_open and channel.queue_error is None,
            paused=channel.paused,
            queue=self.queue_name, queue_error=channel.queue_error, consuming=channel.consuming,
            in_flight=self.pool.in_flight,
            prefetch=self.prefetch, workers=self.workers, max_deliveries=self.max_deliveries,
            cancellations=channel.cancellations,
            channel_closed_by_broker=channel.channel_closed_by_broker,
            stale_settlements=self.settlements.stale,
        )
        if channel.last_error:  # the broker refused the queue: that says more than the link
            report = dataclasses.replace(report, last_error=channel.last_error)
        return report

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
