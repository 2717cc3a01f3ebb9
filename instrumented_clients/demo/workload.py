"""The order flow: store an order, cache it, publish ``order.created``, consume it.

The workload knows each dependency as one call ``step(order)`` (thin wrappers over the clients,
built in :mod:`instrumented_clients.demo.clients`). It keeps the books that prove "no event
lost": every published order id stays outstanding until the consumer has seen it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from instrumented_clients.redaction import describe_error
from instrumented_clients.resilience import CircuitOpenError

__all__ = ["InterruptibleClock", "OrderFlow", "OrderStats", "Step", "order_id_of"]

_log = logging.getLogger("instrumented_clients.demo")


#: One dependency's part of the flow: raises when the order could not be handled.
Step = Callable[[dict[str, Any]], None]


class InterruptibleClock:
    """The system clock, except that every wait ends as soon as ``event`` is set.

    Given to the demo clients' retry policies so that a shutdown does not sit out a backoff
    schedule (``docker stop`` kills after 10 s): the remaining attempts run at once.
    """

    def __init__(self, event: threading.Event) -> None:
        self._event = event

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        self._event.wait(seconds)

    async def asleep(self, seconds: float) -> None:
        import asyncio

        await asyncio.sleep(0 if self._event.is_set() else seconds)


def order_id_of(message: Any) -> str:
    """The order id in a consumed ``order.created`` event: the publisher's ``publish_event``
    envelope ``{"type", "data", "timestamp"}`` as JSON bytes (a plain mapping works too)."""
    import json

    if isinstance(message, Mapping):
        event: Any = message
    else:
        body = getattr(message, "body", message)
        event = json.loads(bytes(body))
    data = event.get("data", event) if isinstance(event, Mapping) else {}
    return str(data.get("id")) if isinstance(data, Mapping) else "None"


@dataclass
class OrderStats:
    """What happened to the orders so far."""

    created: int = 0
    stored: int = 0
    store_failed: int = 0
    cached: int = 0
    cache_skipped: int = 0
    published: int = 0
    consumed: int = 0
    duplicates: int = 0
    outstanding: set[str] = field(default_factory=set)


class OrderFlow:
    """Runs the order flow at ``rate`` orders per second until ``stop`` is set.

    Args:
        database: stores the order (required: an order that cannot be stored goes no further).
        cache: caches it (optional: a failure only skips the cache).
        publisher: publishes (or buffers) the ``order.created`` event.
        rate: orders per second.
        stop: set to end :meth:`run`.
    """

    def __init__(self, database: Step, cache: Step | None, publisher: Step, *, rate: float,
                 stop: threading.Event) -> None:
        self.database = database
        self.cache = cache
        self.publisher = publisher
        self.interval = 1.0 / rate
        self.stop = stop
        self.stats = OrderStats()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.run, name="order-flow", daemon=True)
        self._random = random.Random()

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def new_order(self) -> dict[str, Any]:
        return {
            "id": str(uuid.uuid4()),
            "customer": f"customer-{self._random.randrange(1000):03d}",
            "amount_cents": self._random.randrange(100, 100_000),
            "created_at": time.time(),
            "event_type": "order.created",
        }

    def step_once(self) -> None:
        """One order through the whole flow; failures are counted, never raised."""
        order = self.new_order()
        with self._lock:
            self.stats.created += 1
        try:
            self.database(order)
        except Exception as error:
            with self._lock:
                self.stats.store_failed += 1
            if not isinstance(error, CircuitOpenError):
                _log.debug("order not stored: %s", describe_error(error))
            return
        with self._lock:
            self.stats.stored += 1
        if self.cache is not None:
            try:
                self.cache(order)
                cached = True
            except Exception:  # the cache is optional: the order goes on without it
                cached = False
            with self._lock:
                if cached:
                    self.stats.cached += 1
                else:
                    self.stats.cache_skipped += 1
        with self._lock:
            self.stats.outstanding.add(order["id"])
            self.stats.published += 1
        try:
            self.publisher(order)
        except Exception as error:  # counted as outstanding: the summary reports it as lost
            _log.warning("order event not accepted by the publisher: %s", describe_error(error))

    def on_consumed(self, message: Any) -> None:
        """The consumer's handler: settle the order's id (a second copy is a duplicate)."""
        order_id = order_id_of(message)
        with self._lock:
            if order_id in self.stats.outstanding:
                self.stats.outstanding.discard(order_id)
                self.stats.consumed += 1
            else:
                self.stats.duplicates += 1

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.stop.is_set():
            try:
                self.step_once()
            except Exception:  # the demo must keep running whatever a dependency does
                _log.exception("order flow step failed")
            next_at = max(next_at + self.interval, time.monotonic() - self.interval)
            self.stop.wait(max(0.0, next_at - time.monotonic()))

    @property
    def outstanding(self) -> int:
        with self._lock:
            return len(self.stats.outstanding)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            stats = self.stats
            return {"created": stats.created, "stored": stats.stored,
                    "store_failed": stats.store_failed, "cached": stats.cached,
                    "cache_skipped": stats.cache_skipped, "published": stats.published,
                    "consumed": stats.consumed, "duplicates": stats.duplicates,
                    "outstanding": len(stats.outstanding)}
