"""The consumer's pure parts: the message a handler sees, poison counting and ack batching.

Nothing here touches pika's connection or a thread; :mod:`~instrumented_clients.rabbitmq.consumer`
wires it to the I/O thread and the worker pool.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Delivery", "DeliveryCounter", "IncomingMessage", "RejectMessage", "plan_acks",
           "positive_int"]


class RejectMessage(Exception):
    """Raise from a handler to reject the message at once (``requeue=False``): the broker
    dead-letters it (when the queue has a dead-letter exchange) or drops it."""


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """One delivery, as the handler sees it.

    Attributes:
        body: the payload.
        message_id: the publisher's ``message_id`` (None when it set none).
        routing_key: the routing key it was published with.
        exchange: the exchange it was published to (``""``: the default exchange).
        redelivered: the broker delivered it before (to this or another consumer).
        delivery_count: failed deliveries before this one: the broker's ``x-delivery-count``
            on quorum queues, else this process's own count (which a restart resets).
        headers: the message headers (empty when none).
        properties: pika's ``BasicProperties`` as received.
        delivery_tag: the channel's tag, for logs only: the consumer settles it for you.
    """

    body: bytes
    message_id: str | None
    routing_key: str
    exchange: str
    redelivered: bool
    delivery_count: int
    headers: Mapping[str, Any] = field(default_factory=dict)
    properties: Any = None
    delivery_tag: int = 0


def broker_delivery_count(headers: Mapping[str, Any] | None) -> int | None:
    """The ``x-delivery-count`` header quorum queues add on redelivery (None elsewhere)."""
    if not headers:
        return None
    value = headers.get("x-delivery-count")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def poison_key(message_id: str | None, routing_key: str, body: bytes) -> str:
    """What identifies a message across redeliveries: its ``message_id``, else a digest of
    routing key and body (identical anonymous messages then share one count)."""
    if message_id:
        return message_id
    digest = hashlib.blake2b(body, digest_size=16, key=routing_key.encode()[:64])
    return "sha:" + digest.hexdigest()


class DeliveryCounter:
    """Failed deliveries per message, in process memory, bounded (least recently used out).

    Classic queues do not count deliveries, so the consumer does: a message whose handler
    failed ``limit`` times is rejected to the dead-letter exchange. The count lives in this
    process only: a restart (or another consumer process) starts again from zero, and a key
    evicted from a full counter does too. Thread-safe.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"poison_cache_size must be an int >= 1, got {capacity!r}")
        self.capacity = capacity
        self._counts: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def failed(self, key: str, at_least: int = 0) -> int:
        """Record one more failed delivery of ``key`` and return its count (raised to
        ``at_least`` when the broker knows of more)."""
        with self._lock:
            count = max(self._counts.pop(key, 0) + 1, at_least)
            self._counts[key] = count
            if len(self._counts) > self.capacity:
                self._counts.popitem(last=False)
            return count

    def get(self, key: str) -> int:
        if not self._counts:  # the common case: nothing failed lately; no lock needed
            return 0
        with self._lock:
            return self._counts.get(key, 0)

    def forget(self, key: str) -> None:
        if not self._counts:
            return
        with self._lock:
            self._counts.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()

    def __len__(self) -> int:
        return len(self._counts)


def plan_acks(outstanding: Iterable[int], acks: Iterable[int]) -> tuple[int | None, list[int]]:
    """Turn a batch of acks into as few ``basic.ack`` frames as is safe.

    ``basic.ack(tag, multiple=True)`` acks *every* unsettled tag up to ``tag``, so it may cover
    only a run of acked tags at the start of the channel's unsettled tags (in delivery order);
    the rest are acked one by one.

    Args:
        outstanding: the channel's unsettled tags, oldest first.
        acks: the tags to ack now (each also in ``outstanding``).

    Returns:
        ``(upto, singles)``: ack ``upto`` with ``multiple=True`` (None: no multi-ack; a run of
        one is returned as a single), then each tag of ``singles`` alone.
    """
    pending = set(acks)
    run: list[int] = []
    for tag in outstanding:
        if tag not in pending:
            break
        run.append(tag)
        pending.discard(tag)
    singles = sorted(pending)
    if len(run) > 1:
        return run[-1], singles
    return None, sorted([*run, *singles])


@dataclass(slots=True)
class Delivery:
    """A delivery on its way through the pool: its tag is valid only on the channel of
    ``generation``."""

    tag: int
    generation: int
    message: IncomingMessage
    _key: str | None = None

    @property
    def key(self) -> str:
        """The message's :func:`poison_key`, computed on first use (only failures need it)."""
        key = self._key
        if key is None:
            message = self.message
            key = self._key = poison_key(message.message_id, message.routing_key, message.body)
        return key


def positive_int(name: str, value: object, maximum: int | None = None) -> int:
    """``value`` if it is an int in ``[1, maximum]``, else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (
            maximum is not None and value > maximum):
        upper = f" and <= {maximum}" if maximum is not None else ""
        raise ValueError(f"{name} must be an int >= 1{upper}, got {value!r}")
    return value
