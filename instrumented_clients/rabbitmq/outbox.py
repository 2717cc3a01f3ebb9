"""The outbox: every message accepted and not yet sent, and the order it goes out in.

Transport-agnostic and free of network I/O (the optional spool is a local SQLite file). Producers
on any thread call :meth:`Outbox.accept`; the one thread that owns the channel (pika's I/O
thread, an asyncio loop) calls everything else.

Three lanes, sent in this order:

1. **re-send**: unconfirmed messages of a lost channel (in delivery-tag order) and what a
   previous process left in the spool;
2. **buffer**: an :class:`~instrumented_clients.resilience.buffer.EventBuffer` holding what
   arrived while nothing could be sent, bounded by its overflow policy;
3. **inbox**: live publishes, in arrival order.

A live publish never overtakes the buffer or a re-send: while either holds messages, the inbox is
moved behind them into the buffer (:meth:`Outbox.divert`).
"""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from instrumented_clients.rabbitmq.message import OutgoingMessage, properties_to_dict
from instrumented_clients.rabbitmq.spool import SpooledMessages
from instrumented_clients.resilience.buffer import EventBuffer, OverflowPolicy
from instrumented_clients.resilience.context import ClientContext

__all__ = ["Outbox", "SendResult"]


class SendResult(enum.Enum):
    """What a ``send`` callback given to :meth:`Outbox.send_in_order` did with one message."""

    SENT = 1      #: on the wire, now the confirm tracker's
    SETTLED = 2   #: not sent and already resolved (refused, unencodable): go on with the next
    BROKEN = 3    #: the channel broke: not sent; the outbox keeps it at the front, and stops


SENT, SETTLED, BROKEN = SendResult.SENT, SendResult.SETTLED, SendResult.BROKEN


