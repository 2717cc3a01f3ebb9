"""The classification seam: pika's exceptions -> ErrorCategory, transient or not."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pika import exceptions as pika_errors

from instrumented_clients.compat import RetryConfig, retry
from instrumented_clients.rabbitmq import errors
from instrumented_clients.rabbitmq.errors import classify, is_transient_rmq_error
from instrumented_clients.resilience import ErrorCategory

C = ErrorCategory


@pytest.mark.parametrize(("error", "category"), [
    (pika_errors.StreamLostError("lost"), C.CONNECTION),
    (pika_errors.AMQPConnectionError("refused"), C.CONNECTION),
    (pika_errors.ConnectionClosedByBroker(320, "CONNECTION_FORCED - shutdown"), C.CONNECTION),
    (pika_errors.ConnectionClosedByBroker(541, "INTERNAL_ERROR"), C.CONNECTION),
    (pika_errors.ConnectionClosedByBroker(403, "ACCESS_REFUSED - Login was refused"), C.AUTH),
    (pika_errors.ConnectionClosedByBroker(530, "NOT_ALLOWED - vhost"), C.PERMISSION),
    (pika_errors.AMQPHeartbeatTimeout("no heartbeat"), C.TIMEOUT),
    (pika_errors.ConnectionBlockedTimeout("blocked"), C.SERVER_BUSY),
    (pika_errors.ChannelClosedByBroker(404, "NOT_FOUND - no exchange 'x' in vhost '/'"),
     C.NOT_FOUND),
    (pika_errors.ChannelClosedByBroker(403, "ACCESS_REFUSED"), C.PERMISSION),
    (pika_errors.ChannelClosedByBroker(406, "PRECONDITION_FAILED - inequivalent arg"),
     C.CONFIGURATION),
    (pika_errors.ChannelClosedByBroker(320, "CONNECTION_FORCED"), C.CONNECTION),
    (pika_errors.ChannelClosedByBroker(541, "INTERNAL_ERROR"), C.CONNECTION),
    (pika_errors.ChannelWrongStateError("closed"), C.CONNECTION),
    (pika_errors.ProbableAuthenticationError(
        "(\"ConnectionClosedByBroker: (403) 'ACCESS_REFUSED - Login was refused'\",)"), C.AUTH),
    (pika_errors.ProbableAuthenticationError(
        "(\"StreamLostError: ('Transport indicated EOF',)\",)"), C.CONNECTION),
    (pika_errors.ProbableAccessDeniedError("vhost /nope"), C.PERMISSION),
    (pika_errors.AuthenticationError("PLAIN"), C.AUTH),
    (pika_errors.IncompatibleProtocolError("eof"), C.CONNECTION),
    (pika_errors.NackError([]), C.SERVER_BUSY),
    (pika_errors.UnroutableError([]), C.NOT_FOUND),
    (ConnectionRefusedError(111, "refused"), C.CONNECTION),
    (TimeoutError(), C.TIMEOUT),
    (ValueError("bad"), C.PROGRAMMING),
    (errors.PublishNackedError("nack"), C.SERVER_BUSY),
    (errors.PublishTimeoutError("slow"), C.TIMEOUT),
    (errors.ConnectionLostError("lost"), C.CONNECTION),
    (errors.UnroutableError("nowhere"), C.NOT_FOUND),
    (errors.ChannelClosedError(404, "NOT_FOUND"), C.NOT_FOUND),
    (errors.ChannelClosedError(320, "CONNECTION_FORCED"), C.CONNECTION),
    (errors.NotConnectedError("down"), C.CONNECTION),
])
def test_classification(error: BaseException, category: ErrorCategory) -> None:
    assert classify(error) is category
    assert is_transient_rmq_error(error) is category.is_transient


@pytest.mark.parametrize("code", [403, 404, 406])
def test_channel_refusals_are_permanent(code: int) -> None:
    assert not is_transient_rmq_error(pika_errors.ChannelClosedByBroker(code, "refused"))


@pytest.mark.parametrize("code", [320, 541])
def test_forced_and_internal_closes_are_transient(code: int) -> None:
    assert is_transient_rmq_error(pika_errors.ConnectionClosedByBroker(code, "x"))
    assert is_transient_rmq_error(pika_errors.ChannelClosedByBroker(code, "x"))


def test_missing_exchange_name_is_read_from_the_reply_text() -> None:
    assert errors.missing_exchange("NOT_FOUND - no exchange 'orders' in vhost '/'") == "orders"
    assert errors.missing_exchange("NOT_FOUND - no queue 'q' in vhost '/'") is None


def test_retry_config_exception_filter_works_with_retry(clock: object) -> None:
    calls = []

    @retry(RetryConfig(max_attempts=3, initial_delay=0.0, jitter=False,
                       exception_filter=is_transient_rmq_error))
    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise pika_errors.StreamLostError("lost")
        return "ok"

    assert flaky() == "ok"
    assert len(calls) == 3

    @retry(RetryConfig(max_attempts=3, initial_delay=0.0,
                       exception_filter=is_transient_rmq_error))
    def refused() -> None:
        calls.append(1)
        raise pika_errors.ChannelClosedByBroker(404, "NOT_FOUND")

    calls.clear()
    with pytest.raises(pika_errors.ChannelClosedByBroker):
        refused()
    assert len(calls) == 1


def test_describe_error_is_never_empty_and_never_has_a_password() -> None:
    assert errors.describe_error(pika_errors.AMQPConnectionError()) == "AMQPConnectionError"
    wrapped = pika_errors.AMQPConnectionError(ConnectionRefusedError(111, "refused"))
    assert "refused" in errors.describe_error(wrapped)
    leaked = OSError("cannot reach amqp://app:hunter2@broker:5672/")
    text = errors.describe_error(leaked)
    assert "hunter2" not in text
    assert text.startswith("OSError: ")
    assert len(errors.describe_error(ValueError("x" * 2000))) == 500


@given(st.integers(min_value=0, max_value=999), st.text(max_size=40))
def test_every_reply_code_classifies_the_same_on_channel_and_connection(code: int,
                                                                         text: str) -> None:
    category = errors.reply_code_category(code)
    assert classify(pika_errors.ChannelClosedByBroker(code, text)) is category
    connection_category = classify(pika_errors.ConnectionClosedByBroker(code, text))
    # 403 at connection level is a refused login; everything else maps like a channel close.
    assert connection_category is (C.AUTH if code == 403 else category)


@given(st.sampled_from([Exception, RuntimeError, OSError, KeyError, ArithmeticError,
                        pika_errors.AMQPError, pika_errors.AMQPConnectionError,
                        pika_errors.AMQPChannelError]), st.text(max_size=30))
def test_classify_is_total(kind: type[Exception], text: str) -> None:
    assert isinstance(classify(kind(text)), ErrorCategory)
