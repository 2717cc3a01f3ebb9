"""The consumer's worker side: the handler runner and the pool it runs in.

Nothing here touches pika. :class:`HandlerRunner` runs the handler for one delivery and decides
its outcome (ack, requeue, reject: poison counting, breaker, metrics, span); :class:`HandlerPool`
runs deliveries in worker threads, never on the I/O thread, and knows how many are in flight.
The outcome goes back to the channel's thread through a
:class:`~instrumented_clients.rabbitmq.settlements.SettlementBatcher`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from instrumented_clients.rabbitmq.incoming import (
    Delivery,
    DeliveryCounter,
    IncomingMessage,
    RejectMessage,
)
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
from instrumented_clients.resilience.tracker import ConnectionTracker
from instrumented_clients.telemetry.core import OperationRecorder

__all__ = ["HandlerPool", "HandlerRunner"]

_log = logging.getLogger("instrumented_clients.rabbitmq.consumer")


class HandlerRunner:
    """Runs the handler for one delivery and decides how it is settled. Thread-safe.

    Args:
        name: the ``client`` label (for logs).
        queue_name: the consumed queue (span name and attributes).
        handler: the user's handler.
        policy: retries of the handler inside the worker (``max_attempts=1``: none).
        breaker: the breaker over the handler, or None.
        counter: failed deliveries per message (poison counting).
        max_deliveries: reject at this many failed deliveries (None: requeue forever).
        recorder: the ``process`` operation's recorder.
        tracker: the connection's failure bookkeeping (handler runs count too).
        trace_link_only: a delivery's span starts a new trace linked to the producer's.
        on_breaker_open: called (on the worker thread) when the breaker is open after a run.
        on_breaker_closed: called when it is closed after a run.
    """

    def __init__(self, *, name: str, queue_name: str, handler: Callable[[IncomingMessage], object],
                 policy: RetryPolicy, breaker: CircuitBreaker | None, counter: DeliveryCounter,
                 max_deliveries: int | None, recorder: OperationRecorder,
                 tracker: ConnectionTracker, trace_link_only: bool,
                 on_breaker_open: Callable[[], None],
                 on_breaker_closed: Callable[[], None]) -> None:
        self.name = name
        self.queue_name = queue_name
        self.handler = handler
        self.policy = policy
        self.breaker = breaker
        self.counter = counter
        self.max_deliveries = max_deliveries
        self.recorder = recorder
        self.tracker = tracker
        self.trace_link_only = trace_link_only
        self._on_breaker_open = on_breaker_open
        self._on_breaker_closed = on_breaker_closed
        self._lock = threading.Lock()  # the tracker is shared by every worker

    def run(self, delivery: Delivery) -> tuple[ConsumeOutcome, float]:
        """Run the handler once (or on the retry policy); returns the settlement and the
        handler's duration in seconds."""
        message = delivery.message
        recorder = self.recorder
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
            if self.policy.max_attempts == 1:
                self.handler(message)
            else:
                self.policy.call(self.handler, message)
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
        tracker = self.tracker
        op: Outcome
        with self._lock:
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
        if len(self.counter):  # skip hashing the body when nothing has failed lately
            self.counter.forget(delivery.key)

    def _report_to_breaker(self, breaker: CircuitBreaker, error: BaseException | None) -> None:
        if error is None:
            breaker.on_success()
        else:
            breaker.on_failure(error)
        if breaker.remaining() > 0:
            self._on_breaker_open()
        elif breaker.state is BreakerState.CLOSED:
            self._on_breaker_closed()

    def _after_failure(self, delivery: Delivery, exc: Exception) -> ConsumeOutcome:
        message = delivery.message
        limit = self.max_deliveries
        failures = self.counter.failed(delivery.key, message.delivery_count + 1)
        text = redact_text(f"{type(exc).__name__}: {exc}")[:300]
        if limit is not None and failures >= limit:
            self.counter.forget(delivery.key)
            _log.error("rabbitmq %s: message %s failed %d time(s) (max_deliveries=%d): rejected "
                       "to the dead-letter exchange: %s", self.name, message.message_id,
                       failures, limit, text)
            return "reject"
        # A traceback for the first failure only: a poison message would repeat it.
        _log.warning("rabbitmq %s: handler failed for message %s (failure %d), requeued: %s",
                     self.name, message.message_id, failures, text,
                     exc_info=exc if failures == 1 else None)
        return "requeue"


class HandlerPool:
    """Deliveries run in worker threads; counts what is in flight and running.

    Args:
        workers: threads.
        name: thread name prefix.
        run: ``run(delivery)``, called in a worker thread for each admitted delivery.
        is_current: ``is_current(delivery)``: False once the delivery's channel is gone (it is
            then skipped: the broker redelivers it).
    """

    def __init__(self, workers: int, name: str, run: Callable[[Delivery], None],
                 is_current: Callable[[Delivery], bool]) -> None:
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix=f"consumer-{name}")
        self._run = run
        self._is_current = is_current
        self._cond = threading.Condition(threading.Lock())
        self._local = threading.local()
        self._in_flight = 0   # submitted, handler not yet finished (or skipped)
        self._running = 0     # handlers executing right now
        self._stopping = False

    @property
    def in_flight(self) -> int:
        """Deliveries submitted whose handler has not finished yet."""
        return self._in_flight

    @property
    def stopping(self) -> bool:
        return self._stopping

    def in_handler(self) -> bool:
        """True when called from a handler this pool runs."""
        return bool(getattr(self._local, "in_handler", False))

    def submit(self, delivery: Delivery) -> None:
        """Run ``delivery`` in a worker (left unacked when the pool is shut down)."""
        with self._cond:
            self._in_flight += 1
        try:
            self._executor.submit(self._process, delivery)
        except RuntimeError:  # the pool is shut down (stopping): leave it unacked
            self._done(running=False)

    def process_inline(self, delivery: Delivery) -> None:
        """Run one delivery in the calling thread, exactly as a worker would."""
        with self._cond:
            self._in_flight += 1
        self._process(delivery)

    def _process(self, delivery: Delivery) -> None:
        with self._cond:
            if self._stopping or not self._is_current(delivery):
                # Stopping, or the channel died while this waited: the broker redelivers it.
                self._in_flight -= 1
                self._cond.notify_all()
                return
            self._running += 1
        self._local.in_handler = True
        try:
            self._run(delivery)
        finally:
            self._local.in_handler = False
            self._done(running=True)

    def _done(self, running: bool) -> None:
        with self._cond:
            if running:
                self._running -= 1
            self._in_flight -= 1
            self._cond.notify_all()

    def stop(self) -> None:
        """Run nothing more; deliveries not started are skipped."""
        with self._cond:
            self._stopping = True

    def wait_for_handlers(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for running handlers (other than the caller's own);
        returns how many are still running."""
        own = 1 if self.in_handler() else 0  # close() from a handler
        with self._cond:
            self._cond.wait_for(lambda: self._running <= own, timeout=max(timeout, 0.0))
            return self._running - own

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
