"""Traces over OTLP from real processes: the workload (tests/e2e/trace_workload.py) runs with the
OpenTelemetry SDK, a batch processor and the OTLP/HTTP exporter; this test is its collector.

The checks name attributes by the pinned conventions package's constants, so a rename there
shows here."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import psycopg
import pytest
from opentelemetry.semconv._incubating.attributes import messaging_attributes as msg
from opentelemetry.semconv.attributes import db_attributes as db_attrs
from opentelemetry.semconv.attributes import server_attributes as server_attrs

from instrumented_clients.telemetry.conventions import PACKAGE_VERSION, SCHEMA_URL
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    otlp = OtlpReceiver()
    yield otlp
    otlp.close()


@pytest.fixture
def names() -> Iterator[dict[str, str]]:
    suffix = uuid.uuid4().hex[:10]
    made = {"queue": f"ic-trace-e2e-{suffix}", "table": f"trace_e2e_{suffix}"}
    with psycopg.connect(PG_DSN, autocommit=True) as connection:
        connection.execute(f"CREATE TABLE {made['table']} (id text PRIMARY KEY)")
    broker = pika.BlockingConnection(pika.URLParameters("amqp://guest:guest@127.0.0.1:5672/"))
    broker.channel().queue_declare(made["queue"], durable=True)
    broker.close()
    yield made
    with psycopg.connect(PG_DSN, autocommit=True) as connection:
        connection.execute(f"DROP TABLE IF EXISTS {made['table']}")
    broker = pika.BlockingConnection(pika.URLParameters("amqp://guest:guest@127.0.0.1:5672/"))
    broker.channel().queue_delete(made["queue"])
    broker.close()


def run(mode: str, receiver: OtlpReceiver, names: dict[str, str], key: str,
        *extra: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tests.e2e.trace_workload", mode, "--otlp", receiver.endpoint,
         "--queue", names["queue"], "--table", names["table"], "--key", key, *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def only(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    [span] = [span for span in spans if span.name == name]
    return span


def check_one_trace(receiver: OtlpReceiver, trace_id: str, names: dict[str, str]) -> None:
    """request -> create (PRODUCER) -> send (CLIENT, linked) and process (CONSUMER, child and
    linked) -> the SQL insert and the Redis SET (children of process), all in one trace."""
    spans = receiver.trace(trace_id)
    request = only(spans, "POST /orders")
    create = only(spans, "create amq.default")
    assert create.kind == "producer"
    assert create.parent_id == request.span_id
    assert create.attributes[msg.MESSAGING_SYSTEM] == "rabbitmq"
    assert create.attributes[msg.MESSAGING_OPERATION_TYPE] == "create"
    assert create.attributes[msg.MESSAGING_DESTINATION_NAME] == names["queue"]
    assert (create.scope, create.scope_version, create.schema_url) == (
        "instrumented_clients", PACKAGE_VERSION, SCHEMA_URL)
    sends = [span for span in spans if span.name == "send amq.default"]
    assert sends
    for send in sends:
        assert send.kind == "client"
        assert send.parent_id == create.span_id
        assert send.links == [create.span_id]
        assert send.attributes[msg.MESSAGING_OPERATION_TYPE] == "send"
        assert send.attributes[server_attrs.SERVER_ADDRESS] == "127.0.0.1"
    process = only(spans, f"process {names['queue']}")
    assert process.kind == "consumer"
    assert process.parent_id == create.span_id
    assert process.links == [create.span_id]
    assert process.attributes[msg.MESSAGING_OPERATION_TYPE] == "process"
    assert process.attributes[msg.MESSAGING_DESTINATION_NAME] == names["queue"]
    assert msg.MESSAGING_RABBITMQ_MESSAGE_DELIVERY_TAG in process.attributes
    assert process.attributes["resilient_client.settlement"] == "ack"
    insert = only(spans, f"INSERT {names['table']}")
    assert insert.kind == "client"
    assert insert.parent_id == process.span_id
    assert insert.attributes[db_attrs.DB_SYSTEM_NAME] == "postgresql"
    assert insert.attributes[db_attrs.DB_OPERATION_NAME] == "INSERT"
    assert insert.attributes[db_attrs.DB_QUERY_SUMMARY] == f"INSERT {names['table']}"
    redis_set = only(spans, "SET")
    assert redis_set.parent_id == process.span_id
    assert redis_set.attributes[db_attrs.DB_SYSTEM_NAME] == "redis"
    assert redis_set.attributes[db_attrs.DB_OPERATION_NAME] == "SET"
    for span in spans:  # our own attributes in our namespace, never in OpenTelemetry's
        assert not [key for key in span.attributes if key.startswith("messaging.rabbitmq.")
                    and key not in (msg.MESSAGING_RABBITMQ_DESTINATION_ROUTING_KEY,
                                    msg.MESSAGING_RABBITMQ_MESSAGE_DELIVERY_TAG)]


def test_a_request_publish_consume_sql_and_redis_arrive_as_one_trace(
    receiver: OtlpReceiver, names: dict[str, str]
) -> None:
    trace_id = run("flow", receiver, names, "order-1")
    check_one_trace(receiver, trace_id, names)
    assert not [s for s in receiver.spans if s.name.endswith("reconnect")]  # start-up only


def test_with_the_pika_instrumentation_active_the_consumer_sees_the_callers_trace(
    receiver: OtlpReceiver, names: dict[str, str]
) -> None:
    trace_id = run("flow", receiver, names, "order-2", "--pika-contrib")
    check_one_trace(receiver, trace_id, names)


def test_a_message_replayed_from_the_spool_by_a_new_process_keeps_its_trace(
    receiver: OtlpReceiver, names: dict[str, str], tmp_path: Path
) -> None:
    spool = str(tmp_path / "orders.spool")
    trace_id = run("spool-write", receiver, names, "order-3", "--spool", spool)
    assert receiver.named("create amq.default")
    assert not receiver.named("send amq.default")  # the broker was not there
    run("spool-replay", receiver, names, "order-3", "--spool", spool)
    check_one_trace(receiver, trace_id, names)
    services = {span.trace_id for span in receiver.named(f"process {names['queue']}")}
    assert services == {trace_id}
