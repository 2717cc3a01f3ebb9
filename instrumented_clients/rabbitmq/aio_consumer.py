"""``AsyncResilientConsumer``: consume a queue with coroutine handlers, surviving the broker.

The sync consumer's parts (see :class:`~instrumented_clients.rabbitmq.consumer.ConsumerBase`):
the connection and the consuming channel stay on pika's I/O thread, settlements go back through
the same batcher (acks batched, stale tags of a dead channel discarded), poison messages and the
breaker are decided by the same runner. Only where handlers run differs: as tasks on the event
loop (:class:`~instrumented_clients.rabbitmq.loop_pool.LoopHandlerPool`), at most
``concurrency`` at once, handed over from the I/O thread once per burst. Heartbeats never wait
for a handler, and a handler never waits for pika.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from instrumented_clients.client import HealthReport
from instrumented_clients.rabbitmq.broker_client import BrokerClientShape
from instrumented_clients.rabbitmq.consumer import ConsumerBase, ConsumerOptions
from instrumented_clients.rabbitmq.incoming import Delivery, IncomingMessage, positive_int
from instrumented_clients.rabbitmq.loop_pool import LoopHandlerPool
from instrumented_clients.rabbitmq.settings import DEFAULT_URL
from instrumented_clients.rabbitmq.topology import Queue

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["AsyncHandler", "AsyncResilientConsumer"]

_log = logging.getLogger("instrumented_clients.rabbitmq.consumer")

AsyncHandler = Callable[[IncomingMessage], Awaitable[object]]


class AsyncResilientConsumer(ConsumerBase[LoopHandlerPool], BrokerClientShape):
    """Consume one queue; await ``handler`` per message on the event loop; ack when it returns.

    Returning acks the message; raising requeues it (``basic.nack``), unless the message has
    reached ``max_deliveries`` or the handler raised
    :class:`~instrumented_clients.rabbitmq.incoming.RejectMessage`: then it is rejected without
    requeue, to the queue's dead-letter exchange. A handler cancelled (by :meth:`close` at its
    deadline) settles nothing: the broker redelivers the message.

    Args:
        handler: a coroutine function, awaited once per delivery.
        concurrency: handlers running at once at most (default: ``prefetch``).
        url, queue, passive, name, telemetry, topology, prefetch, max_deliveries,
        poison_cache_size, trace_link_only, required, reconnect_policy, heartbeat,
        connect_timeout, stack_timeout, blocked_connection_timeout, connection_name, breaker,
        failure_threshold, recovery_timeout, retry, clock: as for
            :class:`~instrumented_clients.rabbitmq.ResilientConsumer`.

    The constructor never connects: :meth:`start` (or ``async with``) does, on the running loop.

    Raises:
        TypeError: ``handler`` is not a coroutine function.
        ConfigError, ValueError: a malformed argument, naming it (before any I/O).
    """

    def __init__(self, url: str | Sequence[str] = DEFAULT_URL, *, queue: str | Queue,
                 handler: AsyncHandler, concurrency: int | None = None,
                 **options: Unpack[ConsumerOptions]) -> None:
        # A coroutine function, or an object whose __call__ is one.
        call = handler if inspect.isroutine(handler) else type(handler).__call__
        if not inspect.iscoroutinefunction(call):
            raise TypeError(f"handler must be a coroutine function (async def), got {handler!r}")
        if concurrency is not None:  # before the connection exists: nothing to clean up
            positive_int("concurrency", concurrency)
        super().__init__(url, queue=queue, handler=handler, **options)
        self.concurrency = concurrency or self.prefetch
        self._closed = False
        self._closing: asyncio.Task[None] | None = None
        self._assemble()

    def _make_pool(self) -> LoopHandlerPool:
        return LoopHandlerPool(self.concurrency, self._handle, self.settlements.is_current)

    async def _handle(self, delivery: Delivery) -> None:
        """On the loop: await the handler, queue the outcome for the I/O thread."""
        outcome, duration = await self.runner.arun(delivery)
        self._settle(delivery, outcome, duration)

    # -- the client shape -----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    async def check(self) -> bool:
        """One classified attempt (see ``ResilientConsumer.check``), in a thread."""
        return await asyncio.to_thread(self.connection.probe)

    def health(self) -> HealthReport:
        """State for a health endpoint (memory only; never a password)."""
        return self._health(concurrency=self.concurrency)

    # -- life cycle -------------------------------------------------------------------------------

    async def start(self, timeout: float | None = None) -> None:
        """Connect and consume, handlers on the running loop (idempotent). With
        ``required=True``, wait (in a thread) until connected and raise
        :class:`~instrumented_clients.rabbitmq.errors.BrokerUnavailableError` once the
        reconnect policy is spent (or after ``timeout`` seconds)."""
        self.pool.bind(asyncio.get_running_loop())
        try:
            await asyncio.to_thread(self.connection.start, timeout)
        except BaseException:
            await self.close(timeout=0)
            raise

    async def run(self) -> None:
        """Start, then consume until cancelled; cancelled, :meth:`close` gracefully (running
        handlers may finish, their messages are acked) and re-raise."""
        await self.start()
        try:
            await asyncio.Event().wait()  # until cancelled
        finally:
            await asyncio.shield(self.close())

    async def close(self, timeout: float | None = None) -> None:
        """Stop consuming, let running handlers finish (up to ``timeout`` seconds, default 10),
        ack them, close the connection.

        ``basic.cancel`` stops new deliveries; deliveries whose handler has not started are
        not run and stay unacked. A handler still running at the deadline is cancelled and its
        message stays unacked: closing the channel returns it to the queue and the broker
        redelivers it. Idempotent.
        """
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close(timeout))
        await asyncio.shield(self._closing)

    async def _close(self, timeout: float | None) -> None:
        if timeout is None:
            timeout = 10.0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        self.pool.stop()
        channel = self.consume_channel
        channel.stop()
        io_alive = self.connection.running
        if io_alive:
            self.connection.call_soon(channel.cancel)
        cancelled = await self.pool.wait_for_handlers(deadline - loop.time())
        if io_alive:
            # call_soon is FIFO: the acks are written before close() queues the close frames.
            self.connection.call_soon(channel.flush)
        await asyncio.to_thread(self.connection.close, max(deadline - loop.time(), 1.0))
        self._closed = True
        if cancelled:
            _log.warning("rabbitmq %s: closed with %d handler(s) still running at the deadline; "
                         "they were cancelled and their messages will be redelivered",
                         self.name, cancelled)

    async def __aenter__(self) -> AsyncResilientConsumer:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def __repr__(self) -> str:
        return (f"AsyncResilientConsumer({self.name!r}, queue={self.queue_name!r}, "
                f"{self.connection.state.value})")
