"""``health()["last_error"]`` and the reconnect log line say what happened even when pika's
exception prints as nothing (a refused connect: ``str(AMQPConnectionError(...)) == ""``)."""

from __future__ import annotations

import pika.exceptions
from pika.adapters.utils.connection_workflow import (
    AMQPConnectionWorkflowFailed,
    AMQPConnectorSocketConnectError,
)

from instrumented_clients.rabbitmq.connection import _describe
from instrumented_clients.telemetry.log_sink import _error_text


def refused() -> pika.exceptions.AMQPConnectionError:
    return pika.exceptions.AMQPConnectionError(AMQPConnectionWorkflowFailed([
        AMQPConnectorSocketConnectError(ConnectionRefusedError(111, "Connection refused"))]))


def test_refused_connect_is_described_by_its_arguments() -> None:
    error = refused()
    assert str(error) == ""  # pika's own text: why _describe looks further
    text = _describe(error)
    assert text.startswith("AMQPConnectionError: AMQPConnectionWorkflowFailed: ")
    assert "ConnectionRefusedError(111, 'Connection refused')" in text
    assert "ConnectionRefusedError(111, 'Connection refused')" in _error_text(error)


def test_an_error_without_text_is_named_by_its_type_and_redacted() -> None:
    assert _describe(pika.exceptions.StreamLostError()) == "StreamLostError"
    assert _describe(ConnectionError("to amqp://guest:hunter2@broker:5672/")) == \
        "ConnectionError: to amqp://guest:***@broker:5672/"
