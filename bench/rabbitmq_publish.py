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
table shows the median, the spread (min–max), the ratios and the client's CPU time per message
(process time of this process, all threads, connection set-up included). Run::

    .venv/bin/python bench/rabbitmq_publish.py --rounds 7

``--profile`` instead runs ResilientPublisher alone under yappi (CPU clock, every thread) and
prints where its time goes, split between the I/O thread and the publishing threads.
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


def profile(persistent: bool, count: int, top: int) -> None:
    """Where ResilientPublisher's CPU time goes (yappi slows everything down several-fold, so
    read the shares, not the absolute times)."""
    import yappi

    admin = pika.BlockingConnection(pika.URLParameters(URL))
    channel = admin.channel()
    queue = f"bench-profile-{uuid.uuid4().hex[:8]}"
    if persistent:
        channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    else:
        channel.queue_declare(queue, durable=False)
    try:
        resilient(queue, persistent, count // 4)  # warm up: imports, first connection
        channel.queue_purge(queue)
        yappi.set_clock_type("cpu")
        yappi.set_context_name_callback(lambda: threading.current_thread().name)
        yappi.start()
        rate = resilient(queue, persistent, count)
        yappi.stop()
    finally:
        channel.queue_delete(queue)
        admin.close()
    threads = {t.id: t.name for t in yappi.get_thread_stats()}
    by_thread: dict[str, float] = {}
    per_function: dict[tuple[str, str], float] = {}
    for thread_id, name in threads.items():
        group = ("I/O thread" if name.startswith("rabbitmq-io") else
                 "publishing threads" if name.startswith("Thread-") else name)
        for stat in yappi.get_func_stats(filter={"ctx_id": thread_id}):
            by_thread[group] = by_thread.get(group, 0.0) + stat.tsub
            key = (group, f"{stat.module.rsplit('/', 1)[-1]}:{stat.lineno} {stat.name}")
            per_function[key] = per_function.get(key, 0.0) + stat.tsub
    total = sum(by_thread.values())
    print(f"{count} messages, {'persistent' if persistent else 'transient'}, "
          f"{rate:,.0f} msg/s under the profiler; CPU by thread:")
    for name, seconds in sorted(by_thread.items(), key=lambda kv: -kv[1]):
        print(f"  {name:40s} {seconds / total:6.1%}  {seconds / count * 1e6:7.2f} µs/msg")
    print(f"\ntop {top} functions by own CPU time (µs per message):")
    for (group, function), seconds in sorted(per_function.items(),
                                             key=lambda kv: -kv[1])[:top]:
        print(f"  {seconds / count * 1e6:7.2f}  {group[:24]:24s} {function}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--messages", type=int, default=5000, help="per pipelined run")
    parser.add_argument("--sequential-messages", type=int, default=1000,
                        help="per run of the one-at-a-time contenders")
    parser.add_argument("--only", nargs="+", choices=list(CONTENDERS), metavar="NAME",
                        help="run only these contenders (default: all)")
    parser.add_argument("--profile", action="store_true",
                        help="profile ResilientPublisher alone with yappi instead")
    parser.add_argument("--persistent", action="store_true",
                        help="with --profile: persistent messages to a quorum queue")
    parser.add_argument("--top", type=int, default=30, help="with --profile: functions shown")
    args = parser.parse_args()
    if args.profile:
        profile(args.persistent, args.messages, args.top)
        return

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
    cpu: dict[tuple[str, str], list[float]] = {}
    names = args.only or list(CONTENDERS)
    try:
        for round_number in range(args.rounds):
            order = names[round_number % len(names):] + names[:round_number % len(names)]
            for scenario, queue in queues.items():
                for name in order:
                    function, sequential = CONTENDERS[name]
                    count = args.sequential_messages if sequential else args.messages
                    cpu_before = time.process_time()
                    rate = function(queue, scenario == "persistent", count)
                    cpu_used = time.process_time() - cpu_before
                    results.setdefault((scenario, name), []).append(rate)
                    cpu.setdefault((scenario, name), []).append(cpu_used / count * 1e6)
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
        baseline = statistics.median(results.get((scenario, "pika BlockingConnection"), [1.0]))
        ceiling = statistics.median(
            results.get((scenario, "pika SelectConnection (raw ceiling)"), [1.0]))
        label = ("transient, classic queue" if scenario == "transient"
                 else "persistent, durable quorum queue")
        print(f"\n### {label}\n")
        print("| contender | median msg/s | spread (min–max) | × BlockingConnection | "
              "% of raw ceiling | client CPU µs/msg |")
        print("|---|---:|---:|---:|---:|---:|")
        for name in names:
            rates = results[(scenario, name)]
            median = statistics.median(rates)
            print(f"| {name} | {median:,.0f} | {min(rates):,.0f}–{max(rates):,.0f} | "
                  f"{median / baseline:.1f}× | {median / ceiling:.0%} | "
                  f"{statistics.median(cpu[(scenario, name)]):.1f} |")


if __name__ == "__main__":
    main()
