"""Connection state and reconnect accounting, driven through the hooks the Guard calls
(no network: the failures are redis-py's exceptions, as the driver raises them)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis import exceptions as rx

from instrumented_clients import ConnectionState
from instrumented_clients.redis import ResilientRedis
from instrumented_clients.redis.errors import mark_unsent
from instrumented_clients.resilience.events import (
    ReconnectAttempt,
    ReconnectFinished,
    RetryScheduled,
)
from instrumented_clients.testing import CapturedTelemetry, FakeClock

S = ConnectionState


@pytest.fixture
def client(telemetry: CapturedTelemetry, clock: FakeClock) -> Iterator[ResilientRedis]:
    redis_client = ResilientRedis("redis://127.0.0.1:1/0", name="track", telemetry=telemetry,
                                  clock=clock)
    yield redis_client
    redis_client.close()


def retry_event(error: BaseException) -> RetryScheduled:
    return RetryScheduled("redis", "track", "get", 1, 4, 0.5, "connection", error, "get")


def test_first_success_is_not_a_reconnection(client: ResilientRedis,
                                             telemetry: CapturedTelemetry) -> None:
    client._core.attempt_succeeded()
    assert client.state is S.CONNECTED
    assert [state for _, state in client._tracker.machine.history] == [S.DISCONNECTED, S.CONNECTED]
    assert telemetry.events_of(ReconnectAttempt) == []


def test_loss_retry_and_recovery_make_one_timed_reconnect_cycle(
    client: ResilientRedis, telemetry: CapturedTelemetry, clock: FakeClock
) -> None:
    client._core.attempt_succeeded()
    lost = rx.ConnectionError("Connection closed by server.")
    client._core.on_retry(retry_event(lost))  # the connection broke; a retry follows
    assert client.state is S.CONNECTING
    clock.advance(0.5)
    client._core.on_retry(retry_event(mark_unsent(rx.ConnectionError("Error 111 connecting"))))
    clock.advance(1.0)
    client._core.attempt_succeeded()
    assert client.state is S.CONNECTED
    attempts = telemetry.events_of(ReconnectAttempt)
    assert [(a.attempt, a.outcome) for a in attempts] == [(1, "failure"), (2, "success")]
    (finished,) = telemetry.events_of(ReconnectFinished)
    assert finished.outcome == "success"
    assert finished.attempts == 2
    assert finished.duration == pytest.approx(1.5)
    assert telemetry.value("reconnect_duration_seconds_count", system="redis",
                           client="track") == 1.0
    assert client.health()["reconnect_attempts"] == 2
    assert client.health()["consecutive_failures"] == 0


def test_spent_policy_means_failed_until_the_next_success(
    client: ResilientRedis, telemetry: CapturedTelemetry
) -> None:
    client._core.attempt_succeeded()
    error = rx.ConnectionError("Connection refused")
    guard = client._core.guards.for_command(("GET", "k"))
    client._core.on_retry(retry_event(error))
    client._core.call_failed(guard, error)
    assert client.state is S.FAILED
    assert client.health()["last_error"] == "ConnectionError: Connection refused"
    (finished,) = telemetry.events_of(ReconnectFinished)
    assert finished.outcome == "failure"
    client._core.attempt_succeeded()
    assert client.state is S.CONNECTED


def test_an_ambiguous_write_failure_is_not_failed_state(client: ResilientRedis) -> None:
    client._core.attempt_succeeded()
    error = rx.ConnectionError("Connection closed by server.")
    incr = client._core.guards.for_command(("INCR", "k"))
    client._core.call_failed(incr, error)  # not retried: maybe applied
    assert client.state is S.DISCONNECTED


def test_a_server_error_proves_the_connection(client: ResilientRedis) -> None:
    incr = client._core.guards.for_command(("INCR", "k"))
    client._core.call_failed(incr, rx.ResponseError("WRONGTYPE"))
    assert client.state is S.CONNECTED


def test_authentication_failure_is_failed_at_once(client: ResilientRedis) -> None:
    error = mark_unsent(rx.AuthenticationError("invalid username-password pair"))
    client._core.call_failed(client._core.guards.for_command(("GET", "k")), error)
    assert client.state is S.FAILED


def test_passwords_never_reach_last_error(client: ResilientRedis) -> None:
    error = rx.ConnectionError("Error connecting to redis://app:hunter2@db:6379/0")
    client._core.call_failed(client._core.guards.for_command(("GET", "k")), error)
    assert "hunter2" not in str(client.health())


def test_concurrent_in_flight_losses_are_one_loss_not_many_reconnect_attempts(
    client: ResilientRedis, telemetry: CapturedTelemetry
) -> None:
    client._core.attempt_succeeded()
    for _ in range(6):  # six threads had a command in flight on the link that dropped
        client._core.on_retry(retry_event(rx.ConnectionError("Connection reset by peer")))
    assert telemetry.events_of(ReconnectAttempt) == []
    transitions = [state for _, state in client._tracker.machine.history]
    assert transitions.count(S.DISCONNECTED) == 2  # the initial state and the one loss
    client._core.attempt_succeeded()
    (finished,) = telemetry.events_of(ReconnectFinished)
    assert finished.attempts == 1
