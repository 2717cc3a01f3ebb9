"""``AsyncResilientPublisher``: the confirmed, buffered publisher for asyncio.

The sync :class:`~instrumented_clients.rabbitmq.ResilientPublisher` does the work — its
connection's I/O thread sends, confirms, buffers, re-sends and spools; this façade keeps every
wait off the event loop (see ``docs/rabbitmq-async.md`` for why the I/O thread was chosen):

- ``publish()`` prepares the message on the loop (no I/O) and hands it over; its result comes
  back through a :class:`~instrumented_clients.rabbitmq.loop_bridge.LoopHandoff`, one wake-up
  of the loop per burst of confirms.
- Flow control waits on the loop: a message that finds no room waits in a lane of its own, in
  order, admitted as confirms make room (``block``: up to ``block_timeout``, then
  ``BufferFullError``).
- With a spool, messages are written to it by one thread of their own, in order: SQLite never
  runs on the loop.
- ``start()`` (with ``required=True``), ``check()`` and ``close()`` wait in a thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any

from instrumented_clients.client import HealthReport
from instrumented_clients.rabbitmq.connection import RabbitConnection
from instrumented_clients.rabbitmq.errors import PublisherClosedError
from instrumented_clients.rabbitmq.loop_bridge import LoopFuture, LoopHandoff, resolve
from instrumented_clients.rabbitmq.message import OutgoingMessage, PublishResult, event_message
from instrumented_clients.rabbitmq.publisher import ResilientPublisher
from instrumented_clients.rabbitmq.settings import DEFAULT_URL
from instrumented_clients.resilience.breaker import CircuitBreaker
from instrumented_clients.resilience.buffer import OverflowPolicy
from instrumented_clients.resilience.retry import RetryPolicy
from instrumented_clients.resilience.state import ConnectionState

__all__ = ["AsyncResilientPublisher"]

ROOM_RECHECK = 0.05
"""Seconds between checks for room while a message waits (confirms also trigger a check)."""


class AsyncResilientPublisher:
    """Publish to RabbitMQ from asyncio with confirms, buffering and re-sends after reconnects.

    Takes the arguments of :class:`~instrumented_clients.rabbitmq.ResilientPublisher`, with the
    same meaning and defaults. The constructor never waits (nor does ``required=True`` make it
    wait: :meth:`start` does). Results are bound to the loop of the first :meth:`publish` or
    :meth:`start`; use the publisher from that loop only.

    Raises:
        ConfigError, ValueError, TypeError: a malformed argument, naming it (before any I/O).
    """

    system = "rabbitmq"

    def __init__(self, url: str | Sequence[str] = DEFAULT_URL, *, name: str = "publisher",
                 required: bool = False, **options: Any) -> None:
        self.name = name
        self.required = bool(required)
        self.publisher = ResilientPublisher(url, name=name, required=False, **options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handoff: LoopHandoff[tuple[asyncio.Future[Any], bool, Any]] | None = None
        self._waiting: deque[tuple[OutgoingMessage, float]] = deque()
        self._room_timer: asyncio.TimerHandle | None = None
        self._lane: ThreadPoolExecutor | None = None
        if self.publisher.spool is not None:
            self._lane = ThreadPoolExecutor(1, thread_name_prefix=f"rabbitmq-spool-{name}")
        # Messages handed to the spool lane and not yet in the outbox: each counter has one
        # writer (the loop, the lane's thread), so no lock is needed.
        self._lane_sent = 0
        self._lane_done = 0
        self._closed = False

    @classmethod
    def from_env(cls, name: str = "publisher", environ: Mapping[str, str] | None = None,
                 **overrides: Any) -> AsyncResilientPublisher:
        """Build from the ``RABBITMQ_*`` variables, as ``ResilientPublisher.from_env`` does.

        Raises:
            ConfigError: a variable that does not parse, naming it, its value and what was
                expected.
        """
        return cls(name=name, **ResilientPublisher.settings_from_env(environ, overrides))

    # -- observation (memory only) ----------------------------------------------------------------

    @property
    def connection(self) -> RabbitConnection:
        return self.publisher.connection

    @property
    def state(self) -> ConnectionState:
        return self.publisher.state

    @property
    def breaker(self) -> CircuitBreaker | None:
        return self.publisher.breaker

    @property
    def publish_policy(self) -> RetryPolicy:
        return self.publisher.publish_policy

    @property
    def block_timeout(self) -> float:
        return self.publisher.block_timeout

    @block_timeout.setter
    def block_timeout(self, seconds: float) -> None:
        self.publisher.block_timeout = seconds

    @property
    def ready(self) -> bool:
        """Connected, with the confirm-mode channel open: publishes go straight out."""
        return self.publisher.ready

    @property
    def pending_events(self) -> int:
        """Messages accepted and not yet sent (waiting for room included)."""
        return self.publisher.pending_events + len(self._waiting) + self._in_lane

    @property
    def in_flight(self) -> int:
        """Messages sent and not yet confirmed."""
        return self.publisher.in_flight

    def health(self) -> HealthReport:
        """The sync publisher's report (never a password), with this façade's pending count."""
        report = self.publisher.health()
        return dataclasses.replace(report, details={**report.details,
                                                    "pending_events": self.pending_events})

    async def check(self) -> bool:
        """One classified attempt (see :meth:`ResilientPublisher.check`), in a thread."""
        return await asyncio.to_thread(self.publisher.check)

    # -- life cycle --------------------------------------------------------------------------------

    async def start(self, timeout: float | None = None) -> None:
        """Bind to the running loop; with ``required=True`` wait (in a thread) until connected,
        raising :class:`~instrumented_clients.rabbitmq.errors.BrokerUnavailableError` once the
        reconnect policy is spent (or after ``timeout`` seconds)."""
        self._bind()
        if self.required:
            await asyncio.to_thread(self.publisher.connection.wait_connected, timeout)

    async def close(self, timeout: float | None = None) -> None:
        """Stop accepting, flush the buffer and wait for the confirms (up to ``timeout``
        seconds, default 10), then close; as :meth:`ResilientPublisher.close`, in a thread.
        Messages still waiting for room fail with ``BufferFullError``. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._room_timer is not None:
            self._room_timer.cancel()
            self._room_timer = None
        while self._waiting:
            message, _ = self._waiting.popleft()
            self._fail(message, self.publisher.refuse(message))
        if self._lane is not None:
            await asyncio.to_thread(self._lane.shutdown, True)
        # Results resolved meanwhile reach the loop before this coroutine resumes: their
        # hand-off was scheduled before the thread's completion.
        await asyncio.to_thread(self.publisher.close, timeout)

    async def __aenter__(self) -> AsyncResilientPublisher:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    # -- publishing (on the loop) ----------------------------------------------------------------

    def publish(self, body: Any, routing_key: str, exchange: str = "",
                headers: Mapping[str, Any] | None = None, properties: Any = None,
                mandatory: bool = True) -> asyncio.Future[PublishResult]:
        """Publish one message; never waits. ``await`` the result for the broker's answer.

        Returns an ``asyncio.Future`` resolving to a :class:`PublishResult` (``ack``, ``nack``,
        ``returned`` or ``timeout``), or failing with ``MessageDroppedError`` (the buffer
        dropped it), ``ChannelClosedError`` (a permanent refusal) or ``BufferFullError``
        (``overflow="block"``: no room within ``block_timeout``). Cancelling it does not
        withdraw the message: it is delivered (and counted) all the same.

        Raises:
            TypeError: a non-bytes body and no ``serializer``; before any I/O.
            PublisherClosedError: after :meth:`close`.
            BufferFullError: ``overflow="raise"`` and no room.
        """
        if self._closed:
            raise PublisherClosedError(f"publisher {self.name!r} is closed")
        sink: LoopFuture[PublishResult] = LoopFuture(self._bind())
        message = self.publisher.prepare(body, routing_key, exchange, headers, properties,
                                         mandatory, future=sink)
        if self._waiting:
            self._admit_waiting()
        if self._waiting or self.publisher.must_wait(self._in_lane):
            self._waiting.append((message, self._loop_time() + self.block_timeout))
            self._schedule_room_check()
        else:
            self._hand_over(message)
        return sink.future

    def publish_event(self, event_type: str, data: Any, *, routing_key: str | None = None,
                      exchange: str | None = None) -> asyncio.Future[PublishResult]:
        """Publish an event as JSON, ``{"type", "data", "timestamp"}``, routed by
        ``routing_key`` (default: the event type) to ``event_exchange``."""
        body, properties = event_message(event_type, data)
        return self.publish(body, routing_key or event_type,
                            self.publisher.event_exchange if exchange is None else exchange,
                            properties=properties)

    # -- internals (on the loop) -----------------------------------------------------------------

    def _bind(self) -> LoopHandoff[tuple[asyncio.Future[Any], bool, Any]]:
        handoff = self._handoff
        loop = asyncio.get_running_loop()
        if handoff is None:
            self._loop = loop
            handoff = self._handoff = LoopHandoff(loop, resolve, after=self._admit_waiting)
        elif handoff.loop is not loop:
            raise RuntimeError(f"publisher {self.name!r} is bound to another event loop")
        return handoff

    def _loop_time(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    @property
    def _in_lane(self) -> int:
        return self._lane_sent - self._lane_done

    def _hand_over(self, message: OutgoingMessage) -> None:
        if self._lane is None:
            self.publisher.submit(message, wait=False)
            return
        self._lane_sent += 1
        self._lane.submit(contextvars.copy_context().run, self._submit_in_lane, message)

    def _submit_in_lane(self, message: OutgoingMessage) -> None:
        try:
            self.publisher.submit(message, wait=False)
        except BaseException as exc:  # e.g. the publisher closed meanwhile
            self._fail(message, exc)
        finally:
            self._lane_done += 1

    @staticmethod
    def _fail(message: OutgoingMessage, error: BaseException) -> None:
        if message.future is not None:
            message.future.set_exception(error)

    def _admit_waiting(self) -> None:
        """Hand over the waiting messages, in order, while there is room; settle those whose
        wait is over."""
        waiting = self._waiting
        if not waiting:
            return
        publisher = self.publisher
        now = self._loop_time()
        while waiting:
            message, deadline = waiting[0]
            if publisher.must_wait(self._in_lane):
                if deadline > now:
                    break
                waiting.popleft()
                if publisher.overflow is OverflowPolicy.BLOCK:
                    self._fail(message, publisher.refuse(message))
                    continue
                # The drop policies wait only for a burst to drain; then the buffer's policy
                # decides, as for the sync publisher.
            else:
                waiting.popleft()
            try:
                self._hand_over(message)
            except BaseException as exc:
                self._fail(message, exc)
        self._schedule_room_check()

    def _schedule_room_check(self) -> None:
        if self._room_timer is not None or not self._waiting:
            return
        delay = min(ROOM_RECHECK, max(self._waiting[0][1] - self._loop_time(), 0.0))
        assert self._loop is not None
        self._room_timer = self._loop.call_later(delay, self._room_check)

    def _room_check(self) -> None:
        self._room_timer = None
        self._admit_waiting()
        self._schedule_room_check()

    def __repr__(self) -> str:
        return f"AsyncResilientPublisher({self.name!r}, {self.state.value})"
