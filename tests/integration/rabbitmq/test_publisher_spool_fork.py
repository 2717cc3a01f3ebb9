"""A durable spool across SIGKILL, one spool owner at a time, and fork safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import traceback
from collections.abc import Callable
from pathlib import Path

import pika
import pytest

from instrumented_clients.rabbitmq.publisher import ResilientPublisher
from instrumented_clients.rabbitmq.spool import SpooledMessages, SpoolLockedError
from instrumented_clients.testing import CapturedTelemetry, FaultProxy, wait_until
from tests.integration.rabbitmq.conftest import (
    AMQP_URL,
    Admin,
    port_outside_ephemeral_range,
    wait_connected,
)

pytestmark = pytest.mark.integration
MakePublisher = Callable[..., ResilientPublisher]

_CHILD = textwrap.dedent("""
    import sys, time
    import pika
    from prometheus_client import CollectorRegistry
    from instrumented_clients.rabbitmq.publisher import ResilientPublisher
    from instrumented_clients.telemetry import Telemetry

    url, spool, queue = sys.argv[1:4]
    publisher = ResilientPublisher(url, name="spool-child", spool_path=spool,
                                   telemetry=Telemetry(registry=CollectorRegistry(),
                                                       tracing=False, logs=False))
    for i in range(200):
        publisher.publish(f"s{i}".encode(), queue,
                          properties=pika.BasicProperties(message_id=f"s{i}"))
    print("published", flush=True)
    time.sleep(120)
""")


def test_spooled_messages_survive_sigkill_and_are_sent_by_the_next_process(
    make_publisher: MakePublisher, admin: Admin, tmp_path: Path,
    telemetry: CapturedTelemetry,
) -> None:
    queue = admin.queue("spool")
    spool = tmp_path / "publisher.spool"
    nobody_listens = f"amqp://guest:guest@127.0.0.1:{port_outside_ephemeral_range()}/"
    with subprocess.Popen([sys.executable, "-c", _CHILD, nobody_listens, str(spool), queue],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "published"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL

    publisher = make_publisher(AMQP_URL, spool_path=str(spool))
    assert publisher.pending_events == 200  # recovered before anything new
    assert publisher.spool is not None
    wait_until(lambda: publisher.spool is not None and publisher.spool.count() == 0, 15)

    received = admin.drain(queue, 200)
    assert [message_id for message_id, _ in received] == [f"s{i}" for i in range(200)]
    assert telemetry.value("publish_resent_total", system="rabbitmq", client="test") == 200


def test_a_spool_has_one_owner(make_publisher: MakePublisher, tmp_path: Path) -> None:
    spool = str(tmp_path / "owned.spool")
    make_publisher("amqp://guest:guest@127.0.0.1:1/", spool_path=spool)
    with pytest.raises(SpoolLockedError, match="owned by another"):
        ResilientPublisher("amqp://guest:guest@127.0.0.1:1/", name="second",
                           spool_path=spool, telemetry=CapturedTelemetry())


def test_close_keeps_undelivered_messages_in_the_spool(
    make_publisher: MakePublisher, admin: Admin, proxy: FaultProxy, tmp_path: Path,
    telemetry: CapturedTelemetry,
) -> None:
    queue = admin.queue("spool-close")
    spool = str(tmp_path / "close.spool")
    proxy.refuse()
    first = make_publisher(proxy.url(AMQP_URL), spool_path=spool)
    futures = [first.publish(f"{i}".encode(), queue) for i in range(10)]
    wait_until(lambda: first.pending_events == 10, 5)
    first.close(timeout=0.2)

    assert all(future.done() for future in futures)
    assert telemetry.value("buffer_dropped_events_total", system="rabbitmq", client="test",
                           reason="shutdown") == 0
    owner = SpooledMessages(spool)
    try:
        assert owner.count() == 10
    finally:
        owner.close()
    second = make_publisher(AMQP_URL, name="second", spool_path=spool)
    wait_until(lambda: second.spool is not None and second.spool.count() == 0, 10)
    assert [body for _, body in admin.drain(queue, 10)] == [f"{i}".encode() for i in range(10)]


def test_a_publisher_created_before_fork_works_in_child_and_parent(
    make_publisher: MakePublisher, admin: Admin, tmp_path: Path
) -> None:
    report = tmp_path / "child-report.txt"
    queue = admin.queue("fork")
    publisher = make_publisher()
    wait_connected(publisher)
    assert publisher.publish(b"before", queue).result(10).outcome == "ack"

    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            inherited = publisher.pending_events + publisher.in_flight
            futures = [publisher.publish(f"child-{i}".encode(), queue,
                                         properties=pika.BasicProperties(message_id=f"child-{i}"))
                       for i in range(50)]
            outcomes = {future.result(20).outcome for future in futures}
            code = 0 if outcomes == {"ack"} and inherited == 0 else 2
            report.write_text(f"inherited={inherited} outcomes={outcomes}")
        except BaseException:
            report.write_text(traceback.format_exc())
            code = 3
        finally:
            os._exit(code)

    parent = [publisher.publish(f"parent-{i}".encode(), queue,
                                properties=pika.BasicProperties(message_id=f"parent-{i}"))
              for i in range(50)]
    assert {future.result(20).outcome for future in parent} == {"ack"}
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, report.read_text()
    assert publisher.publish(b"after", queue).result(10).outcome == "ack"

    bodies = {body.decode() for _, body in admin.drain(queue, 102)}
    assert bodies == {"before", "after", *(f"child-{i}" for i in range(50)),
                      *(f"parent-{i}" for i in range(50))}
