"""The consumer's pika side: the consuming channel, driven on the connection's I/O thread.

Everything here runs on the I/O thread of a
:class:`~instrumented_clients.rabbitmq.connection.RabbitConnection`, except :meth:`wake`,
:meth:`stop` and the ``request_*`` methods (any thread). It opens a channel on every connect
(and after a broker-side close or a consumer cancellation, with backoff), consumes the queue,
hands each delivery to the :class:`~instrumented_clients.rabbitmq.consumer_worker.HandlerPool`,
sends the
:class:`~instrumented_clients.rabbitmq.settlements.SettlementBatcher`'s outcomes, and pauses
consumption while the circuit breaker is open.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from pika import exceptions as pika_errors

from instrumented_clients.rabbitmq.connection import RabbitConnection
from instrumented_clients.rabbitmq.consumer_worker import HandlerPool
from instrumented_clients.rabbitmq.errors import reply_code_category
from instrumented_clients.rabbitmq.incoming import (
    Delivery,
    DeliveryCounter,
    IncomingMessage,
    broker_delivery_count,
)
from instrumented_clients.rabbitmq.settlements import SettlementBatcher
from instrumented_clients.rabbitmq.topology import Topology, declare_topology
from instrumented_clients.redaction import redact_text
from instrumented_clients.resilience.breaker import BreakerState, CircuitBreaker
from instrumented_clients.resilience.errors import CircuitOpenError
from instrumented_clients.resilience.events import MessageConsumed
from instrumented_clients.telemetry.core import Telemetry

__all__ = ["ConsumeChannel"]

_log = logging.getLogger("instrumented_clients.rabbitmq.consumer")
SYSTEM = "rabbitmq"


class ConsumeChannel:
    """Consuming one queue on pika's I/O thread.

    Args:
        connection: the connection whose I/O thread runs this.
        queue_name: the queue to consume.
        prefetch: unacked deliveries at most.
        topology: re-declared on a new channel after a cancellation or a broker-side close.
        breaker: pauses consumption while open (None: never).
        pool: where deliveries run.
        batcher: where their outcomes come back.
        counter: the in-process poison counts (a classic queue's delivery count).
        telemetry: where consumed-message counts go.
    """

    def __init__(self, connection: RabbitConnection, *, queue_name: str, prefetch: int,
                 topology: Topology, breaker: CircuitBreaker | None, pool: HandlerPool,
                 batcher: SettlementBatcher, counter: DeliveryCounter,
                 telemetry: Telemetry) -> None:
        self.connection = connection
        self.name = connection.name
        self.queue_name = queue_name
        self.prefetch = prefetch
        self.topology = topology
        self.breaker = breaker
        self.pool = pool
        self.batcher = batcher
        self.counter = counter
        self.telemetry = telemetry
        self._conn: Any = None
        self.channel: Any = None  # the pika channel, once open
        self._opening = False
        self._consumer_tag: str | None = None
        self._needs_declare = False
        self._channel_failures = 0
        self._reopen_timer: Any = None
        self._resume_timer: Any = None
        self.consuming = False   # the broker confirmed the consumer (consume-ok)
        self.paused = False      # the breaker is open: not consuming
        self.probing = False     # half-open: consuming one message at a time
        self.stopping = False
        # observation
        self.cancellations = 0
        self.channel_closed_by_broker = 0
        self.last_error: str | None = None
        self.queue_error: str | None = None  # the broker refused the queue; cleared on consume-ok

    # -- any thread ------------------------------------------------------------------------------

    def wake(self) -> None:
        """Schedule a flush of the batcher's settlements (thread-safe)."""
        try:
            self.connection.call_soon(self.flush)
        except Exception:  # the I/O loop is gone (closed): the broker redelivers
            self.batcher.unschedule()

    def request_pause(self) -> None:
        """The breaker opened (from a worker): stop consuming, unless already paused."""
        if not self.paused:
            self.connection.call_soon(self._pause)

    def request_end_probe(self) -> None:
        """The breaker closed (from a worker): a probe in progress succeeded."""
        if self.probing:
            self.connection.call_soon(self._end_probe)

    # -- connection events -----------------------------------------------------------------------

    def on_connection_ready(self, connection: Any) -> None:
        """Connected, topology declared (by the connection): open the consuming channel."""
        self._cancel_reopen()
        self._conn = connection
        self.channel = None
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

    def _open_channel(self, connection: Any) -> None:
        self._reopen_timer = None
        if (self.stopping or connection is not self._conn or not connection.is_open
                or self.channel is not None or self._opening):
            return
        self._opening = True
        connection.channel(on_open_callback=self.connection.guarded(self._on_channel_open))

    def _on_channel_open(self, channel: Any) -> None:
        self._opening = False
        if self.stopping or self._conn is None or channel.connection is not self._conn:
            channel.close()
            return
        self.batcher.new_channel()
        self.channel = channel
        guarded = self.connection.guarded
        channel.add_on_close_callback(guarded(self._on_channel_closed))
        channel.add_on_cancel_callback(guarded(self._on_cancelled))
        channel.basic_qos(prefetch_count=1 if self.probing else self.prefetch,
                          callback=guarded(lambda _frame: self._after_qos(channel)))

    def _after_qos(self, channel: Any) -> None:
        if channel is not self.channel:
            return
        if self._needs_declare and self.topology:
            declare_topology(channel, self.topology,
                             self.connection.guarded(lambda: self._consume(channel)))
        else:
            self._consume(channel)

    def _consume(self, channel: Any) -> None:
        if channel is not self.channel or self.stopping or self.paused \
                or self._consumer_tag is not None:
            return
        self._needs_declare = False
        guarded = self.connection.guarded
        self._consumer_tag = channel.basic_consume(
            self.queue_name, guarded(self._on_message),
            callback=guarded(lambda _frame: self._on_consume_ok(channel)))

    def _on_consume_ok(self, channel: Any) -> None:
        if channel is not self.channel:
            return
        self.consuming = True
        self._channel_failures = 0
        self.queue_error = None
        _log.info("rabbitmq %s: consuming (prefetch %d)", self.name, self.prefetch)

    def _on_cancelled(self, _frame: Any) -> None:
        """The broker cancelled the consumer (queue deleted, quorum leader moved): start over on
        a new channel, re-declaring the topology."""
        self.cancellations += 1
        self.consuming = False
        _log.warning("rabbitmq %s: the broker cancelled the consumer (queue deleted or node "
                     "failover); re-declaring and consuming again", self.name)
        channel = self.channel
        if channel is not None and channel.is_open:
            channel.close()  # _on_channel_closed opens the next one

    def _on_channel_closed(self, channel: Any, reason: BaseException) -> None:
        if channel is not self.channel:
            return
        self._drop_channel()
        connection = self._conn
        if self.stopping or connection is None or not connection.is_open:
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
        self.channel = None
        self.consuming = False
        self._consumer_tag = None
        self.batcher.new_channel()

    def _cancel_reopen(self) -> None:
        if self._reopen_timer is not None:
            self.connection.remove_timeout(self._reopen_timer)
            self._reopen_timer = None

    def cancel(self) -> None:
        """Stop consuming (``basic.cancel``); deliveries already here still settle."""
        channel = self.channel
        self.consuming = False
        if channel is not None and channel.is_open and self._consumer_tag is not None:
            channel.basic_cancel(self._consumer_tag)
            self._consumer_tag = None

    def stop(self) -> None:
        """Closing (any thread): open no channel and start no consumer from now on; follow with
        :meth:`cancel` on the I/O thread."""
        self.stopping = True

    # -- the breaker pauses consumption ----------------------------------------------------------

    def _pause(self) -> None:
        breaker = self.breaker
        remaining = breaker.remaining() if breaker is not None else 0.0
        if self.paused or self.stopping or remaining <= 0:
            return
        self.paused = True
        self.probing = False
        _log.warning("rabbitmq %s: circuit breaker open after %d consecutive handler failures: "
                     "consumption paused for %.1f s", self.name,
                     self.connection.tracker.consecutive_failures, remaining)
        self.cancel()
        self._resume_timer = self.connection.call_later(remaining + 0.01, self._resume)

    def _resume(self) -> None:
        """The cool-down is over: consume one probe message (half-open)."""
        self._resume_timer = None
        breaker = self.breaker
        if breaker is None or not self.paused or self.stopping:
            return
        try:
            breaker.before_call("process")  # OPEN -> HALF_OPEN, admitting this probe
        except CircuitOpenError as exc:
            self._resume_timer = self.connection.call_later(max(exc.remaining, 0.05),
                                                            self._resume)
            return
        self.paused = False
        self.probing = breaker.state is BreakerState.HALF_OPEN
        channel = self.channel
        if channel is not None and channel.is_open:  # else the next channel consumes
            channel.basic_qos(
                prefetch_count=1 if self.probing else self.prefetch,
                callback=self.connection.guarded(lambda _frame: self._consume(channel)))

    def _end_probe(self) -> None:
        """The probe succeeded and the breaker closed: back to the full prefetch."""
        if not self.probing:
            return
        self.probing = False
        _log.info("rabbitmq %s: circuit breaker closed: consumption resumed", self.name)
        channel = self.channel
        if channel is not None and channel.is_open:
            channel.basic_qos(prefetch_count=self.prefetch)

    # -- deliveries and settlements --------------------------------------------------------------

    def _on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        if channel is not self.channel:
            return
        tag = method.delivery_tag
        headers = properties.headers or {}
        message = IncomingMessage(body, properties.message_id, method.routing_key,
                                  method.exchange, bool(method.redelivered), 0, headers,
                                  properties, tag)
        delivery = Delivery(tag, self.batcher.delivered(tag), message)
        count = broker_delivery_count(headers)
        if count is None and len(self.counter):
            count = self.counter.get(delivery.key)
        if count:
            delivery.message = dataclasses.replace(message, delivery_count=count)
        self.pool.submit(delivery)

    def flush(self) -> None:
        """Send the queued settlements: discard stale ones, batch the acks."""
        channel = self.channel
        sent = self.batcher.flush(channel if channel is not None and channel.is_open else None)
        emit = self.telemetry.emit
        for outcome, duration in sent:
            emit(MessageConsumed(SYSTEM, self.name, outcome, duration))
