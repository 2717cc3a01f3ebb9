"""The publisher's pika side: one confirm-mode channel, driven on the connection's I/O thread.

Everything here runs on the I/O thread of a
:class:`~instrumented_clients.rabbitmq.connection.RabbitConnection`. It opens the channel on
every connect, sends what the :class:`~instrumented_clients.rabbitmq.outbox.Outbox` hands out
(re-sends, buffer, inbox) within the window the
:class:`~instrumented_clients.rabbitmq.confirms.ConfirmTracker` and the
:class:`~instrumented_clients.rabbitmq.breaker_gate.BreakerGate` leave, and feeds the broker's
confirms, returns and channel closes back to them and to
:class:`~instrumented_clients.rabbitmq.outcomes.PublishOutcomes`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context
from pika import exceptions as pika_errors
from pika.spec import Basic

from instrumented_clients.rabbitmq import errors as rmq_errors
from instrumented_clients.rabbitmq.breaker_gate import BreakerGate
from instrumented_clients.rabbitmq.confirms import ConfirmTracker
from instrumented_clients.rabbitmq.connection import RabbitConnection, coalesce_writes
from instrumented_clients.rabbitmq.errors import (
    ChannelClosedError,
    ConnectionLostError,
    NotConnectedError,
)
from instrumented_clients.rabbitmq.message import OutgoingMessage
from instrumented_clients.rabbitmq.outbox import BROKEN, SENT, SETTLED, Outbox, SendResult
from instrumented_clients.rabbitmq.outcomes import PublishOutcomes, end_message_span
from instrumented_clients.rabbitmq.tracing import SUPPRESS_CONTRIB, end_span, start_send
from instrumented_clients.redaction import redact_text
from instrumented_clients.resilience.clock import Clock
from instrumented_clients.resilience.events import MessagesResent
from instrumented_clients.telemetry.otel import exception_type

__all__ = ["ConfirmChannel"]

_log = logging.getLogger("instrumented_clients.rabbitmq.publisher")
SYSTEM = "rabbitmq"
MISSING_EXCHANGE_HOLD = 5.0  # seconds a 404 for an exchange fails its messages without a send


class ConfirmChannel:
    """Sending, confirming and re-sending on pika's I/O thread.

    Args:
        connection: the connection whose I/O thread runs this.
        outbox, confirms, outcomes, gate: the publisher's state (see their modules).
        max_in_flight: unconfirmed messages at most.
        confirm_timeout: seconds before an unconfirmed message resolves as ``timeout``.
        tracer: returns the OpenTelemetry tracer, or None when tracing is off.
        clock: time source of send times and timeouts.
    """

    def __init__(self, connection: RabbitConnection, outbox: Outbox,
                 confirms: ConfirmTracker[OutgoingMessage], outcomes: PublishOutcomes,
                 gate: BreakerGate, max_in_flight: int, confirm_timeout: float,
                 tracer: Callable[[], Any], clock: Clock) -> None:
        self.connection = connection
        self.name = connection.name
        self.outbox = outbox
        self.confirms = confirms
        self.outcomes = outcomes
        self.gate = gate
        self.max_in_flight = max_in_flight
        self.confirm_timeout = confirm_timeout
        self._tracer = tracer
        self._clock = clock
        self.channel: Any = None  # the pika channel, once open
        self.ready = False        # in confirm mode: publishes go straight out
        self.closed = False
        self._wake_scheduled = False
        self._now = 0.0            # the clock when the current pump started
        self._probe_slot = False   # the gate granted the half-open probe; the next send is it
        self._missing_exchanges: dict[str, tuple[float, str]] = {}
        self._breaker_timer: Any = None
        self._sweep_timer: Any = None

    # -- any thread ------------------------------------------------------------------------------

    def wake(self) -> None:
        """Ask the I/O thread to send (thread-safe; one wake-up per burst)."""
        if not self._wake_scheduled:
            self._wake_scheduled = True
            self.connection.call_soon(self.pump)

    # -- connection events -----------------------------------------------------------------------

    def on_connection_ready(self, connection: Any) -> None:
        self._open(connection)

    def on_connection_lost(self, error: BaseException | None) -> None:
        self._channel_gone()

    def _open(self, connection: Any) -> None:
        if self.closed or not connection.is_open:
            return
        connection.channel(on_open_callback=self.connection.guarded(self._on_open))

    def _on_open(self, channel: Any) -> None:
        self.channel = channel
        guarded = self.connection.guarded
        channel.add_on_close_callback(guarded(self._on_closed))
        channel.add_on_return_callback(guarded(self._on_return))
        channel.confirm_delivery(
            ack_nack_callback=guarded(self._on_confirm),
            callback=guarded(lambda _frame: self._on_confirm_mode(channel)),
        )

    def _on_confirm_mode(self, channel: Any) -> None:
        if channel is not self.channel:
            return
        self.confirms.channel_opened()
        self.ready = True
        self._schedule_sweep()
        self.pump()

    def _channel_gone(self) -> None:
        """The channel died: its unconfirmed messages are sent again first on the next one, in
        delivery-tag order (a blocking publish gets ConnectionLostError instead)."""
        self.channel = None
        self.ready = False
        self.gate.reset()
        if self._sweep_timer is not None:
            self.connection.remove_timeout(self._sweep_timer)
            self._sweep_timer = None
        keep = []
        for message in self.confirms.channel_lost():
            if message.sync:
                self.outcomes.settle(message, None, ConnectionLostError(
                    "connection lost before the confirm", message.message_id))
            else:
                if message.span is not None:  # this transmission is lost; a re-send is another
                    end_message_span(message, "ConnectionLostError", "connection lost")
                keep.append(message)
        self.outbox.resend_first(keep)
        self.pump()

    def _on_closed(self, channel: Any, reason: BaseException) -> None:
        if channel is not self.channel:
            return
        if not isinstance(reason, pika_errors.ChannelClosedByBroker):
            self._channel_gone()  # the connection is going; on_connection_lost follows
            return
        code, text = reason.reply_code, reason.reply_text
        _log.warning("rabbitmq %s: channel closed by the broker: (%s) %s", self.name, code,
                     redact_text(text))
        if not rmq_errors.reply_code_category(code).is_transient:
            self._fail_culprits(code, text)
        self._channel_gone()
        connection = channel.connection
        if connection is not None and connection.is_open:
            self._open(connection)

    def _fail_culprits(self, code: int, text: str) -> None:
        """Fail the messages a permanent channel error was about; the others are re-sent."""
        exchange = rmq_errors.missing_exchange(text)
        if exchange is not None:
            self._missing_exchanges[exchange] = (
                self._clock.monotonic() + MISSING_EXCHANGE_HOLD, text)
            culprits = self.confirms.take(lambda message: message.exchange == exchange)
        else:
            culprits = self.confirms.take_oldest()  # the first the broker saw
        for message in culprits:
            self.outcomes.settle(message, None, ChannelClosedError(code, text,
                                                                   message.message_id))

    # -- sending ---------------------------------------------------------------------------------

    def pump(self) -> None:
        """Send what may be sent, in the outbox's order."""
        outbox = self.outbox
        if self.closed or not self.ready:
            self._wake_scheduled = False
            if not self.closed:
                outbox.divert(self._refuse)
                outbox.check_drained(len(self.confirms))
            return
        # Publishes made while this runs need no wake-up: the inbox is read last.
        self._wake_scheduled = True
        drained = False
        try:
            drained = self._send_ready(outbox)
        finally:
            channel = self.channel
            if channel is not None:
                coalesce_writes(channel.connection)
            # With the window full the next confirm (or the timeout sweep) pumps again, and a
            # wake-up per publish until then would find no room: the flag stays set.
            if not (self.ready and len(self.confirms) >= self.max_in_flight):
                self._wake_scheduled = False
                if drained and outbox.has_inbox:  # published after the inbox was read and
                    self.wake()                   # before the flag was cleared

    def _send_ready(self, outbox: Outbox) -> bool:
        """Send within the window; True when the inbox was emptied (nothing held it back)."""
        self._now = self._clock.monotonic()
        budget, wake_in = self.gate.budget(self.max_in_flight - len(self.confirms),
                                           bool(outbox))
        self._probe_slot = self.gate.probing
        if wake_in > 0 and self._breaker_timer is None:
            self._breaker_timer = self.connection.call_later(wake_in + 0.01,
                                                             self._breaker_wake)
        resent = outbox.send_in_order(self._send, budget)
        drained = not outbox.has_inbox
        if resent:
            self.outcomes.telemetry.emit(MessagesResent(SYSTEM, self.name, resent))
        if not self.ready:
            outbox.divert(self._refuse)
        outbox.check_drained(len(self.confirms))
        return drained

    def _refuse(self, message: OutgoingMessage) -> None:
        self.outcomes.settle(message, None, NotConnectedError("connection lost"))

    def _breaker_wake(self) -> None:
        self._breaker_timer = None
        self.pump()

    def _send(self, message: OutgoingMessage, resent: bool) -> SendResult:
        if self._missing_exchanges:
            missing = self._missing_exchanges.get(message.exchange)
            if missing is not None:
                if missing[0] > self._clock.monotonic():
                    error = ChannelClosedError(404, missing[1], message.message_id)
                    self.gate.refused(error)  # not counted as a transient failure
                    self.outcomes.settle(message, None, error)
                    return SETTLED
                del self._missing_exchanges[message.exchange]
        try:
            if message.origin is None:
                self.channel.basic_publish(message.exchange, message.routing_key, message.body,
                                           message.properties, message.mandatory)
            else:
                self._send_traced(message, resent)
        except (pika_errors.AMQPChannelError, pika_errors.AMQPConnectionError) as exc:
            _log.warning("rabbitmq %s: publish failed on the I/O thread: %s", self.name,
                         redact_text(str(exc)))
            self.ready = False  # the close callback re-opens or reconnects
            return BROKEN
        except Exception as exc:  # the message itself cannot be encoded (e.g. a header type)
            self.gate.refused(exc)
            self.outcomes.settle(message, None, exc)
            return SETTLED
        self.confirms.sent(message, self._now)
        if resent:
            message.resent = True
        if self._probe_slot:
            self._probe_slot = False
            self.gate.sent(message)
        return SENT

    def _send_traced(self, message: OutgoingMessage, resent: bool) -> None:
        """``basic_publish`` inside a send span (a sync message's span is its publish_sync's),
        with contrib instrumentation suppressed: the headers keep the context we injected."""
        tracer = self._tracer()
        if tracer is not None and not message.sync:
            if message.span is not None:
                end_span(message.span, "ConnectionLostError", "connection lost")
            message.span = start_send(tracer, message, self.channel, resent)
        token = otel_context.attach(SUPPRESS_CONTRIB)
        try:
            self.channel.basic_publish(message.exchange, message.routing_key, message.body,
                                       message.properties, message.mandatory)
        except BaseException as exc:
            if message.span is not None:
                end_span(message.span, exception_type(exc), str(exc))
                message.span = None
            raise
        finally:
            otel_context.detach(token)

    # -- confirms --------------------------------------------------------------------------------

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        outcome = "ack" if isinstance(method, Basic.Ack) else "nack"
        self.outcomes.confirmed(self.confirms.confirmed(method.delivery_tag, method.multiple),
                                outcome)
        outbox = self.outbox
        outbox.flush_spool(self._spool_failed)
        # A full window left the wake-up flag set (see pump) and this confirm made room: clear
        # it before looking at the outbox, or a publish arriving now would find the flag set
        # and wait for the next timeout sweep.
        self._wake_scheduled = False
        if outbox or outbox.has_waiting_producers:
            self.pump()
        else:
            outbox.check_drained(len(self.confirms))

    def _on_return(self, _channel: Any, method: Any, properties: Any, _body: bytes) -> None:
        self.confirms.returned(properties.message_id, method.reply_code, method.reply_text)

    def _spool_failed(self, _error: BaseException) -> None:
        _log.exception("rabbitmq %s: spool update failed", self.name)

    def _schedule_sweep(self) -> None:
        interval = min(1.0, self.confirm_timeout / 4)
        self._sweep_timer = self.connection.call_later(interval, self._sweep)

    def _sweep(self) -> None:
        """Resolve messages unconfirmed for longer than ``confirm_timeout`` as ``timeout``."""
        self._sweep_timer = None
        if not self.ready:
            return
        for message in self.confirms.expired(self._clock.monotonic() - self.confirm_timeout):
            self.outcomes.settle(message, "timeout")
        self.outbox.flush_spool(self._spool_failed)
        self._schedule_sweep()
        self.pump()

    # -- closing ---------------------------------------------------------------------------------

    def shutdown(self, kept_error: BaseException) -> None:
        """Closing (on the I/O thread, or anywhere once it is gone): settle what is left —
        kept in the spool when there is one, else dropped with reason ``shutdown``."""
        if self.closed:
            return
        self.closed = True
        leftovers = self.outbox.take_all(self.confirms.channel_lost())
        if self.outbox.spool is not None:
            self.outcomes.keep_in_spool = True
            leftovers.extend(self.outbox.buffer.take())
            self.outcomes.kept_at_shutdown(leftovers, kept_error)
            self.outbox.flush_spool(self._spool_failed)
            return
        self.outcomes.dropped_at_shutdown(leftovers)
        self.outbox.buffer.drain_for_shutdown()
