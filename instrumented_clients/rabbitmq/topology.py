"""Exchanges, queues and bindings declared on every connect and again after every reconnect.

A broker that restarted without persistence, or a node that replaced a failed one, may have lost
them; declaring is idempotent when the arguments match (and a 406 PRECONDITION_FAILED, a
permanent error, when they do not).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Binding", "Exchange", "Queue", "Topology", "declare_topology"]


@dataclass(frozen=True)
class Exchange:
    """An exchange to declare (``exchange_type``: direct, fanout, topic, headers)."""

    name: str
    exchange_type: str = "direct"
    durable: bool = True
    auto_delete: bool = False
    internal: bool = False
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Queue:
    """A queue to declare. ``arguments`` carries e.g. ``x-queue-type``, ``x-dead-letter-exchange``,
    ``x-delivery-limit``; :meth:`quorum` builds the usual quorum-queue form.

    ``passive=True`` only checks that the queue exists (the broker answers 404 NOT_FOUND when it
    does not) and changes nothing, for a queue someone else owns.
    """

    name: str
    durable: bool = True
    exclusive: bool = False
    auto_delete: bool = False
    arguments: Mapping[str, Any] = field(default_factory=dict)
    passive: bool = False

    @classmethod
    def quorum(
        cls,
        name: str,
        *,
        dead_letter_exchange: str | None = None,
        dead_letter_routing_key: str | None = None,
        delivery_limit: int | None = None,
        arguments: Mapping[str, Any] | None = None,
    ) -> Queue:
        """A durable quorum queue, optionally with a dead-letter exchange and delivery limit."""
        args: dict[str, Any] = {"x-queue-type": "quorum", **(arguments or {})}
        if dead_letter_exchange is not None:
            args["x-dead-letter-exchange"] = dead_letter_exchange
        if dead_letter_routing_key is not None:
            args["x-dead-letter-routing-key"] = dead_letter_routing_key
        if delivery_limit is not None:
            args["x-delivery-limit"] = delivery_limit
        return cls(name, durable=True, arguments=args)


@dataclass(frozen=True)
class Binding:
    """Bind ``queue`` to ``exchange`` with ``routing_key``."""

    queue: str
    exchange: str
    routing_key: str = ""
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Topology:
    """Everything declared after connecting: exchanges first, then queues, then bindings."""

    exchanges: Sequence[Exchange] = ()
    queues: Sequence[Queue] = ()
    bindings: Sequence[Binding] = ()

    def __bool__(self) -> bool:
        return bool(self.exchanges or self.queues or self.bindings)

    def merged(self, other: Topology) -> Topology:
        """Both topologies, ``self`` first (a consumer adds its queue to the shared one)."""
        return Topology(
            (*self.exchanges, *other.exchanges),
            (*self.queues, *other.queues),
            (*self.bindings, *other.bindings),
        )


def declare_topology(channel: Any, topology: Topology, on_done: Callable[[], None]) -> None:
    """Declare ``topology`` on an open pika channel, one step after the other, then ``on_done()``.

    Runs on the I/O thread. A refused declaration closes the channel; the caller's channel-close
    callback sees the broker's reply code.
    """
    steps: list[Callable[[Callable[[Any], None]], None]] = []
    for exchange in topology.exchanges:
        steps.append(functools.partial(_declare_exchange, channel, exchange))
    for queue in topology.queues:
        steps.append(functools.partial(_declare_queue, channel, queue))
    for binding in topology.bindings:
        steps.append(functools.partial(_bind, channel, binding))
    remaining = iter(steps)

    def next_step(_frame: Any = None) -> None:
        step = next(remaining, None)
        if step is None:
            on_done()
        else:
            step(next_step)

    next_step()


def _declare_exchange(channel: Any, e: Exchange, callback: Callable[[Any], None]) -> None:
    channel.exchange_declare(e.name, e.exchange_type, durable=e.durable,
                             auto_delete=e.auto_delete, internal=e.internal,
                             arguments=dict(e.arguments) or None, callback=callback)


def _declare_queue(channel: Any, q: Queue, callback: Callable[[Any], None]) -> None:
    if q.passive:
        channel.queue_declare(q.name, passive=True, callback=callback)
        return
    channel.queue_declare(q.name, durable=q.durable, exclusive=q.exclusive,
                          auto_delete=q.auto_delete, arguments=dict(q.arguments) or None,
                          callback=callback)


def _bind(channel: Any, b: Binding, callback: Callable[[Any], None]) -> None:
    channel.queue_bind(b.queue, b.exchange, routing_key=b.routing_key,
                       arguments=dict(b.arguments) or None, callback=callback)
