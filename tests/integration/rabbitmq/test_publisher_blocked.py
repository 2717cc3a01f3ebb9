"""The broker's connection.blocked / unblocked reach health() and the metric."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest

from instrumented_clients.rabbitmq.publisher import ResilientPublisher
from instrumented_clients.testing import CapturedTelemetry, wait_until
from tests.integration.rabbitmq.conftest import Admin, wait_connected

pytestmark = pytest.mark.integration


def _watermark_args() -> list[str]:
    """The broker's current memory watermark, as set_vm_memory_high_watermark arguments."""
    out = subprocess.run(
        ["rabbitmqctl", "eval", "vm_memory_monitor:get_vm_memory_high_watermark()."],
        check=True, capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[-1]
    if out.startswith("{absolute"):
        return ["absolute", out.strip("{}").split(",")[1].strip()]
    return [out]


def test_memory_alarm_blocks_then_unblocks_the_connection(
    make_publisher: Callable[..., ResilientPublisher], admin: Admin,
    telemetry: CapturedTelemetry,
) -> None:
    queue = admin.queue("blocked")
    publisher = make_publisher()
    wait_connected(publisher)
    restore = _watermark_args()
    subprocess.run(["rabbitmqctl", "set_vm_memory_high_watermark", "absolute", "1"],
                   check=True, capture_output=True, timeout=30)
    try:
        futures = []

        def publish_then_look() -> bool:
            # The alarm is raised at the memory monitor's next check, and only a connection that
            # publishes after it is blocked: keep publishing until it is.
            futures.append(publisher.publish(b"x", queue))
            return bool(publisher.health()["blocked"])

        wait_until(publish_then_look, 15, interval=0.1)
        assert telemetry.value("connection_blocked", system="rabbitmq", client="test") == 1
    finally:
        subprocess.run(["rabbitmqctl", "set_vm_memory_high_watermark", *restore],
                       check=True, capture_output=True, timeout=30)
    wait_until(lambda: not publisher.health()["blocked"], 15)
    assert telemetry.value("connection_blocked", system="rabbitmq", client="test") == 0
    assert [future.result(15).outcome for future in futures] == ["ack"] * len(futures)
