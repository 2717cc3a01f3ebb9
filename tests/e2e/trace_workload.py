"""A process traced as an application would be: the OpenTelemetry SDK with a batch processor
and the OTLP/HTTP exporter, sending to the test's receiver.

``python -m tests.e2e.trace_workload MODE --otlp URL --queue Q --table T --key K`` where MODE is

- ``flow``: a request span publishes ``K``; this process's consumer handles it (an SQL insert
  and a Redis SET) and the process exits once it has;
- ``spool-write``: the request span publishes ``K`` to a broker that is not there, with a spool:
  the message stays in the spool when the process exits;
- ``spool-replay``: a new process on the same spool sends it, and its consumer handles it.

Prints the request span's trace id (``flow``/``spool-write``) on stdout.
"""

from __future__ import annotations

import argparse
import sys
import threading

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

from instrumented_clients.db import ResilientDatabase
from instrumented_clients.rabbitmq import (
    IncomingMessage,
    Queue,
    ResilientConsumer,
    ResilientPublisher,
)
from instrumented_clients.redis import ResilientRedis
from instrumented_clients.telemetry import Telemetry
from instrumented_clients.testing import wait_until

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
NOWHERE_URL = "amqp://guest:guest@127.0.0.1:1/"  # nothing listens on port 1
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("flow", "spool-write", "spool-replay"))
    parser.add_argument("--otlp", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--spool")
    parser.add_argument("--pika-contrib", action="store_true")
    args = parser.parse_args()

    provider = TracerProvider(resource=Resource.create({"service.name": f"orders-{args.mode}"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=args.otlp)))
    trace.set_tracer_provider(provider)
    if args.pika_contrib:
        from opentelemetry.instrumentation.pika import PikaInstrumentor

        PikaInstrumentor().instrument()
    telemetry = Telemetry(registry=CollectorRegistry(), logs=False)  # the global provider
    handled = threading.Event()
    consumer = db = redis = None

    if args.mode != "spool-write":
        db = ResilientDatabase(PG_URL, name="orders-db", telemetry=telemetry)
        redis = ResilientRedis(REDIS_URL, name="orders-cache", telemetry=telemetry)

        def handle(message: IncomingMessage) -> None:
            assert db is not None
            assert redis is not None
            key = message.body.decode()
            db.execute(f"INSERT INTO {args.table} (id) VALUES (:id)", {"id": key})
            redis.set(f"trace-e2e:{key}", "1", ex=60)
            if key == args.key:
                handled.set()

        consumer = ResilientConsumer(AMQP_URL, queue=Queue(args.queue), handler=handle,
                                     name="orders-worker", telemetry=telemetry)
        wait_until(lambda: consumer is not None and consumer.consuming, 20)

    publisher = ResilientPublisher(
        NOWHERE_URL if args.mode == "spool-write" else AMQP_URL, name="orders",
        telemetry=telemetry, spool_path=args.spool)
    try:
        if args.mode in ("flow", "spool-write"):
            tracer = trace.get_tracer("orders-app")
            with tracer.start_as_current_span("POST /orders", kind=SpanKind.SERVER) as request:
                publisher.publish(args.key.encode(), args.queue)
            print(trace.format_trace_id(request.get_span_context().trace_id), flush=True)
        if args.mode == "spool-write":
            publisher.close(timeout=0)  # the message stays in the spool
        elif not handled.wait(30):
            print("the message was not handled within 30 s", file=sys.stderr)
            return 1
    finally:
        publisher.close(timeout=5)
        if consumer is not None:
            consumer.close(timeout=5)
        for client in (db, redis):
            if client is not None:
                client.close()
        provider.shutdown()  # flushes the batch processor
    return 0


if __name__ == "__main__":
    sys.exit(main())
