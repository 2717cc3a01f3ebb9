"""Hand-off from the connection's I/O thread to an asyncio event loop, one wake-up per burst.

The asyncio clients keep pika on its I/O thread (see ``docs/rabbitmq-async.md``): what the I/O
thread produces for the loop (publish results, deliveries) goes through a :class:`LoopHandoff`.
Waking a loop from another thread costs a ``call_soon_threadsafe`` (a write to the loop's
self-pipe and a GIL hand-off); one per message costs a third of the publish rate, so items are
queued and the loop is woken once for everything queued before it runs. The other direction
(loop to I/O thread) is :meth:`RabbitConnection.call_soon
<instrumented_clients.rabbitmq.connection.RabbitConnection.call_soon>`, batched the same way.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["LoopFuture", "LoopHandoff"]

_log = logging.getLogger(__name__)
T = TypeVar("T")


class LoopHandoff(Generic[T]):
    """Items pushed from any thread, delivered in order on ``loop`` by ``deliver(item)``.

    Args:
        loop: the event loop that runs ``deliver``.
        deliver: called on the loop for each item, in push order; an exception is logged and
            the next item delivered.
    """

    __slots__ = ("_after", "_deliver", "_items", "_wake_pending", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, deliver: Callable[[T], None],
                 after: Callable[[], None] | None = None) -> None:
        self.loop = loop
        self._deliver = deliver
        self._after = after
        self._items: deque[T] = deque()
        self._wake_pending = False

    def push(self, item: T) -> None:
        """Queue ``item`` for the loop (any thread). Dropped when the loop is closed: nothing
        waits on it any more."""
        self._items.append(item)
        if self._wake_pending:
            return
        self._wake_pending = True
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed
            self._items.clear()

    def _drain(self) -> None:
        self._wake_pending = False  # before draining: an item pushed now wakes the loop again
        items = self._items
        deliver = self._deliver
        while items:
            try:
                deliver(items.popleft())
            except Exception:
                _log.exception("rabbitmq: delivering to the event loop failed")
        if self._after is not None:
            self._after()


class LoopFuture(Generic[T]):
    """The resolving side of an ``asyncio.Future`` that another thread settles.

    It has the two methods a ``concurrent.futures.Future`` offers its producer
    (``set_result``, ``set_exception``), callable from any thread; the result reaches
    :attr:`future` through a shared :class:`LoopHandoff`. A future the caller cancelled meanwhile
    is left as it is.
    """

    __slots__ = ("_handoff", "future")

    def __init__(self, handoff: LoopHandoff[tuple[asyncio.Future[Any], bool, Any]]) -> None:
        self._handoff = handoff
        self.future: asyncio.Future[T] = handoff.loop.create_future()

    def set_result(self, result: T) -> None:
        self._handoff.push((self.future, True, result))

    def set_exception(self, error: BaseException) -> None:
        self._handoff.push((self.future, False, error))

    def done(self) -> bool:
        return self.future.done()


def resolve(item: tuple[asyncio.Future[Any], bool, Any]) -> None:
    """:class:`LoopHandoff` ``deliver`` for :class:`LoopFuture` results (on the loop)."""
    future, ok, value = item
    if future.done():  # cancelled by its awaiting task
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
        # Counted and logged by the client already: a publish nobody awaits (fire and forget)
        # must not log "exception was never retrieved" on top.
        future.exception()
