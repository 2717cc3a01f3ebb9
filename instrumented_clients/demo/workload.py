"""The order flow: store an order, cache it, publish ``order.created``, consume it.

The workload only knows dependencies as objects with ``name``, ``health()`` and ``step(order)``,
so the raw-driver adapters and the library's clients are interchangeable here. It keeps the
books that prove "no event lost": every published order id stays outstanding until the consumer
has seen it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from instrumented_clients.demo.probes import describe_error
from instrumented_clients.resilience import CircuitOpenError

__all__ = ["OrderFlow", "OrderStats", "Step"]

_log = logging.getLogger("instrumented_clients.demo")


class Step(Protocol):
    """A dependency as the workload sees it."""

    name: str

    def health(self) -> Mapping[str, Any]: ...

    def step(self, order: dict[str, Any]) -> None: ...


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
        database: required; an order that cannot be stored goes no further.
        cache: optional; a failure only skips the cache.
        publisher: publishes (or buffers) the ``order.created`` event; never raises.
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
            self.database.step(order)
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
                self.cache.step(order)
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
        self.publisher.step(order)

    def on_consumed(self, event: Mapping[str, Any]) -> None:
        """The consumer's handler: settle the order's id (a second copy is a duplicate)."""
        order_id = str(event.get("id"))
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
