"""Resolving a publish: its future, metrics, breaker, span and spool entry, in one place.

Transport-agnostic and free of network I/O; used from the thread that owns the channel. The
future may be a ``concurrent.futures.Future`` or an ``asyncio.Future`` created on that thread:
both are resolved through ``set_result``/``set_exception``, and one the caller cancelled is left
alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import InvalidStateError

from instrumented_clients.rabbitmq.breaker_gate import BreakerGate
from instrumented_clients.rabbitmq.errors import MessageDroppedError, PublishNackedError
from instrumented_clients.rabbitmq.message import OutgoingMessage, PublishResult
from instrumented_clients.rabbitmq.outbox import Outbox
from instrumented_clients.rabbitmq.tracing import end_span
from instrumented_clients.resilience.events import EventsDropped, PublishConfirmed
from instrumented_clients.resilience.tracker import ConnectionTracker
from instrumented_clients.telemetry.core import OperationRecorder, Telemetry
from instrumented_clients.telemetry.otel import exception_type

__all__ = ["PublishOutcomes"]

_log = logging.getLogger("instrumented_clients.rabbitmq.publisher")
SYSTEM = "rabbitmq"
_ALREADY_DONE = (InvalidStateError, asyncio.InvalidStateError)


class PublishOutcomes:
    """Settles messages for one publisher.

    Args:
        name: the ``client`` label.
        telemetry: where confirm and drop counts go.
        recorder: the ``publish`` operation's recorder (outcome and duration per message).
        tracker: the connection's failure bookkeeping (a nack counts as a failure).
        gate: the breaker gate (a settled probe frees its slot; outcomes reach the breaker).
        outbox: the outbox whose spool forgets settled messages.
        on_drop: the user's ``on_drop(message, reason)`` hook, if any.
    """

    def __init__(self, name: str, telemetry: Telemetry, recorder: OperationRecorder,
                 tracker: ConnectionTracker, gate: BreakerGate, outbox: Outbox,
                 on_drop: Callable[[OutgoingMessage, str], object] | None) -> None:
        self.name = name
        self.telemetry = telemetry
        self.recorder = recorder
        self.tracker = tracker
        self.gate = gate
        self.outbox = outbox
        self.on_drop = on_drop
        self.keep_in_spool = False  # closing with a spool: drops stay in the spool

    def confirmed(self, messages: list[OutgoingMessage], outcome: str) -> None:
        """Settle the messages of one ``basic.ack``/``basic.nack`` (metrics counted once)."""
        if not messages:
            return
        counts: dict[str, int] = {}
        settle = self.settle
        if outcome != "ack" or not self.gate.idle or self.tracker.consecutive_failures:
            for message in messages:
                settle(message, outcome, None, counts)
            self.emit_confirms(counts)
            return
        # The hot path: plain acks of live publishes (no return, span, spool or probe; no
        # failure streak to reset). The same steps as settle(), one clock read per frame.
        record = self.recorder.record
        breaker = self.gate.breaker
        now = time.monotonic()
        plain = 0
        for message in messages:
            if message.returned is not None or message.span is not None or message.sync \
                    or message.spool_id is not None or message.recorded:
                settle(message, outcome, None, counts)
                continue
            plain += 1
            message.recorded = True
            resent = message.resent
            if breaker is not None:
                breaker.on_success()
            record("success_after_retry" if resent else "success", now - message.started)
            future = message.future
            if future is not None:
                try:  # noqa: SIM105 (suppress() costs an object per message here)
                    future.set_result(PublishResult("ack", message.message_id, resent))
                except _ALREADY_DONE:  # cancelled by the caller
                    pass
        if plain:
            counts["ack"] = counts.get("ack", 0) + plain
        self.emit_confirms(counts)

    def emit_confirms(self, counts: dict[str, int]) -> None:
        for outcome, count in counts.items():
            self.telemetry.emit(PublishConfirmed(SYSTEM, self.name, outcome, count))  # type: ignore[arg-type]

    def settle(self, message: OutgoingMessage, outcome: str | None,
               error: BaseException | None = None,
               counts: dict[str, int] | None = None) -> None:
        """Resolve one message with a confirm ``outcome`` (``ack``, ``nack``, ``timeout``) or,
        with ``outcome=None``, fail it with ``error``. Confirm outcomes are added to ``counts``
        (the caller emits them once per frame) or emitted at once."""
        self.outbox.spool_settled(message)
        self.gate.settled(message)
        result: PublishResult | None = None
        if outcome is not None:
            returned = message.returned
            if returned is not None and outcome == "ack":
                outcome = "returned"
            if counts is None:
                self.emit_confirms({outcome: 1})
            else:
                counts[outcome] = counts.get(outcome, 0) + 1
            if returned is None:
                result = PublishResult(outcome, message.message_id, message.resent)  # type: ignore[arg-type]
            else:
                result = PublishResult(outcome, message.message_id, message.resent,  # type: ignore[arg-type]
                                       returned[0], returned[1])
        delivered = outcome == "ack" or outcome == "returned"
        tracker = self.tracker
        if delivered:
            if tracker.consecutive_failures:  # the common case costs one check
                tracker.record_success()
        elif outcome is not None:
            tracker.record_failure()
        if not message.sync:
            breaker = self.gate.breaker
            if breaker is None:
                pass
            elif delivered:
                breaker.on_success()
            elif outcome is not None:
                breaker.on_failure(PublishNackedError(outcome, message.message_id))
            if not message.recorded:
                message.recorded = True
                if outcome == "ack":
                    op = "success_after_retry" if message.resent else "success"
                else:
                    op = "failure"
                self.recorder.record(op, time.monotonic() - message.started)  # type: ignore[arg-type]
        if message.span is not None:
            if outcome == "ack":
                end_message_span(message, None)
            elif outcome is not None:
                end_message_span(message, outcome)
            else:
                end_message_span(message, exception_type(error) if error else "error",
                                 str(error or ""))
        future = message.future
        if future is not None:
            try:
                if result is not None:
                    future.set_result(result)
                else:
                    future.set_exception(error or RuntimeError("message not delivered"))
            except _ALREADY_DONE:  # cancelled by the caller, or already failed
                pass

    def buffered(self, message: OutgoingMessage) -> None:
        """A message entered the buffer: counted once as ``buffered`` (its confirm later does
        not count again)."""
        if not message.sync and not message.recorded:
            message.recorded = True
            self.recorder.record("buffered", time.monotonic() - message.started)

    def dropped(self, message: OutgoingMessage, reason: str) -> None:
        """The buffer dropped ``message`` (``overflow``, ``expired``, ``shutdown``)."""
        if message.span is not None:
            message.span.add_event("buffer.dropped", {"reason": reason})
        self.outbox.spool_settled(message)
        if not self.keep_in_spool:
            end_message_span(message, "dropped", f"dropped ({reason})")
            future = message.future
            if future is not None and not future.done():
                with contextlib.suppress(*_ALREADY_DONE):
                    future.set_exception(MessageDroppedError(reason, message.message_id))
        if self.on_drop is not None:
            self.on_drop(message, reason)

    def dropped_at_shutdown(self, messages: list[OutgoingMessage]) -> None:
        """Closing without a spool: ``messages`` were never delivered."""
        if not messages:
            return
        self.telemetry.emit(EventsDropped(SYSTEM, self.name, "shutdown", len(messages), 0))
        for message in messages:
            try:
                self.dropped(message, "shutdown")
            except Exception:
                _log.exception("rabbitmq %s: on_drop hook failed", self.name)

    def kept_at_shutdown(self, messages: list[OutgoingMessage], error: BaseException) -> None:
        """Closing with a spool: ``messages`` stay there for the next start; their futures
        fail with ``error``."""
        for message in messages:
            future = message.future
            if future is not None and not future.done():
                with contextlib.suppress(*_ALREADY_DONE):
                    future.set_exception(error)
            message.spool_id = None


def end_message_span(message: OutgoingMessage, error_type: str | None,
                     description: str = "") -> None:
    """End the message's current send span, if any."""
    span = message.span
    if span is None:
        return
    message.span = None
    end_span(span, error_type, description)

