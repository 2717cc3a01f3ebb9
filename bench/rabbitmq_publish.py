"""Confirmed publishes per second: ResilientPublisher against pika and aio-pika.

One run, 100-byte bodies, two scenarios:

- ``transient``: delivery mode 1 to a classic (non-durable) queue;
- ``persistent``: delivery mode 2 to a durable quorum queue.

Contenders (window 1000 where the library pipelines):

- ``pika BlockingConnection``: confirms on, one publish waits for its confirm;
- ``aio-pika sequential``: ``await exchange.publish(...)`` one after the other (confirms on);
- ``aio-pika windowed``: up to 1000 publishes awaited concurrently;
- ``pika SelectConnection (raw)``: hand-written pipelined confirms, nothing else — the ceiling;
- ``ResilientPublisher x4 threads``: ``publish()`` from 4 threads, futures awaited at the end.

Contenders are interleaved over ``--rounds`` rounds (the queue is purged between runs); the
table shows the median, the spread (min–max) and the ratios. Run::

    .venv/bin/python bench/rabbitmq_publish.py --rounds 7
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import aio_pika
import pika
from prometheus_client import CollectorRegistry

from instrumented_clients.rabbitmq import ResilientPublisher
from instrumented_clients.telemetry import Telemetry
from instrumented_clients.testing import wait_until

URL = "amqp://guest:guest@127.0.0.1:5672/"
BODY = b"x" * 100
WINDOW = 1000


def blocking(queue: str, persistent: bool, count: int) -> float:
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    channel = connection.channel()
    channel.confirm_delivery()
    props = pika.BasicProperties(delivery_mode=2 if persistent else 1)
    started = time.perf_counter()
    for _ in range(count):
        channel.basic_publish("", queue, BODY, props)
    elapsed = time.perf_counter() - started
    connection.close()
    return count / elapsed


def aio_sequential(queue: str, persistent: bool, count: int) -> float:
    async def run() -> float:
        connection = await aio_pika.connect_robust(URL)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            mode = aio_pika.DeliveryMode.PERSISTENT if persistent else \
                aio_pika.DeliveryMode.NOT_PERSISTENT
            exchange = channel.default_exchange
            started = time.perf_counter()
            for _ in range(count):
                await exchange.publish(aio_pika.Message(BODY, delivery_mode=mode), queue)
            return count / (time.perf_counter() - started)

    return asyncio.run(run())


def aio_windowed(queue: str, persistent: bool, count: int) -> float:
    async def run() -> float:
        connection = await aio_pika.connect_robust(URL)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            mode = aio_pika.DeliveryMode.PERSISTENT if persistent else \
                aio_pika.DeliveryMode.NOT_PERSISTENT
            exchange = channel.default_exchange
            window = asyncio.Semaphore(WINDOW)

            async def one() -> None:
                async with window:
                    await exchange.publish(aio_pika.Message(BODY, delivery_mode=mode), queue)

            started = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(count)))
            return count / (time.perf_counter() - started)

    return asyncio.run(run())


def raw_select(queue: str, persistent: bool, count: int) -> float:
    """Pipelined confirms on a SelectConnection with nothing on top: the ceiling."""
    props = pika.BasicProperties(delivery_mode=2 if persistent else 1)
    state: dict[str, Any] = {"sent": 0, "confirmed": 0, "started": 0.0, "elapsed": 0.0}

    def pump(channel: Any) -> None:
        while state["sent"] < count and state["sent"] - state["confirmed"] < WINDOW:
            channel.basic_publish("", queue, BODY, props)
            state["sent"] += 1

    def on_confirm(frame: Any) -> None:
        method = frame.method
        state["confirmed"] = method.delivery_tag if method.multiple else state["confirmed"] + 1
        if state["confirmed"] >= count:
            state["elapsed"] = time.perf_counter() - state["started"]
            connection.close()
        else:
            pump(state["channel"])

    def on_confirm_mode(channel: Any) -> None:
        state["started"] = time.perf_counter()
        pump(channel)

    def on_channel(channel: Any) -> None:
        state["channel"] = channel
        channel.confirm_delivery(ack_nack_callback=on_confirm,
                                 callback=lambda _frame: on_confirm_mode(channel))

    connection = pika.SelectConnection(
        pika.URLParameters(URL),
        on_open_callback=lambda conn: conn.channel(on_open_callback=on_channel),
        on_close_callback=lambda conn, _reason: conn.ioloop.stop(),
    )
    connection.ioloop.start()
    connection.ioloop.close()
    return count / state["elapsed"]


def resilient(queue: str, persistent: bool, count: int) -> float:
    telemetry = Telemetry(registry=CollectorRegistry(), tracing=False)
    publisher = ResilientPublisher(URL, name="bench", telemetry=telemetry,
                                   persistent=persistent, max_in_flight=WINDOW,
                                   max_pending_events=WINDOW)
    try:
        wait_until(lambda: publisher.ready, 10)
        per_thread = count // 4
        futures: list[list[Any]] = [[] for _ in range(4)]

        def produce(index: int) -> None:
            mine = futures[index]
            publish = publisher.publish
            for _ in range(per_thread):
                mine.append(publish(BODY, queue))

        threads = [threading.Thread(target=produce, args=(i,)) for i in range(4)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for mine in futures:
            for future in mine:
                if future.result(60).outcome != "ack":
                    raise RuntimeError("a publish was not acked")
        return per_thread * 4 / (time.perf_counter() - started)
    finally:
        publisher.close(timeout=10)


CONTENDERS: dict[str, tuple[Callable[[str, bool, int], float], bool]] = {
    # name: (function, sequential: fewer messages per round)
    "pika BlockingConnection": (blocking, True),
    "aio-pika sequential": (aio_sequential, True),
    "aio-pika windowed (1000)": (aio_windowed, False),
    "pika SelectConnection (raw ceiling)": (raw_select, False),
    "ResilientPublisher x4 threads": (resilient, False),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--messages", type=int, default=5000, help="per pipelined run")
    parser.add_argument("--sequential-messages", type=int, default=1000,
                        help="per run of the one-at-a-time contenders")
    args = parser.parse_args()

    admin = pika.BlockingConnection(pika.URLParameters(URL))
    channel = admin.channel()
    queues = {
        "transient": f"bench-classic-{uuid.uuid4().hex[:8]}",
        "persistent": f"bench-quorum-{uuid.uuid4().hex[:8]}",
    }
    channel.queue_declare(queues["transient"], durable=False)
    channel.queue_declare(queues["persistent"], durable=True,
                          arguments={"x-queue-type": "quorum"})
    results: dict[tuple[str, str], list[float]] = {}
    names = list(CONTENDERS)
    try:
        for round_number in range(args.rounds):
            order = names[round_number % len(names):] + names[:round_number % len(names)]
            for scenario, queue in queues.items():
                for name in order:
                    function, sequential = CONTENDERS[name]
                    count = args.sequential_messages if sequential else args.messages
                    rate = function(queue, scenario == "persistent", count)
                    results.setdefault((scenario, name), []).append(rate)
                    channel.queue_purge(queue)
            print(f"round {round_number + 1}/{args.rounds} done", flush=True)
    finally:
        for queue in queues.values():
            channel.queue_delete(queue)
        admin.close()

    print()
    print(f"{args.rounds} interleaved rounds; {args.messages} messages per pipelined run, "
          f"{args.sequential_messages} per sequential run; 100-byte bodies; confirmed msg/s.")
    for scenario in queues:
        baseline = statistics.median(results[(scenario, "pika BlockingConnection")])
        ceiling = statistics.median(results[(scenario, "pika SelectConnection (raw ceiling)")])
        label = ("transient, classic queue" if scenario == "transient"
                 else "persistent, durable quorum queue")
        print(f"\n### {label}\n")
        print("| contender | median msg/s | spread (min–max) | × BlockingConnection | "
              "% of raw ceiling |")
        print("|---|---:|---:|---:|---:|")
        for name in names:
            rates = results[(scenario, name)]
            median = statistics.median(rates)
            print(f"| {name} | {median:,.0f} | {min(rates):,.0f}–{max(rates):,.0f} | "
                  f"{median / baseline:.1f}× | {median / ceiling:.0%} |")


if __name__ == "__main__":
    main()
