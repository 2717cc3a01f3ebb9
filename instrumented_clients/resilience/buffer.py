"""A bounded FIFO buffer that accounts for every item it ever took.

``accepted == delivered + dropped + held`` holds at every moment: an item leaves only by
:meth:`EventBuffer.take` (delivered), by a drop (``overflow``, ``expired``, ``shutdown``), or stays
held. :meth:`EventBuffer.restore` hands taken items back when their delivery failed. Every drop is
reported with its reason to the instrumentation and to the ``on_drop`` hook.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from instrumented_clients.resilience.clock import SYSTEM_CLOCK, Clock
from instrumented_clients.resilience.context import ClientContext
from instrumented_clients.resilience.errors import BufferFullError
from instrumented_clients.resilience.events import (
    DropReason,
    EventBuffered,
    EventsDropped,
    EventsFlushed,
    Instrumentation,
    get_default_instrumentation,
)

__all__ = ["BufferStats", "EventBuffer", "OverflowPolicy"]

T = TypeVar("T")
_log = logging.getLogger(__name__)


class OverflowPolicy(str, enum.Enum):
    """What a full buffer does with one more item."""

    DROP_OLDEST = "drop_oldest"
    DROP_NEWEST = "drop_newest"
    RAISE = "raise"
    BLOCK = "block"


@dataclass(frozen=True, slots=True)
class BufferStats:
    accepted: int
    delivered: int
    dropped: dict[str, int]
    held: int
    capacity: int

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


class EventBuffer(Generic[T]):
    """Bounded, thread-safe FIFO with an overflow policy and an optional maximum age.

    Args:
        capacity: most items held at once.
        overflow: :class:`OverflowPolicy` (default drop the oldest: the newest state matters most).
        max_age: seconds an item may wait before it is dropped as ``expired`` (None: forever).
        block_timeout: with ``BLOCK``, how long :meth:`put` waits for room before it raises
            :class:`BufferFullError`.
        on_drop: called as ``on_drop(item, reason)`` for every dropped item (a fallback
            path: log it, store it elsewhere); its exceptions are swallowed so they cannot lose
            further items.
        system, client: labels for the reported events.
        clock, instrumentation: injected.
        context: the client's labels, clock and instrumentation, in place of ``system``,
            ``client``, ``clock`` and ``instrumentation``.
    """

    def __init__(
        self,
        capacity: int = 1000,
        *,
        overflow: OverflowPolicy | str = OverflowPolicy.DROP_OLDEST,
        max_age: float | None = None,
        block_timeout: float = 5.0,
        on_drop: Callable[[T, DropReason], object] | None = None,
        system: str = "custom",
        client: str = "default",
        clock: Clock = SYSTEM_CLOCK,
        instrumentation: Instrumentation | None = None,
        context: ClientContext | None = None,
    ) -> None:
        if context is not None:
            system, client = context.system, context.client
            clock, instrumentation = context.clock, context.instrumentation
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be an int >= 1, got {capacity!r}")
        if max_age is not None and max_age <= 0:
            raise ValueError(f"max_age must be > 0 seconds or None, got {max_age!r}")
        try:
            self.overflow = OverflowPolicy(overflow)
        except ValueError:
            choices = ", ".join(policy.value for policy in OverflowPolicy)
            raise ValueError(f"overflow must be one of {choices}, got {overflow!r}") from None
        self.capacity = capacity
        self.max_age = max_age
        self.block_timeout = block_timeout
        self.system = system
        self.client = client
        self._on_drop = on_drop
        self._clock = clock
        self._instrumentation = instrumentation or get_default_instrumentation()
        self._items: deque[tuple[float, T]] = deque()
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._accepted = 0
        self._delivered = 0
        self._dropped: dict[str, int] = {"overflow": 0, "expired": 0, "shutdown": 0}

    def __len__(self) -> int:
        return len(self._items)

    def stats(self) -> BufferStats:
        with self._lock:
            return BufferStats(self._accepted, self._delivered, dict(self._dropped),
                               len(self._items), self.capacity)

    def put(self, item: T) -> bool:
        """Take ``item``; False when it was itself dropped (``DROP_NEWEST`` on a full buffer).

        Raises :class:`BufferFullError` (the item not taken) with ``RAISE``, or with ``BLOCK`` when
        no room appeared within ``block_timeout``.
        """
        dropped: list[tuple[T, DropReason]] = []
        refusal = None
        kept = True
        with self._lock:
            self._expire_locked(dropped)
            if len(self._items) >= self.capacity:
                if self.overflow is OverflowPolicy.RAISE:
                    refusal = f"buffer {self.client!r} is full ({self.capacity} items)"
                elif self.overflow is OverflowPolicy.BLOCK and not self._room.wait_for(
                    lambda: len(self._items) < self.capacity, self.block_timeout
                ):
                    refusal = f"buffer {self.client!r} stayed full for {self.block_timeout}s"
            if refusal is None:
                self._accepted += 1
                if len(self._items) >= self.capacity:
                    self._dropped["overflow"] += 1
                    if self.overflow is OverflowPolicy.DROP_NEWEST:
                        dropped.append((item, "overflow"))
                        kept = False
                    else:
                        dropped.append((self._items.popleft()[1], "overflow"))
                if kept:
                    self._items.append((self._clock.monotonic(), item))
            depth = len(self._items)
        if refusal is not None:
            self._report_drops(dropped, depth)  # expiries found on the way are still reported
            raise BufferFullError(refusal)
        self._instrumentation.emit(EventBuffered(self.system, self.client, depth, self.capacity))
        self._report_drops(dropped, depth)
        return kept

    def take(self, max_items: int | None = None) -> list[T]:
        """Remove and return up to ``max_items`` from the front (all when None), oldest first;
        items past ``max_age`` are dropped as ``expired`` instead."""
        dropped: list[tuple[T, DropReason]] = []
        with self._lock:
            self._expire_locked(dropped)
            count = len(self._items) if max_items is None else min(max_items, len(self._items))
            taken = [self._items.popleft()[1] for _ in range(count)]
            self._delivered += count
            depth = len(self._items)
            if count:
                self._room.notify_all()
        if taken:
            self._instrumentation.emit(EventsFlushed(self.system, self.client, count, depth))
        self._report_drops(dropped, depth)
        return taken

    def restore(self, items: Iterable[T]) -> None:
        """Put taken items back at the front, in their order, after a failed delivery.

        Restored items were accepted once already: they are never dropped for overflow here, so
        the buffer can briefly exceed its capacity rather than lose them.
        """
        restored = list(items)
        with self._lock:
            # Stamped no younger than the item now in front: they were ahead of it, and a fresh
            # stamp would shield every older item behind them from expiry (which looks only at
            # the front).
            stamp = self._clock.monotonic()
            if self._items:
                stamp = min(stamp, self._items[0][0])
            self._items.extendleft((stamp, item) for item in reversed(restored))
            self._delivered -= len(restored)

    def drain_for_shutdown(self) -> list[T]:
        """Drop everything still held with reason ``shutdown`` and return it."""
        with self._lock:
            dropped = [(item, "shutdown") for _, item in self._items]
            self._items.clear()
            self._dropped["shutdown"] += len(dropped)
            self._room.notify_all()
        self._report_drops(dropped, 0)  # type: ignore[arg-type]
        return [item for item, _ in dropped]

    def _expire_locked(self, dropped: list[tuple[T, DropReason]]) -> None:
        if self.max_age is None:
            return
        horizon = self._clock.monotonic() - self.max_age
        expired = 0
        while self._items and self._items[0][0] < horizon:
            dropped.append((self._items.popleft()[1], "expired"))
            expired += 1
        if expired:
            self._dropped["expired"] += expired
            self._room.notify_all()  # room for a put blocked under the BLOCK policy

    def _report_drops(self, dropped: list[tuple[T, DropReason]], depth: int) -> None:
        if not dropped:
            return
        counts: dict[DropReason, int] = {}
        for _, reason in dropped:
            counts[reason] = counts.get(reason, 0) + 1
        for reason, count in counts.items():
            self._instrumentation.emit(
                EventsDropped(self.system, self.client, reason, count, depth)
            )
        if self._on_drop is not None:
            for item, reason in dropped:
                try:
                    self._on_drop(item, reason)
                except Exception:  # a broken hook must not lose the next drops
                    _log.exception("on_drop hook failed for a %s drop", reason)
