"""``health()["last_error"]`` and the reconnect log line say what happened even when pika's
exception prints as nothing (a refused connect: ``str(AMQPConnectionError(...)) == ""``)."""

from __future__ import annotations

import pika.exceptions
from pika.adapters.utils.connection_workflow import (
    AMQPConnectionWorkflowFailed,
    AMQPConnectorSocketConnectError,
)

from instrumented_clients.rabbitmq.errors import describe_error
from instrumented_clients.redaction import error_text


def refused() -> pika.exceptions.AMQPConnectionError:
    return pika.exceptions.AMQPConnectionError(AMQPConnectionWorkflowFailed([
        AMQPConnectorSocketConnectError(ConnectionRefusedError(111, "Connection refused"))]))


def test_refused_connect_is_described_by_its_arguments() -> None:
    error = refused()
    assert str(error) == ""  # pika's own text: why describe_error looks further
    text = describe_error(error)
    assert text.startswith("AMQPConnectionError: AMQPConnectionWorkflowFailed: ")
    assert "ConnectionRefusedError(111, 'Connection refused')" in text
    assert "ConnectionRefusedError(111, 'Connection refused')" in error_text(error)


def test_an_error_without_text_is_named_by_its_type_and_redacted() -> None:
    assert describe_error(pika.exceptions.StreamLostError()) == "StreamLostError"
    assert describe_error(ConnectionError("to amqp://guest:hunter2@broker:5672/")) == \
        "ConnectionError: to amqp://guest:***@broker:5672/"
