"""The compatibility names: DatabaseConnectionRetry, with_db_retry, get_db_connection_retry."""

from __future__ import annotations

import pymysql
import pytest

from instrumented_clients.config import ConfigError
from instrumented_clients.db import (
    DatabaseConnectionRetry,
    default_db_policy,
    get_db_connection_retry,
    with_db_retry,
)
from instrumented_clients.testing import CapturedTelemetry, FakeClock


def handler(clock: FakeClock, telemetry: CapturedTelemetry) -> DatabaseConnectionRetry:
    return DatabaseConnectionRetry(policy=default_db_policy(clock=clock), client="legacy",
                                   telemetry=telemetry)


def test_connect_with_retry_retries_connection_errors_then_returns_the_connection(
    clock: FakeClock, telemetry: CapturedTelemetry
) -> None:
    attempts: list[int] = []

    def connect() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise pymysql.err.OperationalError(2003, "Can't connect to MySQL server")
        return "connection"

    assert handler(clock, telemetry).connect_with_retry(connect, "mysql-main") == "connection"
    assert len(attempts) == 3
    assert len(clock.sleeps) == 2
    assert telemetry.value("retries_total", system="mysql", client="legacy", operation="connect",
                           error_type="connection") == 2


def test_an_authentication_error_is_raised_after_one_attempt(
    clock: FakeClock, telemetry: CapturedTelemetry
) -> None:
    attempts: list[int] = []

    def connect() -> None:
        attempts.append(1)
        raise pymysql.err.OperationalError(1045, "Access denied for user 'app'@'h'")

    with pytest.raises(pymysql.err.OperationalError):
        handler(clock, telemetry).connect_with_retry(connect, "mysql-main")
    assert attempts == [1]
    assert clock.sleeps == []


def test_execute_with_retry_gives_up_after_max_retries(
    clock: FakeClock, telemetry: CapturedTelemetry
) -> None:
    attempts: list[int] = []

    def query() -> None:
        attempts.append(1)
        raise pymysql.err.OperationalError(1213, "Deadlock found")

    with pytest.raises(pymysql.err.OperationalError):
        handler(clock, telemetry).execute_with_retry(query, "fetch users")
    assert len(attempts) == 4  # max_retries=3: 3 retries after the first try
    assert telemetry.value("retries_exhausted_total", system="mysql", client="legacy",
                           operation="execute") == 1


def test_compat_defaults_are_three_retries_and_one_second() -> None:
    retry = DatabaseConnectionRetry()
    assert retry.max_retries == 3
    assert retry.policy.max_attempts == 4
    assert list(retry.policy.delays()) == [1.0, 2.0, 4.0]
    assert retry.policy.max_delay == 30.0
    assert retry.policy.jitter == 0.5


def test_with_db_retry_decorates_a_function(clock: FakeClock, telemetry: CapturedTelemetry) -> None:
    calls: list[int] = []

    @with_db_retry(max_retries=2, base_delay=0.0, telemetry=telemetry)
    def fetch_user(user_id: int) -> dict[str, int]:
        calls.append(user_id)
        if len(calls) == 1:
            raise pymysql.err.OperationalError(2013, "Lost connection to MySQL server")
        return {"id": user_id}

    assert fetch_user(42) == {"id": 42}
    assert calls == [42, 42]
    assert fetch_user.__name__ == "fetch_user"


def test_with_db_retry_does_not_retry_syntax_errors(telemetry: CapturedTelemetry) -> None:
    calls: list[int] = []

    @with_db_retry(max_retries=3, base_delay=0.0, telemetry=telemetry)
    def broken() -> None:
        calls.append(1)
        raise pymysql.err.ProgrammingError(1064, "You have an error in your SQL syntax")

    with pytest.raises(pymysql.err.ProgrammingError):
        broken()
    assert calls == [1]


def test_get_db_connection_retry_reads_the_environment() -> None:
    retry = get_db_connection_retry(environ={"DB_RETRY_MAX_ATTEMPTS": "6",
                                             "DB_RETRY_BASE_DELAY": "2",
                                             "DB_RETRY_MAX_DELAY": "60"})
    assert retry.policy.max_attempts == 6
    assert retry.max_retries == 5
    assert (retry.policy.initial_delay, retry.policy.max_delay) == (2.0, 60.0)
    explicit = get_db_connection_retry(max_retries=5, base_delay=2.0, max_delay=60.0, environ={})
    assert explicit.policy.max_attempts == 6


def test_get_db_connection_retry_rejects_a_non_numeric_variable() -> None:
    with pytest.raises(ConfigError, match="DB_RETRY_MAX_ATTEMPTS"):
        get_db_connection_retry(environ={"DB_RETRY_MAX_ATTEMPTS": "three"})


def test_negative_max_retries_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_retries"):
        DatabaseConnectionRetry(max_retries=-1)
