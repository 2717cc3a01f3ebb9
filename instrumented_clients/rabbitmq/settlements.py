"""The settlement batcher: handler outcomes back to the channel, in as few frames as is safe.

Transport-agnostic and free of I/O. Worker threads :meth:`~SettlementBatcher.add` outcomes;
the thread that owns the channel :meth:`~SettlementBatcher.flush`-es them, acking a run of
consecutive tags with one ``multiple`` ack. Delivery tags belong to one channel: each channel has
a generation, and a settlement of an older generation is discarded (counted as stale), never
sent on the new channel — the broker redelivers that message (at-least-once).
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from instrumented_clients.rabbitmq.incoming import Delivery, plan_acks
from instrumented_clients.resilience.events import ConsumeOutcome

__all__ = ["SettlementBatcher", "Settler"]


class Settler(Protocol):
    """The channel operations a flush needs (pika's ``Channel`` has them)."""

    def basic_ack(self, delivery_tag: int = 0, multiple: bool = False) -> None: ...

    def basic_nack(self, delivery_tag: int = 0, multiple: bool = False,
                   requeue: bool = True) -> None: ...

    def basic_reject(self, delivery_tag: int = 0, requeue: bool = True) -> None: ...


class SettlementBatcher:
    """Outcomes queued by workers, sent by the channel's thread."""

    def __init__(self) -> None:
        self._queue: deque[tuple[Delivery, ConsumeOutcome, float]] = deque()
        self._scheduled = False
        self._generation = 0
        self._outstanding: dict[int, None] = {}  # unsettled tags of the channel, oldest first
        self.stale = 0  # settlements discarded because their channel was gone

    # -- the channel's thread --------------------------------------------------------------------

    @property
    def generation(self) -> int:
        """The current channel's generation (grows with every channel opened or dropped)."""
        return self._generation

    def new_channel(self) -> None:
        """A channel opened or the old one is gone: its unsettled tags are void from now on."""
        self._generation += 1
        self._outstanding = {}

    def delivered(self, tag: int) -> int:
        """Record a delivery on the current channel; returns the generation it belongs to."""
        self._outstanding[tag] = None
        return self._generation

    def is_current(self, delivery: Delivery) -> bool:
        """The delivery's channel is still the current one (its tag may be settled)."""
        return delivery.generation == self._generation

    def flush(self, channel: Settler | None) -> list[tuple[ConsumeOutcome, float]]:
        """Send the queued settlements on ``channel`` (None: it is closed, every queued one is
        stale); returns ``(outcome, duration)`` of each one sent."""
        self._scheduled = False  # before draining: a settlement queued now schedules a flush
        queue = self._queue
        outstanding = self._outstanding
        generation = self._generation
        acks: dict[int, float] = {}
        sent: list[tuple[ConsumeOutcome, float]] = []
        for _ in range(len(queue)):
            delivery, outcome, duration = queue.popleft()
            if channel is None or delivery.generation != generation \
                    or delivery.tag not in outstanding:
                self.stale += 1
                continue
            if outcome == "ack":
                acks[delivery.tag] = duration
                continue
            del outstanding[delivery.tag]
            if outcome == "requeue":
                channel.basic_nack(delivery.tag, multiple=False, requeue=True)
            else:
                channel.basic_reject(delivery.tag, requeue=False)
            sent.append((outcome, duration))
        if not acks or channel is None:
            return sent
        upto, singles = plan_acks(outstanding, acks)
        if upto is not None:
            channel.basic_ack(upto, multiple=True)
        for tag in singles:
            channel.basic_ack(tag)
        for tag, duration in acks.items():
            del outstanding[tag]
            sent.append(("ack", duration))
        return sent

    # -- worker threads --------------------------------------------------------------------------

    def add(self, delivery: Delivery, outcome: ConsumeOutcome, duration: float) -> bool:
        """Queue one settlement; True when the caller must schedule a :meth:`flush` (the first
        of a burst)."""
        self._queue.append((delivery, outcome, duration))
        if self._scheduled:
            return False
        self._scheduled = True
        return True

    def unschedule(self) -> None:
        """The flush could not be scheduled (the loop is gone): the next :meth:`add` tries."""
        self._scheduled = False

    def pending(self) -> list[tuple[Delivery, ConsumeOutcome, float]]:
        """The settlements waiting for a flush (oldest first), without removing them."""
        return list(self._queue)

    def discard_pending(self) -> None:
        self._queue.clear()
