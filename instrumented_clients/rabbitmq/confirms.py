"""The confirm tracker: which sent messages the broker has not settled yet, by delivery tag.

Transport-agnostic and free of I/O: whatever owns the channel (pika's I/O thread, an asyncio
loop) tells it what was sent and what the broker answered, and gets back the messages to
resolve. It is used from that one thread only.

AMQP numbers a confirm-mode channel's publishes 1, 2, 3, ...; ``basic.ack``/``basic.nack`` name
one tag or, with ``multiple``, every tag up to it. A lost channel loses its tags: its unconfirmed
messages come back from :meth:`ConfirmTracker.channel_lost` in tag order, to be sent again first
on the next channel (the at-least-once re-send).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, Protocol, TypeVar

__all__ = ["ConfirmTracker", "Tracked"]


class Tracked(Protocol):
    """What the tracker needs of a message."""

    message_id: str
    sent_at: float
    returned: tuple[int, str] | None


M = TypeVar("M", bound=Tracked)


class ConfirmTracker(Generic[M]):
    """Unconfirmed messages of the current channel, oldest (lowest tag) first."""

    __slots__ = ("_next_tag", "_unconfirmed")

    def __init__(self) -> None:
        self._unconfirmed: OrderedDict[int, M] = OrderedDict()
        self._next_tag = 1

    def __len__(self) -> int:
        return len(self._unconfirmed)

    def __iter__(self) -> Iterator[M]:
        """The unconfirmed messages in tag order."""
        return iter(self._unconfirmed.values())

    @property
    def next_tag(self) -> int:
        """The tag the broker gives the next publish on this channel."""
        return self._next_tag

    def channel_opened(self) -> None:
        """A new confirm-mode channel: tags start again at 1 (call :meth:`channel_lost` for
        the old one first)."""
        self._next_tag = 1

    def sent(self, message: M, now: float) -> int:
        """Record one publish on the channel; returns its delivery tag."""
        tag = self._next_tag
        self._next_tag = tag + 1
        message.sent_at = now
        self._unconfirmed[tag] = message
        return tag

    def confirmed(self, tag: int, multiple: bool) -> list[M]:
        """The messages a ``basic.ack``/``basic.nack`` settles, in tag order (empty for a tag
        already settled, e.g. by a timeout)."""
        unconfirmed = self._unconfirmed
        if not multiple:
            message = unconfirmed.pop(tag, None)
            return [] if message is None else [message]
        settled: list[M] = []
        append = settled.append
        popitem = unconfirmed.popitem
        while unconfirmed:
            first, message = popitem(last=False)
            if first > tag:
                unconfirmed[first] = message
                unconfirmed.move_to_end(first, last=False)
                break
            append(message)
        return settled

    def returned(self, message_id: str, reply_code: int, reply_text: str) -> bool:
        """Mark the unconfirmed message ``message_id`` as returned (unroutable); its ack that
        follows then settles it as ``returned``. False when no such message is waiting."""
        # Returns are rare and precede their ack: a scan of the window beats an index kept up
        # for every message.
        for message in self._unconfirmed.values():
            if message.message_id == message_id and message.returned is None:
                message.returned = (reply_code, reply_text)
                return True
        return False

    def expired(self, horizon: float) -> list[M]:
        """Remove and return the messages sent at or before ``horizon`` (confirm timeout)."""
        unconfirmed = self._unconfirmed
        settled: list[M] = []
        while unconfirmed:
            tag = next(iter(unconfirmed))
            if unconfirmed[tag].sent_at > horizon:
                break
            settled.append(unconfirmed.pop(tag))
        return settled

    def take(self, matching: Callable[[M], bool]) -> list[M]:
        """Remove and return the unconfirmed messages ``matching`` accepts, in tag order."""
        tags = [tag for tag, message in self._unconfirmed.items() if matching(message)]
        return [self._unconfirmed.pop(tag) for tag in tags]

    def take_oldest(self) -> list[M]:
        """Remove and return the oldest unconfirmed message (the first the broker saw), if any."""
        if not self._unconfirmed:
            return []
        return [self._unconfirmed.popitem(last=False)[1]]

    def channel_lost(self) -> list[M]:
        """The channel is gone: every unconfirmed message, in tag order, with its return mark
        cleared (the next transmission is judged afresh). The tracker is empty afterwards."""
        lost = list(self._unconfirmed.values())
        self._unconfirmed.clear()
        for message in lost:
            message.returned = None
        return lost
