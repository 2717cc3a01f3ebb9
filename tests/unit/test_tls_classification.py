"""A TLS certificate or host name that does not verify is permanent (CONFIGURATION) at every seam,
however the driver wraps it; other TLS and connection failures stay transient."""

from __future__ import annotations

import ssl

import pika.exceptions as pika_errors
import psycopg
import pymysql
import pytest
import sqlalchemy.exc
from pika.adapters.utils import connection_workflow
from redis import exceptions as rx

from instrumented_clients.db import classify as classify_db
from instrumented_clients.rabbitmq import classify as classify_rabbitmq
from instrumented_clients.redis import classify as classify_redis
from instrumented_clients.resilience.errors import (
    ErrorCategory,
    classify_exception,
    tls_verification_failure,
)

CONFIGURATION = ErrorCategory.CONFIGURATION


def _verification_error() -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(
        1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate"
    )
    error.verify_message = "self-signed certificate"
    return error


def _raised_while_handling(cause: BaseException, wrapper: BaseException) -> BaseException:
    """``wrapper`` raised inside ``except`` for ``cause``, as the drivers do (implicit chaining)."""
    try:
        try:
            raise cause
        except BaseException:
            raise wrapper  # noqa: B904 - the drivers chain implicitly; that is the form tested
    except BaseException as raised:
        return raised


def _redis_py_form() -> BaseException:
    # redis-py's Connection.connect: `except OSError as e: raise ConnectionError(message(e))`.
    cause = _verification_error()
    return _raised_while_handling(
        cause, rx.ConnectionError(f"Error 1 connecting to cache.internal:6380. {cause}.")
    )


def _pymysql_form() -> BaseException:
    # PyMySQL's Connection.connect wraps every OSError of the handshake, TLS included, in 2003.
    cause = _verification_error()
    return _raised_while_handling(cause, pymysql.err.OperationalError(
        2003, f"Can't connect to MySQL server on 'db.internal' ({cause})"
    ))


def _pika_form() -> BaseException:
    # pika's connection workflow: the TLS error inside the transport-setup error, inside the
    # workflow failure, inside the AMQPConnectionError a BlockingConnection raises.
    setup = connection_workflow.AMQPConnectorTransportSetupError(_verification_error())
    workflow = connection_workflow.AMQPConnectionWorkflowFailed([setup])
    return pika_errors.AMQPConnectionError(workflow)


def test_the_core_finds_the_verification_failure_however_deep() -> None:
    error = _verification_error()
    assert classify_exception(error) is CONFIGURATION
    assert tls_verification_failure(error) is error
    assert tls_verification_failure(_redis_py_form()) is not None
    assert tls_verification_failure(_pika_form()) is not None
    several = connection_workflow.AMQPConnectionWorkflowFailed([ConnectionRefusedError(), error])
    assert tls_verification_failure(several) is error


def test_the_search_ends_on_a_cycle_and_finds_nothing_in_plain_errors() -> None:
    first, second = ConnectionError("a"), ConnectionError("b")
    first.__context__, second.__context__ = second, first
    assert tls_verification_failure(first) is None
    assert tls_verification_failure(ssl.SSLError(1, "wrong version number")) is None


def test_redis_py_wrapped_verification_failure_is_configuration() -> None:
    assert classify_redis(_redis_py_form()) is CONFIGURATION
    refused = _raised_while_handling(ConnectionRefusedError(111, "refused"),
                                     rx.ConnectionError("Error 111 connecting"))
    assert classify_redis(refused) is ErrorCategory.CONNECTION
    handshake_cut = _raised_while_handling(ssl.SSLEOFError(8, "EOF in violation of protocol"),
                                           rx.ConnectionError("Error 8 connecting"))
    assert classify_redis(handshake_cut) is ErrorCategory.CONNECTION  # a cut, not a bad cert


def test_pika_wrapped_verification_failure_is_configuration() -> None:
    assert classify_rabbitmq(_pika_form()) is CONFIGURATION
    workflow = connection_workflow.AMQPConnectionWorkflowFailed(
        [connection_workflow.AMQPConnectorSocketConnectError(ConnectionRefusedError(111, "x"))]
    )
    assert classify_rabbitmq(pika_errors.AMQPConnectionError(workflow)) is (
        ErrorCategory.CONNECTION
    )


@pytest.mark.parametrize("wrap_in_sqlalchemy", [False, True], ids=["driver", "sqlalchemy"])
def test_pymysql_wrapped_verification_failure_is_configuration(wrap_in_sqlalchemy: bool) -> None:
    error = _pymysql_form()
    if wrap_in_sqlalchemy:
        error = _raised_while_handling(error, sqlalchemy.exc.OperationalError(None, None, error))
    assert classify_db(error) is CONFIGURATION
    refused = pymysql.err.OperationalError(2003, "Can't connect to MySQL server on 'db' (111)")
    assert classify_db(refused) is ErrorCategory.CONNECTION


@pytest.mark.parametrize(
    "message",
    [
        'connection to server at "127.0.0.1", port 5433 failed: SSL error: certificate verify '
        "failed",
        'connection to server at "127.0.0.1", port 5433 failed: server certificate for '
        '"db.invalid" does not match host name "127.0.0.1"',
        'connection to server at "127.0.0.1", port 5433 failed: root certificate file '
        '"/nowhere/root.crt" does not exist',
    ],
)
@pytest.mark.parametrize("wrap_in_sqlalchemy", [False, True], ids=["driver", "sqlalchemy"])
def test_libpq_verification_failure_is_configuration(message: str,
                                                     wrap_in_sqlalchemy: bool) -> None:
    # libpq verifies certificates itself: psycopg only has its message.
    error: BaseException = psycopg.OperationalError(message)
    if wrap_in_sqlalchemy:
        error = sqlalchemy.exc.OperationalError(None, None, error)
    assert classify_db(error) is CONFIGURATION
    lost = psycopg.OperationalError('connection to server at "127.0.0.1", port 5433 failed: '
                                    "SSL SYSCALL error: EOF detected")
    assert classify_db(lost) is ErrorCategory.CONNECTION
