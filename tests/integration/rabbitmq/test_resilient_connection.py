"""ResilientConnection over a user's own pika.BlockingConnection factory."""

from __future__ import annotations

from typing import Any

import pika
import pytest
from pika import exceptions as pika_errors

from instrumented_clients.rabbitmq import RabbitMQError, ResilientConnection
from instrumented_clients.resilience import ConnectionState
from instrumented_clients.testing import CapturedTelemetry, FaultProxy
from tests.integration.rabbitmq.conftest import AMQP_URL, Admin

pytestmark = pytest.mark.integration


def test_reconnects_after_a_cut_and_retries_the_operation(
    admin: Admin, proxy: FaultProxy, telemetry: CapturedTelemetry
) -> None:
    queue = admin.queue("blocking")
    made: list[Any] = []

    def factory() -> Any:
        connection = pika.BlockingConnection(pika.URLParameters(proxy.url(AMQP_URL)))
        made.append(connection)
        return connection

    confirming: set[int] = set()

    def publish(channel: Any, body: bytes) -> None:
        # With confirms a publish on a dead connection raises instead of vanishing.
        if id(channel) not in confirming:
            channel.confirm_delivery()
            confirming.add(id(channel))
        channel.basic_publish("", queue, body)

    with ResilientConnection(factory, name="legacy", telemetry=telemetry) as resilient:
        resilient.execute(lambda channel: publish(channel, b"one"))
        proxy.cut()
        resilient.execute(lambda channel: publish(channel, b"two"))

        assert len(made) == 2  # the dead connection was invalidated, a fresh one made
        assert resilient.health()["reconnect_attempts"] == 1
        assert resilient.health()["address"] == f"127.0.0.1:{proxy.port}"
        assert resilient.machine.state is ConnectionState.CONNECTED
    assert admin.message_count(queue) == 2
    # Either the health check saw the reset (a plain success on a fresh connection) or the
    # publish failed and was retried on one; never a failure.
    outcomes = {outcome: telemetry.value("operation_duration_seconds_count",
                                         system="rabbitmq", client="legacy",
                                         operation="publish", outcome=outcome)
                for outcome in ("success", "success_after_retry", "failure",
                                "failure_after_retry")}
    assert outcomes["success"] + outcomes["success_after_retry"] == 2
    assert outcomes["failure"] == outcomes["failure_after_retry"] == 0
    assert resilient.machine.state is ConnectionState.CLOSED
    with pytest.raises(RabbitMQError, match="closed"):
        resilient.channel()


def test_gives_up_after_the_default_policy_while_down(
    proxy: FaultProxy, telemetry: CapturedTelemetry
) -> None:
    proxy.refuse()
    resilient = ResilientConnection(
        lambda: pika.BlockingConnection(pika.URLParameters(proxy.url(AMQP_URL))),
        name="legacy-down", telemetry=telemetry)
    with pytest.raises(pika_errors.AMQPConnectionError):
        resilient.channel()
    assert telemetry.value("retries_total", system="rabbitmq", client="legacy-down",
                           operation="connect", error_type="connection") == 2
    resilient.close()


def test_permanent_channel_error_is_not_retried(admin: Admin,
                                                telemetry: CapturedTelemetry) -> None:
    resilient = ResilientConnection(
        lambda: pika.BlockingConnection(pika.URLParameters(AMQP_URL)), name="legacy-404",
        telemetry=telemetry)
    try:
        missing = admin.name("missing-queue")
        with pytest.raises(pika_errors.ChannelClosedByBroker) as info:
            resilient.execute(lambda channel: channel.queue_declare(missing, passive=True))
        assert info.value.reply_code == 404
        assert telemetry.value("retries_total", system="rabbitmq", client="legacy-404",
                               operation="publish", error_type="not_found") is None
        # The next call gets a fresh channel on the same connection.
        resilient.execute(lambda channel: channel.queue_declare(missing, auto_delete=True))
        admin.queues.append(missing)
    finally:
        resilient.close()