class Outbox:
    """Accepted, unsent messages in their sending order, with flow control and the spool.

    Args:
        capacity: messages waiting at most (inbox and buffer): the buffer's capacity and the
            level at which :meth:`wait_for_room` makes producers wait.
        overflow: the publisher's overflow policy; ``block`` and ``raise`` act in
            :meth:`wait_for_room`, the buffer itself then drops the newest.
        block_timeout: seconds :meth:`wait_for_room` waits for room.
        context: the client's labels, clock and telemetry (for the buffer's metrics).
        on_drop: ``on_drop(message, reason)`` for every message the buffer drops.
        on_buffered: ``on_buffered(message)`` when a message enters the buffer.
        spool: keeps accepted messages across a crash until :meth:`spool_settled` (optional).
    """

    def __init__(
        self,
        capacity: int,
        overflow: OverflowPolicy,
        block_timeout: float,
        context: ClientContext,
        on_drop: Callable[[OutgoingMessage, str], None],
        on_buffered: Callable[[OutgoingMessage], None],
        spool: SpooledMessages | None = None,
    ) -> None:
        self.capacity = capacity
        self.overflow = overflow
        self.block_timeout = block_timeout
        buffer_policy = (OverflowPolicy.DROP_NEWEST
                         if overflow in (OverflowPolicy.BLOCK, OverflowPolicy.RAISE)
                         else overflow)
        self.buffer: EventBuffer[OutgoingMessage] = EventBuffer(
            capacity, overflow=buffer_policy, on_drop=on_drop, context=context)
        self.spool = spool
        self._on_buffered = on_buffered
        self._inbox: deque[OutgoingMessage] = deque()
        self._resend: deque[OutgoingMessage] = deque()
        self._spool_settled: list[int] = []
        self._room = threading.Condition(threading.Lock())
        self._room_waiters = 0
        self._drained = threading.Event()

    # -- any thread ------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Messages waiting to be sent (all three lanes)."""
        return len(self._inbox) + len(self.buffer) + len(self._resend)

    def full(self) -> bool:
        """Inbox and buffer hold ``capacity`` messages: a producer should wait for room."""
        return len(self._inbox) + len(self.buffer) >= self.capacity

    def wait_for_room(self, sending: bool) -> bool:
        """Flow control for a producer that found the outbox :meth:`full`; True when it may go
        on (the buffer's drop policy applies to what follows), False when it must refuse.

        With ``block``, wait up to ``block_timeout`` for room; with ``raise``, refuse at once.
        With the drop policies, wait only while ``sending`` (the channel drains the outbox, so
        the wait is short and a burst loses nothing); otherwise go on at once.
        """
        policy = self.overflow
        if policy is OverflowPolicy.RAISE:
            return False
        if policy is not OverflowPolicy.BLOCK and not sending:
            return True
        deadline = time.monotonic() + self.block_timeout
        with self._room:
            self._room_waiters += 1
            try:
                # Short slices: the sending thread reads _room_waiters without the lock, so a
                # notify can be missed; a slice bounds that to 50 ms.
                while self.full():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._room.wait(min(remaining, 0.05))
            finally:
                self._room_waiters -= 1
        return policy is not OverflowPolicy.BLOCK or not self.full()

    def accept(self, message: OutgoingMessage) -> None:
        """Take one live message (spooled first when a spool is configured)."""
        spool = self.spool
        if spool is not None and not spool.closed:
            message.spool_id = spool.add(message.exchange, message.routing_key, message.body,
                                         properties_to_dict(message.properties),
                                         message.mandatory)
        if self._drained.is_set():
            self._drained.clear()
        self._inbox.append(message)

    def wait_drained(self, timeout: float) -> bool:
        """Wait until nothing is pending or unconfirmed (see :meth:`check_drained`)."""
        return self._drained.wait(timeout)

    # -- the sending thread ----------------------------------------------------------------------

    @property
    def has_waiting_producers(self) -> bool:
        return self._room_waiters > 0

    @property
    def has_inbox(self) -> bool:
        """Live publishes are waiting in the inbox."""
        return bool(self._inbox)

    def __bool__(self) -> bool:
        return bool(self._inbox or self._resend or len(self.buffer))

    def resend_first(self, messages: list[OutgoingMessage]) -> None:
        """Queue ``messages`` (in order) after the re-sends already waiting, before the buffer."""
        self._resend.extend(messages)
        if messages and self._drained.is_set():
            self._drained.clear()

    def send_in_order(self, send: Callable[[OutgoingMessage, bool], SendResult],
                      budget: int) -> int:
        """Send up to ``budget`` messages through ``send(message, resent)``: re-sends, then the
        buffer, then the inbox. Returns how many re-sends went out.

        Stops at the first :data:`BROKEN`, keeping that message and the rest in order at the
        front. A live publish is held back (moved into the buffer) while an older lane still
        has messages; more than ``capacity`` messages left in the inbox overflow into the
        buffer, so memory stays bounded by the buffer's policy.
        """
        resent = 0
        resend = self._resend
        while budget > 0 and resend:
            message = resend.popleft()
            result = send(message, True)
            if result is SENT:
                resent += 1
                budget -= 1
            elif result is BROKEN:
                resend.appendleft(message)
                return resent
        if resend:
            self.divert()
            return resent
        buffer = self.buffer
        if len(buffer):
            if budget > 0:
                taken = buffer.take(budget)
                for index, message in enumerate(taken):
                    result = send(message, False)
                    if result is SENT:
                        budget -= 1
                    elif result is BROKEN:
                        resend.extend(taken[index:])
                        return resent
            if len(buffer):
                self.divert()
                return resent
        inbox = self._inbox
        popleft = inbox.popleft
        while budget > 0 and inbox:
            message = popleft()
            result = send(message, False)
            if result is SENT:
                budget -= 1
            elif result is BROKEN:
                resend.appendleft(message)
                return resent
        if len(inbox) > self.capacity:
            while len(inbox) > self.capacity:
                self._buffer(popleft())
        self.notify_room()
        return resent

    def divert(self, refuse: Callable[[OutgoingMessage], None] | None = None) -> None:
        """Move the inbox into the buffer (nothing can be sent, or older lanes come first).
        With ``refuse``, a message that cannot wait (a blocking publish) goes there instead."""
        inbox = self._inbox
        while inbox:
            message = inbox.popleft()
            if refuse is not None and message.sync:
                refuse(message)
            else:
                self._buffer(message)
        self.notify_room()

    def _buffer(self, message: OutgoingMessage) -> None:
        if self.buffer.put(message):
            self._on_buffered(message)

    def notify_room(self) -> None:
        """Wake producers waiting for room, once the backlog is below half the capacity: they
        refill in one burst instead of waking (and contending for the GIL) after every ack."""
        if self._room_waiters and (len(self._inbox) + len(self.buffer) <= self.capacity // 2):
            with self._room:
                self._room.notify_all()

    def check_drained(self, unconfirmed: int) -> None:
        """Signal :meth:`wait_drained` when nothing is pending and ``unconfirmed`` is 0."""
        if not (unconfirmed or self._inbox or self._resend or len(self.buffer)):
            self._drained.set()

    # -- spool -----------------------------------------------------------------------------------

    def spool_settled(self, message: OutgoingMessage) -> None:
        """``message`` is settled or dropped: forget it in the spool at the next
        :meth:`flush_spool`."""
        if message.spool_id is not None:
            self._spool_settled.append(message.spool_id)

    def flush_spool(self, on_error: Callable[[BaseException], None]) -> None:
        """Delete the settled messages from the spool (one transaction)."""
        if self._spool_settled and self.spool is not None:
            settled, self._spool_settled = self._spool_settled, []
            try:
                self.spool.remove(settled)
            except Exception as error:
                on_error(error)

    def recover(self, make: Callable[[Any], OutgoingMessage]) -> int:
        """Queue what a previous process left in the spool as re-sends (before anything new);
        ``make(record)`` turns a :class:`~instrumented_clients.rabbitmq.spool.SpoolRecord` into
        a message. Returns how many."""
        if self.spool is None:
            return 0
        records = self.spool.load()
        self.resend_first([make(record) for record in records])
        return len(records)

    def take_all(self, unconfirmed: list[OutgoingMessage]) -> list[OutgoingMessage]:
        """Closing: empty the re-send lane and the inbox; returns them with ``unconfirmed`` in
        sending order. The buffer is left to the caller."""
        leftovers = [*self._resend, *unconfirmed, *self._inbox]
        self._resend.clear()
        self._inbox.clear()
        return leftovers
