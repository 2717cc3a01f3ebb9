"""Consume throughput: messages handled and acked per second, 100-byte bodies.

Two scenarios: a no-op handler (the library's own overhead) and a handler that waits 1 ms
(``time.sleep``, standing in for a database call: where a worker pool pays off).

Contenders, interleaved over ``--rounds`` rounds in one run (each round: a fresh classic queue
pre-filled with ``--messages`` messages, then the clock runs from connecting to the last ack):

- ``pika-blocking``: ``BlockingConnection``, prefetch 100, handler inline, one ack per message.
- ``pika-select``: ``SelectConnection``, prefetch 100, handler inline on the I/O thread, one ack
  per message (the raw ceiling, and what the in-house workers did - which starves heartbeats
  when a handler blocks).
- ``resilient``: ``ResilientConsumer``, prefetch 100, handler in the worker pool, batched acks.
- ``resilient-1w``: the same with ``workers=1``.

Run: ``python bench/rabbitmq_consume.py [--messages 10000] [--slow-messages 2000] [--rounds 7]``
against the broker on 127.0.0.1:5672. Prints, per scenario, the median msg/s, the spread
(min-max) and the ratio to pika-blocking.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid
from collections.abc import Callable

import pika
from prometheus_client import CollectorRegistry

from instrumented_clients.rabbitmq.consumer import ResilientConsumer
from instrumented_clients.rabbitmq.incoming import IncomingMessage
from instrumented_clients.telemetry import Telemetry

URL = "amqp://guest:guest@127.0.0.1:5672/"
PREFETCH = 100
BODY = b"x" * 100


def fill(queue: str, count: int) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    channel = connection.channel()
    channel.queue_declare(queue, durable=False)
    for _ in range(count):
        channel.basic_publish("", queue, BODY)
    while channel.queue_declare(queue, passive=True).method.message_count < count:
        time.sleep(0.01)
    connection.close()


def delete(queue: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    connection.channel().queue_delete(queue)
    connection.close()


WORK = 0.0  # seconds each handler waits (set per scenario)


def work() -> None:
    if WORK:
        time.sleep(WORK)


def pika_blocking(queue: str, count: int) -> float:
    started = time.perf_counter()
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=PREFETCH)
    seen = 0

    def on_message(ch: object, method: object, _props: object, _body: bytes) -> None:
        nonlocal seen
        work()
        channel.basic_ack(method.delivery_tag)  # type: ignore[attr-defined]
        seen += 1
        if seen >= count:
            channel.stop_consuming()

    channel.basic_consume(queue, on_message)
    channel.start_consuming()
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


def pika_select(queue: str, count: int) -> float:
    started = time.perf_counter()
    seen = 0
    elapsed = 0.0

    def on_message(channel: object, method: object, _props: object, _body: bytes) -> None:
        nonlocal seen, elapsed
        work()
        channel.basic_ack(method.delivery_tag)  # type: ignore[attr-defined]
        seen += 1
        if seen == count:
            elapsed = time.perf_counter() - started
            connection.close()

    def on_channel(channel: object) -> None:
        channel.basic_qos(  # type: ignore[attr-defined]
            prefetch_count=PREFETCH,
            callback=lambda _f: channel.basic_consume(queue, on_message))  # type: ignore[attr-defined]

    connection = pika.SelectConnection(
        pika.URLParameters(URL),
        on_open_callback=lambda conn: conn.channel(on_open_callback=on_channel),
        on_close_callback=lambda conn, _reason: conn.ioloop.stop(),
    )
    connection.ioloop.start()
    connection.ioloop.close()
    return elapsed


def resilient(workers: int | None) -> Callable[[str, int], float]:
    def run(queue: str, count: int) -> float:
        telemetry = Telemetry(registry=CollectorRegistry(), tracing=False, logs=False)
        done = threading.Event()
        lock = threading.Lock()
        seen = 0

        def handler(_message: IncomingMessage) -> None:
            nonlocal seen
            work()
            with lock:
                seen += 1

        started = time.perf_counter()
        consumer = ResilientConsumer(URL, queue=queue, passive=True, handler=handler,
                                     telemetry=telemetry, prefetch=PREFETCH, workers=workers,
                                     name="bench")
        registry = telemetry.registry
        assert registry is not None
        labels = {"system": "rabbitmq", "client": "bench", "outcome": "ack"}
        while not done.is_set():
            acked = registry.get_sample_value("resilient_client_consumed_messages_total", labels)
            if acked is not None and acked >= count:
                done.set()
            else:
                time.sleep(0.001)
        elapsed = time.perf_counter() - started
        consumer.close(timeout=5)
        return elapsed

    return run


def scenario(title: str, contenders: dict[str, Callable[[str, int], float]], messages: int,
             rounds: int) -> None:
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for round_number in range(rounds):
        order = list(contenders)
        order = order[round_number % len(order):] + order[:round_number % len(order)]
        for name in order:
            queue = f"ic-bench-consume-{uuid.uuid4().hex[:8]}"
            fill(queue, messages)
            try:
                elapsed = contenders[name](queue, messages)
            finally:
                delete(queue)
            rates[name].append(messages / elapsed)
        print(f"{title}: round {round_number + 1}/{rounds} done", flush=True)
    base = statistics.median(rates["pika-blocking"])
    print(f"\n### {title}: {messages} messages x {rounds} rounds, prefetch {PREFETCH}\n")
    print("| contender | median msg/s | min – max | vs pika-blocking |")
    print("|---|---:|---:|---:|")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"| {name} | {median:,.0f} | {min(values):,.0f} – {max(values):,.0f} | "
              f"{median / base:.2f}x |")
    print(flush=True)


def main() -> None:
    global WORK
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--slow-messages", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    contenders: dict[str, Callable[[str, int], float]] = {
        "pika-blocking": pika_blocking,
        "pika-select": pika_select,
        "resilient": resilient(None),
        "resilient-1w": resilient(1),
    }
    WORK = 0.0
    scenario("no-op handler", contenders, args.messages, args.rounds)
    WORK = 0.001
    scenario("handler waits 1 ms", contenders, args.slow_messages, args.rounds)


if __name__ == "__main__":
    main()
