"""What tracing costs a publisher: confirmed publishes per second with tracing off and with the
OpenTelemetry SDK on (always-on sampler, the batch span processor with its default queue of
2048 and 512-span batches, an exporter that takes each batch and drops it), and the spans the
batch processor dropped.

Every message makes two spans when traced (its ``create`` span in ``publish()`` and its ``send``
span at the confirm). Dropped = spans ended minus spans the exporter received, counted by a span
processor beside the batch one. Tracing off and on are interleaved over ``--rounds`` rounds; the
queue is purged between runs. Needs RabbitMQ on 127.0.0.1:5672::

    .venv/bin/python bench/tracing_publish.py --rounds 5 --messages 20000
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import pika
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry

from instrumented_clients.rabbitmq import ResilientPublisher
from instrumented_clients.telemetry import Telemetry
from instrumented_clients.testing import wait_until

URL = "amqp://guest:guest@127.0.0.1:5672/"
BODY = b"x" * 100


class CountingExporter(SpanExporter):
    """Receives batches as a real exporter would, and only counts them."""

    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported += len(spans)
        return SpanExportResult.SUCCESS


class EndedSpans(SpanProcessor):
    def __init__(self) -> None:
        self.ended = 0
        self._lock = threading.Lock()

    def on_end(self, span: ReadableSpan) -> None:
        with self._lock:
            self.ended += 1


def run(queue: str, messages: int, traced: bool) -> dict[str, Any]:
    provider = exporter = ended = None
    if traced:
        provider, exporter, ended = TracerProvider(), CountingExporter(), EndedSpans()
        provider.add_span_processor(ended)
        provider.add_span_processor(BatchSpanProcessor(exporter))
    telemetry = Telemetry(registry=CollectorRegistry(), tracer_provider=provider, logs=False,
                          tracing=traced)
    publisher = ResilientPublisher(URL, name="bench", telemetry=telemetry, persistent=False,
                                   max_pending_events=5000, max_in_flight=1000)
    wait_until(lambda: publisher.connection.connected, 10)
    started = time.perf_counter()
    futures = [publisher.publish(BODY, queue) for _ in range(messages)]
    for future in futures:
        assert future.result(60).outcome == "ack"
    elapsed = time.perf_counter() - started
    publisher.close(timeout=10)
    result: dict[str, Any] = {"rate": messages / elapsed}
    if provider is not None and exporter is not None and ended is not None:
        provider.shutdown()  # flushes what the queue still holds
        result["ended"] = ended.ended
        result["dropped"] = ended.ended - exporter.exported
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=20_000)
    args = parser.parse_args()
    queue = f"bench-tracing-{uuid.uuid4().hex[:8]}"
    admin = pika.BlockingConnection(pika.URLParameters(URL))
    channel = admin.channel()
    channel.queue_declare(queue)
    results: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    try:
        for round_number in range(args.rounds):
            for traced in ((False, True) if round_number % 2 == 0 else (True, False)):
                results[traced].append(run(queue, args.messages, traced))
                channel.queue_purge(queue)
    finally:
        channel.queue_delete(queue)
        admin.close()
    print(f"{args.messages} messages of 100 bytes, {args.rounds} interleaved rounds")
    print("| tracing | median msg/s | spread (min–max) | spans ended per run | dropped spans |")
    print("|---|---:|---:|---:|---:|")
    for traced, label in ((False, "off"), (True, "SDK, always on, batch processor")):
        rates = [r["rate"] for r in results[traced]]
        counts = [r["ended"] for r in results[traced]] if traced else []
        ended = f"{statistics.median(counts):,.0f}" if counts else "–"
        dropped = "–" if not traced else ", ".join(str(r["dropped"]) for r in results[traced])
        print(f"| {label} | {statistics.median(rates):,.0f} | {min(rates):,.0f}–{max(rates):,.0f}"
              f" | {ended} | {dropped} |")


if __name__ == "__main__":
    main()
