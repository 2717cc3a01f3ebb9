"""Which transport for the asyncio RabbitMQ clients: a minimal prototype on each, measured.

Each prototype does only what every candidate must do for the asyncio clients, so the figures
compare the transports, not features:

- publish: confirmed publishes with a window of 1,000 unconfirmed messages, each publish
  resolving an awaitable on the caller's event loop;
- consume: a coroutine handler per delivery (no-op, or ``await asyncio.sleep(0.001)``), at most
  ``prefetch`` running at once, acked after it returns.

Candidates:

- ``aio-pika``: ``connect_robust`` (aiormq underneath), ``publisher_confirms=True``; publishing
  awaits ``exchange.publish`` under a semaphore of 1,000; consuming with ``queue.consume`` and
  ``message.ack()``.
- ``pika asyncio adapter``: ``pika.adapters.asyncio_connection.AsyncioConnection`` on the
  caller's loop; a future per delivery tag, resolved from the confirm callbacks; deliveries run
  as tasks, acked one by one.
- ``I/O thread + loop bridge``: the library's own ``ResilientPublisher`` (its pika I/O thread)
  with each result handed to the loop; ``naive`` wraps every ``concurrent.futures.Future`` with
  ``asyncio.wrap_future`` (one ``call_soon_threadsafe`` per message), ``batched`` hands a
  burst of results over with one wake-up of the loop. For consuming, a
  ``RabbitConnection`` listener that hands a burst of deliveries to the loop at once, runs the
  handlers as tasks, and sends the acks back in a burst (one ``basic.ack`` with
  ``multiple=True`` per run of consecutive tags).
- ``raw pika SelectConnection``: pipelined confirms / inline no-op consumer on pika's own loop,
  nothing awaited: the ceiling.

The contenders are interleaved over ``--rounds`` rounds in one run; median, spread, ratio to
aio-pika. Run (against the broker on 127.0.0.1:5672)::

    .venv/bin/python bench/rabbitmq_async_transports.py --rounds 7
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import aio_pika
import pika
from pika.adapters.asyncio_connection import AsyncioConnection
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rabbitmq_publish import raw_select

from instrumented_clients.rabbitmq import RabbitConnection, ResilientPublisher
from instrumented_clients.rabbitmq.incoming import plan_acks
from instrumented_clients.telemetry import Telemetry
from instrumented_clients.testing import wait_until

URL = "amqp://guest:guest@127.0.0.1:5672/"
BODY = b"x" * 100
WINDOW = 1000
PREFETCH = 100


# -- publish ----------------------------------------------------------------------------------


async def aio_pika_publish(queue: str, persistent: bool, count: int) -> float:
    connection = await aio_pika.connect_robust(URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        mode = (aio_pika.DeliveryMode.PERSISTENT if persistent
                else aio_pika.DeliveryMode.NOT_PERSISTENT)
        exchange = channel.default_exchange
        window = asyncio.Semaphore(WINDOW)

        async def one() -> None:
            async with window:
                await exchange.publish(aio_pika.Message(BODY, delivery_mode=mode), queue)

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(count)))
        return count / (time.perf_counter() - started)


async def pika_asyncio_publish(queue: str, persistent: bool, count: int) -> float:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[Any] = loop.create_future()
    pending: dict[int, asyncio.Future[bool]] = {}
    confirmed_upto = 0

    def on_confirm(frame: Any) -> None:
        nonlocal confirmed_upto
        method = frame.method
        ok = method.NAME == "Basic.Ack"
        tags = range(confirmed_upto + 1, method.delivery_tag + 1) if method.multiple \
            else (method.delivery_tag,)
        for tag in tags:
            future = pending.pop(tag, None)
            if future is not None:
                future.set_result(ok)
        confirmed_upto = max(confirmed_upto, method.delivery_tag)

    def on_channel(channel: Any) -> None:
        channel.confirm_delivery(ack_nack_callback=on_confirm,
                                 callback=lambda _frame: ready.set_result(channel))

    connection = AsyncioConnection(
        pika.URLParameters(URL),
        on_open_callback=lambda conn: conn.channel(on_open_callback=on_channel),
        on_open_error_callback=lambda _conn, error: ready.set_exception(RuntimeError(error)),
        custom_ioloop=loop,
    )
    channel = await ready
    props = pika.BasicProperties(delivery_mode=2 if persistent else 1)
    window: deque[asyncio.Future[bool]] = deque()
    started = time.perf_counter()
    for tag in range(1, count + 1):
        if len(window) >= WINDOW:
            await window.popleft()
        future = loop.create_future()
        pending[tag] = future
        channel.basic_publish("", queue, BODY, props)
        window.append(future)
    results = await asyncio.gather(*window)
    elapsed = time.perf_counter() - started
    if not all(results):
        raise RuntimeError("a publish was nacked")
    closed = loop.create_future()
    connection.add_on_close_callback(lambda *_: closed.done() or closed.set_result(None))
    connection.close()
    await closed
    return count / elapsed


def _publisher(persistent: bool) -> ResilientPublisher:
    telemetry = Telemetry(registry=CollectorRegistry(), tracing=False)
    publisher = ResilientPublisher(URL, name="bench", telemetry=telemetry, persistent=persistent,
                                   max_in_flight=WINDOW, max_pending_events=WINDOW)
    wait_until(lambda: publisher.ready, 10)
    return publisher


async def io_thread_naive_publish(queue: str, persistent: bool, count: int) -> float:
    publisher = _publisher(persistent)
    try:
        window: deque[asyncio.Future[Any]] = deque()
        publish = publisher.publish
        started = time.perf_counter()
        for _ in range(count):
            if len(window) >= WINDOW:
                await window.popleft()
            window.append(asyncio.wrap_future(publish(BODY, queue)))
        results = await asyncio.gather(*window)
        elapsed = time.perf_counter() - started
        if any(result.outcome != "ack" for result in results):
            raise RuntimeError("a publish was not acked")
        return count / elapsed
    finally:
        publisher.close(timeout=10)


class LoopBridge:
    """Hand results from another thread to a loop: one ``call_soon_threadsafe`` per burst."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.done: deque[tuple[asyncio.Future[Any], Future[Any]]] = deque()
        self.wake_pending = False

    def attach(self, source: Future[Any]) -> asyncio.Future[Any]:
        target = self.loop.create_future()
        source.add_done_callback(lambda f: self._resolved(target, f))
        return target

    def _resolved(self, target: asyncio.Future[Any], source: Future[Any]) -> None:
        self.done.append((target, source))
        if not self.wake_pending:
            self.wake_pending = True
            self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        self.wake_pending = False
        done = self.done
        while done:
            target, source = done.popleft()
            if target.done():
                continue
            error = source.exception()
            if error is None:
                target.set_result(source.result())
            else:
                target.set_exception(error)


