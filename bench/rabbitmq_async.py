"""The asyncio RabbitMQ clients against aio-pika and raw pika, in one run.

Publish: confirmed publishes per second, 100-byte bodies, a window of 1,000 unconfirmed
messages, ``transient`` (delivery mode 1, classic queue) and ``persistent`` (delivery mode 2,
durable quorum queue):

- ``aio-pika windowed (1000)``: ``connect_robust``, ``publisher_confirms=True``, up to 1,000
  ``exchange.publish`` awaited at once;
- ``raw pika SelectConnection``: hand-written pipelined confirms, nothing else (the ceiling);
- ``AsyncResilientPublisher``: one task calls ``publish()`` and awaits the oldest result once
  1,000 are outstanding (metrics on, a fresh registry; tracing off).

Consume: messages handled and acked per second from a pre-filled classic queue, prefetch 100,
a coroutine handler that returns at once (``no-op``) or awaits ``asyncio.sleep(0.001)``:

- ``aio-pika``: ``connect_robust``, ``queue.consume``, ``await message.ack()``;
- ``AsyncResilientConsumer``: concurrency = prefetch (the default).

The contenders are interleaved over ``--rounds`` rounds; median, spread and ratios. Run (against
the broker on 127.0.0.1:5672)::

    .venv/bin/python bench/rabbitmq_async.py --rounds 7
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent))

import rabbitmq_async_transports as transports
from rabbitmq_async_transports import (
    Consumers,
    Publishers,
    aio_pika_consume,
    aio_pika_publish,
    arguments,
    measure,
    table,
)
from rabbitmq_publish import raw_select

from instrumented_clients.rabbitmq import (
    AsyncResilientConsumer,
    AsyncResilientPublisher,
    IncomingMessage,
)
from instrumented_clients.telemetry import Telemetry
from instrumented_clients.testing import await_until

URL = "amqp://guest:guest@127.0.0.1:5672/"
BODY = b"x" * 100
WINDOW = 1000
PREFETCH = 100


async def resilient_publish(queue: str, persistent: bool, count: int) -> float:
    telemetry = Telemetry(registry=CollectorRegistry(), tracing=False)
    publisher = AsyncResilientPublisher(URL, name="bench", telemetry=telemetry,
                                        persistent=persistent, max_in_flight=WINDOW,
                                        max_pending_events=WINDOW)
    try:
        await await_until(lambda: publisher.ready, 10)
        window: deque[Any] = deque()
        publish = publisher.publish
        started = time.perf_counter()
        for _ in range(count):
            if len(window) >= WINDOW:
                await window.popleft()
            window.append(publish(BODY, queue))
        results = await asyncio.gather(*window)
        elapsed = time.perf_counter() - started
        if any(result.outcome != "ack" for result in results):
            raise RuntimeError("a publish was not acked")
        return count / elapsed
    finally:
        await publisher.close(timeout=10)


async def raw_publish(queue: str, persistent: bool, count: int) -> float:
    return raw_select(queue, persistent, count)


async def resilient_consume(queue: str, count: int) -> float:
    telemetry = Telemetry(registry=CollectorRegistry(), tracing=False, logs=False)
    done = asyncio.Event()
    seen = 0

    async def handler(_message: IncomingMessage) -> None:
        nonlocal seen
        if transports.WORK:
            await asyncio.sleep(transports.WORK)
        seen += 1
        if seen >= count:
            done.set()

    started = time.perf_counter()
    consumer = AsyncResilientConsumer(URL, queue=queue, passive=True, handler=handler,
                                      telemetry=telemetry, prefetch=PREFETCH, name="bench")
    await consumer.start()
    await done.wait()
    registry = telemetry.registry
    assert registry is not None
    labels = {"system": "rabbitmq", "client": "bench", "outcome": "ack"}
    await await_until(lambda: (registry.get_sample_value(
        "resilient_client_consumed_messages_total", labels) or 0) >= count, 30, interval=0.001)
    elapsed = time.perf_counter() - started
    await consumer.close(timeout=5)
    return elapsed


PUBLISHERS: Publishers = {
    "aio-pika windowed (1000)": aio_pika_publish,
    "raw pika SelectConnection (ceiling)": raw_publish,
    "AsyncResilientPublisher": resilient_publish,
}
CONSUMERS: Consumers = {
    "aio-pika": aio_pika_consume,
    "AsyncResilientConsumer": resilient_consume,
}


def main() -> None:
    args = arguments(__doc__.split("\n")[0], 20_000, 10_000)
    publish, consume = measure(PUBLISHERS, CONSUMERS, args.rounds, args.messages,
                               args.consume_messages)
    print(f"\n{args.rounds} interleaved rounds; {args.messages} confirmed publishes per run "
          f"(window {WINDOW}), {args.consume_messages} messages per consume run "
          f"(prefetch {PREFETCH}); 100-byte bodies.")
    ceiling = "raw pika SelectConnection (ceiling)"
    table("publish, transient, classic queue", publish["transient"],
          "aio-pika windowed (1000)", ceiling)
    table("publish, persistent, durable quorum queue", publish["persistent"],
          "aio-pika windowed (1000)", ceiling)
    table("consume, no-op coroutine handler", consume["no-op"], "aio-pika")
    table("consume, handler awaits 1 ms", consume["1 ms"], "aio-pika")


if __name__ == "__main__":
    main()
