"""The I/O-thread half of :class:`~instrumented_clients.rabbitmq.ResilientPublisher`.

Everything here runs on the connection's I/O thread: the confirm-mode channel, sending in order
(re-sends, then the buffer, then live publishes), confirms and returns, timeouts, the breaker's
probe, drops. The thread-facing half (``publish()`` and friends) is in ``publisher.py``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import InvalidStateError
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from pika import exceptions as pika_errors
from pika.spec import Basic

from instrumented_clients.rabbitmq import errors as rmq_errors
from instrumented_clients.rabbitmq.connection import coalesce_writes
from instrumented_clients.rabbitmq.errors import (
    ChannelClosedError,
    ConnectionLostError,
    MessageDroppedError,
    NotConnectedError,
    PublishNackedError,
)
from instrumented_clients.rabbitmq.message import OutgoingMessage, PublishResult
from instrumented_clients.rabbitmq.tracing import SUPPRESS_CONTRIB, end_span, start_send
from instrumented_clients.redaction import redact_text
from instrumented_clients.resilience.breaker import BreakerState
from instrumented_clients.resilience.events import EventsDropped, MessagesResent, PublishConfirmed
from instrumented_clients.telemetry.otel import exception_type

if TYPE_CHECKING:
    from collections.abc import Callable

    from instrumented_clients.rabbitmq.connection import RabbitConnection
    from instrumented_clients.rabbitmq.spool import SpooledMessages
    from instrumented_clients.resilience.breaker import CircuitBreaker
    from instrumented_clients.resilience.buffer import EventBuffer
    from instrumented_clients.resilience.clock import Clock
    from instrumented_clients.telemetry.core import OperationRecorder, Telemetry

__all__ = ["PublisherDelivery"]

_log = logging.getLogger(__name__)
SYSTEM = "rabbitmq"


class PublisherDelivery:
    """Sending, confirming and re-sending, on the I/O thread."""

    if TYPE_CHECKING:
        name: str
        telemetry: Telemetry
        connection: RabbitConnection
        breaker: CircuitBreaker | None
        buffer: EventBuffer[OutgoingMessage]
        spool: SpooledMessages | None
        max_in_flight: int
        max_pending_events: int
        confirm_timeout: float
        _clock: Clock
        _recorder: OperationRecorder
        _user_on_drop: Callable[[OutgoingMessage, str], object] | None
        _inbox: deque[OutgoingMessage]
        _resend: deque[OutgoingMessage]
        _unconfirmed: OrderedDict[int, OutgoingMessage]
        _missing_exchanges: dict[str, tuple[float, str]]
        _spool_settled: list[int]
        _room: threading.Condition
        _room_waiters: int
        _drained: threading.Event
        _closed: bool
        _pump_scheduled: bool
        _channel: Any
        _channel_ready: bool
        _next_tag: int
        _probe: OutgoingMessage | None
        _breaker_timer: Any
        _sweep_timer: Any

        def _tracer(self) -> Any: ...

    # -- the I/O thread: connection events --------------------------------------------------------

    def on_connection_ready(self, connection: Any) -> None:
        self._open_channel(connection)

    def _open_channel(self, connection: Any) -> None:
        if self._closed or not connection.is_open:
            return
        connection.channel(on_open_callback=self.connection.guarded(self._on_channel_open))

    def _on_channel_open(self, channel: Any) -> None:
        self._channel = channel
        channel.add_on_close_callback(self.connection.guarded(self._on_channel_closed))
        channel.add_on_return_callback(self.connection.guarded(self._on_return))
        channel.confirm_delivery(
            ack_nack_callback=self.connection.guarded(self._on_confirm),
            callback=self.connection.guarded(lambda _frame: self._on_confirm_mode(channel)),
        )

    def _on_confirm_mode(self, channel: Any) -> None:
        if channel is not self._channel:
            return
        self._next_tag = 1
        self._channel_ready = True
        self._schedule_sweep()
        self._pump()

    def on_connection_lost(self, error: BaseException | None) -> None:
        self._channel_gone()

    def _channel_gone(self) -> None:
        """The channel died: its unconfirmed messages are re-sent first on the next one, in
        delivery-tag order (a blocking publish gets ConnectionLostError instead)."""
        self._channel = None
        self._channel_ready = False
        self._probe = None
        if self._sweep_timer is not None:
            self.connection.remove_timeout(self._sweep_timer)
            self._sweep_timer = None
        lost = list(self._unconfirmed.values())
        self._unconfirmed.clear()
        keep = []
        for message in lost:
            if message.sync:
                self._settle(message, None, ConnectionLostError(
                    "connection lost before the confirm", message.message_id))
            else:
                message.returned = None
                if message.span is not None:  # this transmission is lost; a re-send is another
                    end_span(message.span, "ConnectionLostError", "connection lost")
                    message.span = None
                keep.append(message)
        self._resend.extend(keep)
        self._pump()

    def _on_channel_closed(self, channel: Any, reason: BaseException) -> None:
        if channel is not self._channel:
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
        connection = self.connection._connection
        if connection is not None and connection.is_open:
            self._open_channel(connection)

    def _fail_culprits(self, code: int, text: str) -> None:
        """Fail the messages a permanent channel error was about; the others are re-sent."""
        exchange = rmq_errors.missing_exchange(text)
        if exchange is not None:
            self._missing_exchanges[exchange] = (self._clock.monotonic() + 5.0, text)
            culprits = [tag for tag, m in self._unconfirmed.items() if m.exchange == exchange]
        else:
            culprits = list(self._unconfirmed)[:1]  # the oldest is the first the broker saw
        for tag in culprits:
            message = self._unconfirmed.pop(tag)
            self._settle(message, None, ChannelClosedError(code, text, message.message_id))

    # -- the I/O thread: sending ------------------------------------------------------------------

    def _pump(self) -> None:
        """Send what may be sent, in order: re-sends, buffer, inbox."""
        self._pump_scheduled = False
        if self._closed:
            return
        if not self._channel_ready:
            self._divert_inbox()
            self._check_drained()
            return
        try:
            self._send_in_order()
        finally:
            if self._channel is not None:
                coalesce_writes(self._channel.connection)

    def _send_in_order(self) -> None:
        budget = self._breaker_budget(self.max_in_flight - len(self._unconfirmed))
        resent = 0
        while budget > 0 and self._resend and self._channel_ready:
            if self._send(self._resend.popleft(), resent=True):
                resent += 1
                budget -= 1
            elif not self._channel_ready:
                break
        if resent:
            self.telemetry.emit(MessagesResent(SYSTEM, self.name, resent))
        if self._resend or not self._channel_ready:
            self._divert_inbox()
            return
        if len(self.buffer):
            if budget > 0:
                taken = self.buffer.take(budget)
                for index, message in enumerate(taken):
                    if self._send(message):
                        budget -= 1
                    elif not self._channel_ready:
                        # The channel broke under us: the failed message went to the front of
                        # the re-send lane; the rest follow it there, in order.
                        self._resend.extend(taken[index + 1:])
                        break
            if len(self.buffer) or not self._channel_ready:
                self._divert_inbox()
                self._notify_room()
                return
        inbox = self._inbox
        while budget > 0 and inbox and self._channel_ready:
            if self._send(inbox.popleft()):
                budget -= 1
        # Producers outrunning the broker: keep memory bounded by the buffer's policy.
        if len(inbox) > self.max_pending_events:
            while len(inbox) > self.max_pending_events:
                self._buffer(inbox.popleft())
        self._notify_room()
        self._check_drained()

    def _breaker_budget(self, room: int) -> int:
        breaker = self.breaker
        if breaker is None or breaker.state is BreakerState.CLOSED:
            return room
        if self._probe is not None or room <= 0:
            return 0
        if not (self._resend or len(self.buffer) or self._inbox):
            return 0  # ask for the probe slot only with a message to probe with
        remaining = breaker.remaining()
        if remaining > 0:
            if self._breaker_timer is None:
                self._breaker_timer = self.connection.call_later(remaining + 0.01,
                                                                 self._breaker_wake)
            return 0
        try:
            breaker.before_call("publish")
        except Exception:
            return 0
        self._probe = _PROBE_PENDING
        return 1

    def _breaker_wake(self) -> None:
        self._breaker_timer = None
        self._pump()

    def _send(self, message: OutgoingMessage, resent: bool = False) -> bool:
        missing = self._missing_exchanges.get(message.exchange) if self._missing_exchanges \
            else None
        if missing is not None:
            if missing[0] > self._clock.monotonic():
                error = ChannelClosedError(404, missing[1], message.message_id)
                if self._probe is _PROBE_PENDING and self.breaker is not None:
                    self._probe = None
                    self.breaker.on_failure(error)  # not counted: the broker answered
                self._settle(message, None, error)
                return False
            del self._missing_exchanges[message.exchange]
        tag = self._next_tag
        try:
            if message.origin is None:
                self._channel.basic_publish(message.exchange, message.routing_key, message.body,
                                            message.properties, message.mandatory)
            else:
                self._send_traced(message, resent)
        except (pika_errors.AMQPChannelError, pika_errors.AMQPConnectionError) as exc:
            _log.warning("rabbitmq %s: publish failed on the I/O thread: %s", self.name,
                         redact_text(str(exc)))
            self._resend.appendleft(message)
            self._channel_ready = False  # the close callback re-opens or reconnects
            return False
        except Exception as exc:  # the message itself cannot be encoded (e.g. a header type)
            if self._probe is _PROBE_PENDING and self.breaker is not None:
                self._probe = None
                self.breaker.on_failure(exc)
            self._settle(message, None, exc)
            return False
        self._next_tag = tag + 1
        message.sent_at = self._clock.monotonic()
        if resent:
            message.resent = True
        self._unconfirmed[tag] = message
        if self._probe is _PROBE_PENDING:
            self._probe = message
        return True

    def _send_traced(self, message: OutgoingMessage, resent: bool) -> None:
        """``basic_publish`` inside a send span (a sync message's span is its publish_sync's),
        with contrib instrumentation suppressed: the headers keep the context we injected."""
        tracer = self._tracer()
        if tracer is not None and not message.sync:
            if message.span is not None:
                end_span(message.span, "ConnectionLostError", "connection lost")
            message.span = start_send(tracer, message, self._channel, resent)
        token = otel_context.attach(SUPPRESS_CONTRIB)
        try:
            self._channel.basic_publish(message.exchange, message.routing_key, message.body,
                                        message.properties, message.mandatory)
        except BaseException as exc:
            if message.span is not None:
                end_span(message.span, exception_type(exc), str(exc))
                message.span = None
            raise
        finally:
            otel_context.detach(token)

    def _buffer(self, message: OutgoingMessage) -> None:
        kept = self.buffer.put(message)
        if kept and not message.sync and not message.recorded:
            message.recorded = True
            self._recorder.record("buffered", time.monotonic() - message.started)

    def _divert_inbox(self) -> None:
        inbox = self._inbox
        while inbox:
            message = inbox.popleft()
            if message.sync and not self._channel_ready:
                self._settle(message, None, NotConnectedError("connection lost"))
            else:
                self._buffer(message)
        self._notify_room()

    def _notify_room(self) -> None:
        # Wake waiting producers only below half the capacity: they then refill in one burst
        # instead of being woken (and contending for the GIL) after every ack frame.
        if self._room_waiters and (len(self._inbox) + len(self.buffer)
                                   <= self.max_pending_events // 2):
            with self._room:
                self._room.notify_all()

    def _check_drained(self) -> None:
        if not (self._inbox or self._resend or self._unconfirmed or len(self.buffer)):
            self._drained.set()

    # -- the I/O thread: confirms ------------------------------------------------------------------

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        outcome = "ack" if isinstance(method, Basic.Ack) else "nack"
        unconfirmed = self._unconfirmed
        counts: dict[str, int] = {}
        if method.multiple:
            tag = method.delivery_tag
            settle = self._settle
            while unconfirmed:
                first = next(iter(unconfirmed))
                if first > tag:
                    break
                settle(unconfirmed.pop(first), outcome, None, counts)
        else:
            message = unconfirmed.pop(method.delivery_tag, None)
            if message is not None:
                self._settle(message, outcome, None, counts)
        self._emit_confirms(counts)
        self._flush_spool()
        if self._inbox or self._resend or len(self.buffer) or self._room_waiters:
            self._pump()
        else:
            self._check_drained()

    def _on_return(self, _channel: Any, method: Any, properties: Any, _body: bytes) -> None:
        # Returns are rare and precede the message's ack: a scan of the window beats an index
        # maintained for every message.
        message_id = properties.message_id
        for message in self._unconfirmed.values():
            if message.message_id == message_id and message.returned is None:
                message.returned = (method.reply_code, method.reply_text)
                break

    def _emit_confirms(self, counts: dict[str, int]) -> None:
        for outcome, count in counts.items():
            self.telemetry.emit(PublishConfirmed(SYSTEM, self.name, outcome, count))  # type: ignore[arg-type]

    def _settle(self, message: OutgoingMessage, outcome: str | None,
                error: BaseException | None = None,
                counts: dict[str, int] | None = None) -> None:
        """Resolve one message: metrics, breaker, span, spool and future. Confirm outcomes are
        added to ``counts`` (emitted by the caller, once per frame) or emitted at once."""
        if message.spool_id is not None:
            self._spool_settled.append(message.spool_id)
        if self._probe is message:
            self._probe = None
        result: PublishResult | None = None
        if outcome is not None:
            returned = message.returned
            if returned is not None and outcome == "ack":
                outcome = "returned"
            if counts is None:
                self._emit_confirms({outcome: 1})
            else:
                counts[outcome] = counts.get(outcome, 0) + 1
            if returned is None:
                result = PublishResult(outcome, message.message_id, message.resent)  # type: ignore[arg-type]
            else:
                result = PublishResult(outcome, message.message_id, message.resent,  # type: ignore[arg-type]
                                       returned[0], returned[1])
        tracker = self.connection.tracker
        if outcome == "ack" or outcome == "returned":
            if tracker.consecutive_failures:  # the common case costs one check
                tracker.record_success()
        elif outcome is not None:
            tracker.record_failure()
        breaker = self.breaker
        if not message.sync:
            if breaker is None:
                pass
            elif outcome == "ack" or outcome == "returned":
                breaker.on_success()
            elif outcome is not None:
                breaker.on_failure(PublishNackedError(outcome, message.message_id))
            if not message.recorded:
                message.recorded = True
                if outcome == "ack":
                    op = "success_after_retry" if message.resent else "success"
                else:
                    op = "failure"
                self._recorder.record(op, time.monotonic() - message.started)  # type: ignore[arg-type]
        if message.span is not None:
            if outcome == "ack":
                self._end_span(message, None)
            elif outcome is not None:
                self._end_span(message, outcome)
            else:
                self._end_span(message, exception_type(error) if error else "error",
                               str(error or ""))
        future = message.future
        if future is not None:
            try:
                if result is not None:
                    future.set_result(result)
                else:
                    future.set_exception(error or RuntimeError("message not delivered"))
            except InvalidStateError:  # cancelled by the caller, or already failed
                pass

    @staticmethod
    def _end_span(message: OutgoingMessage, error_type: str | None,
                  description: str = "") -> None:
        span = message.span
        if span is None:
            return
        message.span = None
        end_span(span, error_type, description)

    def _flush_spool(self) -> None:
        if self._spool_settled and self.spool is not None:
            settled, self._spool_settled = self._spool_settled, []
            try:
                self.spool.remove(settled)
            except Exception:
                _log.exception("rabbitmq %s: spool update failed", self.name)

    def _schedule_sweep(self) -> None:
        interval = min(1.0, self.confirm_timeout / 4)
        self._sweep_timer = self.connection.call_later(interval, self._sweep)

    def _sweep(self) -> None:
        """Resolve messages unconfirmed for longer than ``confirm_timeout`` as ``timeout``."""
        self._sweep_timer = None
        if not self._channel_ready:
            return
        horizon = self._clock.monotonic() - self.confirm_timeout
        unconfirmed = self._unconfirmed
        while unconfirmed:
            tag = next(iter(unconfirmed))
            if unconfirmed[tag].sent_at > horizon:
                break
            self._settle(unconfirmed.pop(tag), "timeout")
        self._flush_spool()
        self._schedule_sweep()
        self._pump()

    def _on_buffer_drop(self, message: OutgoingMessage, reason: str) -> None:
        if message.span is not None:
            message.span.add_event("buffer.dropped", {"reason": reason})
        if message.spool_id is not None:
            self._spool_settled.append(message.spool_id)
        if not self._closed or self.spool is None:
            self._end_span(message, "dropped", f"dropped ({reason})")
            future = message.future
            if future is not None and not future.done():
                future.set_exception(MessageDroppedError(reason, message.message_id))
        if self._user_on_drop is not None:
            self._user_on_drop(message, reason)

    def _report_shutdown_drops(self, messages: list[OutgoingMessage]) -> None:
        if not messages:
            return
        self.telemetry.emit(EventsDropped(SYSTEM, self.name, "shutdown", len(messages), 0))
        for message in messages:
            try:
                self._on_buffer_drop(message, "shutdown")
            except Exception:
                _log.exception("rabbitmq %s: on_drop hook failed", self.name)


_PROBE_PENDING = OutgoingMessage.__new__(OutgoingMessage)  # marker: the next send is the probe