async def io_thread_batched_publish(queue: str, persistent: bool, count: int) -> float:
    publisher = _publisher(persistent)
    try:
        bridge = LoopBridge(asyncio.get_running_loop())
        window: deque[asyncio.Future[Any]] = deque()
        publish = publisher.publish
        attach = bridge.attach
        started = time.perf_counter()
        for _ in range(count):
            if len(window) >= WINDOW:
                await window.popleft()
            window.append(attach(publish(BODY, queue)))
        results = await asyncio.gather(*window)
        elapsed = time.perf_counter() - started
        if any(result.outcome != "ack" for result in results):
            raise RuntimeError("a publish was not acked")
        return count / elapsed
    finally:
        publisher.close(timeout=10)


async def raw_select_publish(queue: str, persistent: bool, count: int) -> float:
    return raw_select(queue, persistent, count)


PUBLISHERS: dict[str, Callable[[str, bool, int], Any]] = {
    "aio-pika robust, window 1000": aio_pika_publish,
    "pika asyncio adapter": pika_asyncio_publish,
    "I/O thread + wrap_future per message": io_thread_naive_publish,
    "I/O thread + batched loop bridge": io_thread_batched_publish,
    "raw pika SelectConnection (ceiling)": raw_select_publish,
}


# -- consume ----------------------------------------------------------------------------------

WORK = 0.0


async def handler() -> None:
    if WORK:
        await asyncio.sleep(WORK)


async def aio_pika_consume(queue: str, count: int) -> float:
    started = time.perf_counter()
    done = asyncio.Event()
    seen = 0
    connection = await aio_pika.connect_robust(URL)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        source = await channel.get_queue(queue, ensure=False)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal seen
            await handler()
            await message.ack()
            seen += 1
            if seen >= count:
                done.set()

        await source.consume(on_message)
        await done.wait()
        return time.perf_counter() - started


async def pika_asyncio_consume(queue: str, count: int) -> float:
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    seen = 0
    tasks: set[asyncio.Task[None]] = set()

    async def run(channel: Any, tag: int) -> None:
        nonlocal seen
        await handler()
        channel.basic_ack(tag)
        seen += 1
        if seen >= count and not done.done():
            done.set_result(None)

    def on_message(channel: Any, method: Any, _props: Any, _body: bytes) -> None:
        task = loop.create_task(run(channel, method.delivery_tag))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def on_channel(channel: Any) -> None:
        channel.basic_qos(prefetch_count=PREFETCH,
                          callback=lambda _f: channel.basic_consume(queue, on_message))

    connection = AsyncioConnection(
        pika.URLParameters(URL),
        on_open_callback=lambda conn: conn.channel(on_open_callback=on_channel),
        custom_ioloop=loop,
    )
    await done
    elapsed = time.perf_counter() - started
    closed = loop.create_future()
    connection.add_on_close_callback(lambda *_: closed.done() or closed.set_result(None))
    connection.close()
    await closed
    return elapsed


