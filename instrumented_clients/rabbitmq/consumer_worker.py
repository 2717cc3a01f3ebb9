"""The worker-thread half of the consumer: run the handler, decide the outcome, queue it.

Runs in the consumer's ``ThreadPoolExecutor``, never on the I/O thread. The outcome goes back to
the I/O thread through a deque and one ``call_soon`` per burst.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

from instrumented_clients.rabbitmq.incoming import Delivery, DeliveryCounter, RejectMessage
from instrumented_clients.rabbitmq.tracing import (
    REDELIVERED,
    SETTLEMENT,
    process_attributes,
    process_parent,
)
from instrumented_clients.redaction import redact_text
from instrumented_clients.resilience.breaker import BreakerState, CircuitBreaker
from instrumented_clients.resilience.events import ConsumeOutcome, Outcome
from instrumented_clients.resilience.retry import RetryPolicy

if TYPE_CHECKING:
    from collections.abc import Callable

    from instrumented_clients.rabbitmq.connection import RabbitConnection
    from instrumented_clients.rabbitmq.incoming import IncomingMessage
    from instrumented_clients.telemetry.core import OperationRecorder

__all__ = ["HandlerRunnerMixin"]

_log = logging.getLogger("instrumented_clients.rabbitmq.consumer")


class HandlerRunnerMixin:
    """Worker-thread half of :class:`~instrumented_clients.rabbitmq.consumer.ResilientConsumer`."""

    if TYPE_CHECKING:
        name: str
        queue_name: str
        trace_link_only: bool
        handler: Callable[[IncomingMessage], object]
        handler_policy: RetryPolicy
        breaker: CircuitBreaker | None
        max_deliveries: int | None
        connection: RabbitConnection
        _recorder: OperationRecorder
        _counter: DeliveryCounter
        _cond: threading.Condition
        _local: threading.local
        _stopping: bool
        _stopped: threading.Event
        _generation: int
        _in_flight: int
        _running: int
        _paused: bool
        _probing: bool
        _settlements: deque[tuple[Delivery, ConsumeOutcome, float]]
        _flush_scheduled: bool

        def _flush(self) -> None: ...
        def _pause(self) -> None: ...
        def _end_probe(self) -> None: ...

    def _process(self, delivery: Delivery) -> None:
        with self._cond:
            if self._stopping or delivery.generation != self._generation:
                # Stopping, or the channel died while this waited: the broker redelivers it.
                self._in_flight -= 1
                self._cond.notify_all()
                return
            self._running += 1
        self._local.in_handler = True
        try:
            outcome, duration = self._run_handler(delivery)
            self._settle_later(delivery, outcome, duration)
        finally:
            self._local.in_handler = False
            with self._cond:
                self._running -= 1
                self._in_flight -= 1
                self._cond.notify_all()

    def _run_handler(self, delivery: Delivery) -> tuple[ConsumeOutcome, float]:
        message = delivery.message
        recorder = self._recorder
        scope = None
        if recorder.tracing:
            scope = recorder.begin(*process_parent(message.headers, self.trace_link_only))
            if scope is not None:
                scope.span.set_attributes(process_attributes(
                    self.queue_name, message.exchange, message.routing_key, message.message_id,
                    message.delivery_tag, len(message.body)))
        started = time.perf_counter()
        error: BaseException | None = None
        outcome: ConsumeOutcome = "ack"
        try:
            if self.handler_policy.max_attempts == 1:
                self.handler(message)
            else:
                self.handler_policy.call(self.handler, message)
        except RejectMessage as exc:
            error, outcome = exc, "reject"
            self._forget(delivery)
        except Exception as exc:
            error = exc
            outcome = self._after_failure(delivery, exc)
        else:
            self._forget(delivery)
        duration = time.perf_counter() - started
        if self.breaker is not None and not isinstance(error, RejectMessage):
            self._report_to_breaker(self.breaker, error)
        retried = message.redelivered or message.delivery_count > 0
        tracker = self.connection.tracker
        op: Outcome
        with self._cond:
            if error is None:
                if tracker.consecutive_failures:
                    tracker.record_success()
                op = "success_after_retry" if retried else "success"
            else:
                tracker.record_failure()
                op = "failure_after_retry" if retried else "failure"
        if scope is not None:
            span = scope.span
            span.set_attribute(SETTLEMENT, outcome)
            if message.redelivered:
                span.set_attribute(REDELIVERED, True)
        recorder.finish(op, duration, message.delivery_count + 1, scope, error)
        return outcome, duration

    def _forget(self, delivery: Delivery) -> None:
        if len(self._counter):  # skip hashing the body when nothing has failed lately
            self._counter.forget(delivery.key)

    def _report_to_breaker(self, breaker: CircuitBreaker, error: BaseException | None) -> None:
        if error is None:
            breaker.on_success()
        else:
            breaker.on_failure(error)
        if breaker.remaining() > 0:
            if not self._paused:
                self.connection.call_soon(self._pause)
        elif self._probing and breaker.state is BreakerState.CLOSED:
            self.connection.call_soon(self._end_probe)

    def _after_failure(self, delivery: Delivery, exc: Exception) -> ConsumeOutcome:
        message = delivery.message
        limit = self.max_deliveries
        failures = self._counter.failed(delivery.key, message.delivery_count + 1)
        text = redact_text(f"{type(exc).__name__}: {exc}")[:300]
        if limit is not None and failures >= limit:
            self._counter.forget(delivery.key)
            _log.error("rabbitmq %s: message %s failed %d time(s) (max_deliveries=%d): rejected "
                       "to the dead-letter exchange: %s", self.name, message.message_id,
                       failures, limit, text)
            return "reject"
        # A traceback for the first failure only: a poison message would repeat it.
        _log.warning("rabbitmq %s: handler failed for message %s (failure %d), requeued: %s",
                     self.name, message.message_id, failures, text,
                     exc_info=exc if failures == 1 else None)
        return "requeue"

    def _settle_later(self, delivery: Delivery, outcome: ConsumeOutcome,
                      duration: float) -> None:
        self._settlements.append((delivery, outcome, duration))
        if not self._flush_scheduled and not self._stopped.is_set():
            self._flush_scheduled = True
            try:
                self.connection.call_soon(self._flush)
            except Exception:  # the I/O loop is gone (closed): the broker redelivers
                self._flush_scheduled = False
