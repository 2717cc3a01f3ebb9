"""Deliveries run as tasks on an asyncio event loop, at most ``concurrency`` at once.

The asyncio consumer's counterpart of the sync consumer's worker pool: the I/O thread
:meth:`~LoopHandlerPool.submit`-s each delivery (one wake-up of the loop per burst, through a
:class:`~instrumented_clients.rabbitmq.loop_bridge.LoopHandoff`); the loop starts a task per
delivery while fewer than ``concurrency`` run, and queues the rest in arrival order.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

from instrumented_clients.rabbitmq.incoming import Delivery
from instrumented_clients.rabbitmq.loop_bridge import LoopHandoff

__all__ = ["LoopHandlerPool"]


class LoopHandlerPool:
    """Coroutine handlers for deliveries, on the loop given to :meth:`bind`.

    Args:
        concurrency: handlers running at once at most.
        run: ``await run(delivery)`` runs the handler and settles the delivery.
        is_current: ``is_current(delivery)``: False once the delivery's channel is gone (it is
            then skipped: the broker redelivers it).
    """

    def __init__(self, concurrency: int, run: Callable[[Delivery], Awaitable[None]],
                 is_current: Callable[[Delivery], bool]) -> None:
        self.concurrency = concurrency
        self._run = run
        self._is_current = is_current
        self._handoff: LoopHandoff[Delivery] | None = None
        self._queued: deque[Delivery] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        # Delivered and not finished: the I/O thread counts in, the loop counts out (one writer
        # each, so no lock).
        self._submitted = 0
        self._finished = 0
        self._stopping = False

    @property
    def in_flight(self) -> int:
        """Deliveries submitted whose handler has not finished (or been skipped) yet."""
        return self._submitted - self._finished

    @property
    def running(self) -> int:
        """Handlers running now."""
        return len(self._tasks)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run the handlers on ``loop`` (before the first delivery; the same loop again is
        fine)."""
        if self._handoff is None:
            self._handoff = LoopHandoff(loop, self._arrived)
        elif self._handoff.loop is not loop:
            raise RuntimeError("the consumer is bound to another event loop")

    # -- the I/O thread --------------------------------------------------------------------------

    def submit(self, delivery: Delivery) -> None:
        """Hand ``delivery`` to the loop (from the I/O thread)."""
        handoff = self._handoff
        if handoff is None:  # not started: nothing can be delivered yet
            raise RuntimeError("deliveries before the consumer was bound to a loop")
        self._submitted += 1
        handoff.push(delivery)

    # -- the loop --------------------------------------------------------------------------------

    def _arrived(self, delivery: Delivery) -> None:
        self._queued.append(delivery)
        self._start_next()

    def _start_next(self) -> None:
        queued = self._queued
        while queued and len(self._tasks) < self.concurrency:
            delivery = queued.popleft()
            if self._stopping or not self._is_current(delivery):
                # Stopping, or the channel died while it waited: the broker redelivers it.
                self._finished += 1
                continue
            task = asyncio.ensure_future(self._run(delivery))
            self._tasks.add(task)
            task.add_done_callback(self._done)
        if self._stopping:
            self._finished += len(queued)
            queued.clear()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._finished += 1
        if not task.cancelled() and task.exception() is not None:  # run() settles its errors
            task.get_loop().call_exception_handler({
                "message": "rabbitmq: a delivery's task failed", "exception": task.exception(),
                "task": task})
        self._start_next()

    def stop(self) -> None:
        """Start no handler from now on; queued deliveries are skipped (left unacked)."""
        self._stopping = True
        self._start_next()

    async def wait_for_handlers(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for the running handlers (call :meth:`stop` first);
        cancel those still running then, and wait for them to unwind. Returns how many were
        cancelled."""
        if not self._tasks:
            return 0
        _, pending = await asyncio.wait(set(self._tasks), timeout=max(timeout, 0.0))
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        return len(pending)