class BridgedConsumer:
    """Deliveries from the I/O thread to the loop in bursts; acks back in bursts."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: str, count: int) -> None:
        self.loop = loop
        self.queue = queue
        self.count = count
        self.seen = 0
        self.finished = loop.create_future()
        self.inbound: deque[int] = deque()
        self.inbound_wake = False
        self.acks: deque[int] = deque()
        self.acks_wake = False
        self.outstanding: dict[int, None] = {}
        self.channel: Any = None
        self.limit = asyncio.Semaphore(PREFETCH)
        self.tasks: set[asyncio.Task[None]] = set()
        telemetry = Telemetry(registry=CollectorRegistry(), tracing=False, logs=False)
        self.connection = RabbitConnection(URL, name="bench", telemetry=telemetry)
        self.connection.add_listener(self)

    # I/O thread
    def on_connection_ready(self, connection: Any) -> None:
        connection.channel(on_open_callback=self._on_channel)

    def on_connection_lost(self, error: BaseException | None) -> None:
        pass

    def _on_channel(self, channel: Any) -> None:
        self.channel = channel
        channel.basic_qos(prefetch_count=PREFETCH,
                          callback=lambda _f: channel.basic_consume(self.queue, self._deliver))

    def _deliver(self, _channel: Any, method: Any, _props: Any, _body: bytes) -> None:
        self.outstanding[method.delivery_tag] = None
        self.inbound.append(method.delivery_tag)
        if not self.inbound_wake:
            self.inbound_wake = True
            self.loop.call_soon_threadsafe(self._take)

    def _send_acks(self) -> None:
        self.acks_wake = False
        tags = []
        while self.acks:
            tags.append(self.acks.popleft())
        upto, singles = plan_acks(self.outstanding, tags)
        if upto is not None:
            self.channel.basic_ack(upto, multiple=True)
            for tag in list(self.outstanding):
                if tag > upto:
                    break
                del self.outstanding[tag]
        for tag in singles:
            self.channel.basic_ack(tag)
            del self.outstanding[tag]

    # the loop
    def _take(self) -> None:
        self.inbound_wake = False
        while self.inbound:
            task = self.loop.create_task(self._run(self.inbound.popleft()))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _run(self, tag: int) -> None:
        async with self.limit:
            await handler()
        self.acks.append(tag)
        if not self.acks_wake:
            self.acks_wake = True
            self.connection.call_soon(self._send_acks)
        self.seen += 1
        if self.seen >= self.count and not self.finished.done():
            self.finished.set_result(None)


async def io_thread_consume(queue: str, count: int) -> float:
    started = time.perf_counter()
    consumer = BridgedConsumer(asyncio.get_running_loop(), queue, count)
    consumer.connection.start()
    await consumer.finished
    elapsed = time.perf_counter() - started
    await asyncio.to_thread(consumer.connection.close, 5)
    return elapsed


def _raw_consume(queue: str, count: int) -> float:
    started = time.perf_counter()
    seen = 0
    elapsed = 0.0

    def on_message(channel: Any, method: Any, _props: Any, _body: bytes) -> None:
        nonlocal seen, elapsed
        channel.basic_ack(method.delivery_tag)
        seen += 1
        if seen == count:
            elapsed = time.perf_counter() - started
            connection.close()

    def on_channel(channel: Any) -> None:
        channel.basic_qos(prefetch_count=PREFETCH,
                          callback=lambda _f: channel.basic_consume(queue, on_message))

    connection = pika.SelectConnection(
        pika.URLParameters(URL),
        on_open_callback=lambda conn: conn.channel(on_open_callback=on_channel),
        on_close_callback=lambda conn, _reason: conn.ioloop.stop(),
    )
    connection.ioloop.start()
    connection.ioloop.close()
    return elapsed


async def raw_select_consume(queue: str, count: int) -> float:
    if WORK:  # inline on pika's loop, a 1 ms wait serialises every message: not comparable
        return float("nan")
    return _raw_consume(queue, count)


CONSUMERS: dict[str, Callable[[str, int], Any]] = {
    "aio-pika robust": aio_pika_consume,
    "pika asyncio adapter": pika_asyncio_consume,
    "I/O thread + batched loop bridge": io_thread_consume,
    "raw pika SelectConnection, inline no-op (ceiling)": raw_select_consume,
}


# -- driver -----------------------------------------------------------------------------------


def fill(channel: Any, queue: str, count: int) -> None:
    channel.queue_declare(queue, durable=False)
    for _ in range(count):
        channel.basic_publish("", queue, BODY)
    while channel.queue_declare(queue, passive=True).method.message_count < count:
        time.sleep(0.01)


def table(title: str, results: dict[str, list[float]], *references: str) -> None:
    """A markdown table: median, spread and the ratio to each of ``references`` (NaN runs, not
    measured, are left out)."""
    measured = {name: [v for v in values if v == v] for name, values in results.items()}
    medians = {name: statistics.median(v) for name, v in measured.items() if v}
    print(f"\n### {title}\n")
    print("| contender | median msg/s | spread (min–max) | "
          + " | ".join(f"× {name}" for name in references) + " |")
    print("|---|---:|---:|" + "---:|" * len(references))
    for name, values in measured.items():
        if not values:
            print(f"| {name} | – | – |" + " – |" * len(references))
            continue
        ratios = " | ".join(f"{medians[name] / medians[ref]:.2f}×" for ref in references)
        print(f"| {name} | {medians[name]:,.0f} | {min(values):,.0f}–{max(values):,.0f} | "
              f"{ratios} |")


Publishers = dict[str, Callable[[str, bool, int], Any]]
Consumers = dict[str, Callable[[str, int], Any]]


def measure(publishers: Publishers, consumers: Consumers, rounds: int, messages: int,
            consume_messages: int) -> tuple[dict[str, dict[str, list[float]]],
                                            dict[str, dict[str, list[float]]]]:
    """Run the contenders interleaved over ``rounds`` (the start order rotates each round);
    returns msg/s per scenario and contender, for publishing and for consuming."""
    global WORK
    admin = pika.BlockingConnection(pika.URLParameters(URL))
    channel = admin.channel()
    queues = {"transient": f"bench-async-classic-{uuid.uuid4().hex[:8]}",
              "persistent": f"bench-async-quorum-{uuid.uuid4().hex[:8]}"}
    channel.queue_declare(queues["transient"], durable=False)
    channel.queue_declare(queues["persistent"], durable=True,
                          arguments={"x-queue-type": "quorum"})
    publish: dict[str, dict[str, list[float]]] = {s: {n: [] for n in publishers} for s in queues}
    consume: dict[str, dict[str, list[float]]] = {
        s: {n: [] for n in consumers} for s in ("no-op", "1 ms")}
    try:
        for round_number in range(rounds):
            names = list(publishers)
            shift = round_number % len(names)
            for scenario, queue in queues.items():
                for name in names[shift:] + names[:shift]:
                    rate = asyncio.run(publishers[name](queue, scenario == "persistent",
                                                        messages))
                    publish[scenario][name].append(rate)
                    channel.queue_purge(queue)
            names = list(consumers)
            shift = round_number % len(names)
            for scenario, work in (("no-op", 0.0), ("1 ms", 0.001)):
                WORK = work
                for name in names[shift:] + names[:shift]:
                    queue = f"bench-async-consume-{uuid.uuid4().hex[:8]}"
                    fill(channel, queue, consume_messages)
                    try:
                        elapsed = asyncio.run(consumers[name](queue, consume_messages))
                    finally:
                        channel.queue_delete(queue)
                    consume[scenario][name].append(consume_messages / elapsed)
            print(f"round {round_number + 1}/{rounds} done", flush=True)
    finally:
        for queue in queues.values():
            channel.queue_delete(queue)
        admin.close()
    return publish, consume


def arguments(description: str, messages: int, consume_messages: int) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--messages", type=int, default=messages, help="per publish run")
    parser.add_argument("--consume-messages", type=int, default=consume_messages)
    return parser.parse_args()


def main() -> None:
    args = arguments(__doc__.split("\n")[0], 10_000, 5_000)
    publish, consume = measure(PUBLISHERS, CONSUMERS, args.rounds, args.messages,
                               args.consume_messages)
    print(f"\n{args.rounds} interleaved rounds; {args.messages} confirmed publishes per run "
          f"(window {WINDOW}), {args.consume_messages} messages per consume run "
          f"(prefetch {PREFETCH}); 100-byte bodies.")
    aio = "aio-pika robust, window 1000"
    table("publish, transient, classic queue", publish["transient"], aio)
    table("publish, persistent, durable quorum queue", publish["persistent"], aio)
    table("consume, no-op coroutine handler", consume["no-op"], "aio-pika robust")
    table("consume, handler awaits 1 ms", consume["1 ms"], "aio-pika robust")


if __name__ == "__main__":
    main()
