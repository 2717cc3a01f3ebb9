"""The reconnect loop's decisions, driven by hand with a FakeClock (the I/O loop never runs)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pika import exceptions as pika_errors

from instrumented_clients.rabbitmq.connection import RabbitConnection, default_reconnect_policy
from instrumented_clients.resilience import ConnectionState
from instrumented_clients.resilience.events import ReconnectAttempt, ReconnectFinished
from instrumented_clients.testing import CapturedTelemetry, FakeClock


@pytest.fixture
def connection(clock: FakeClock, telemetry: CapturedTelemetry) -> Iterator[RabbitConnection]:
    policy = default_reconnect_policy(4, 1.0, 5.0, clock=clock).replace(jitter=0.0)
    conn = RabbitConnection("amqp://guest:guest@127.0.0.1:1/", name="unit",
                            telemetry=telemetry, reconnect_policy=policy, clock=clock)
    conn.tracker.connecting()
    yield conn
    conn.close()


def _attempts(telemetry: CapturedTelemetry) -> list[ReconnectAttempt]:
    return telemetry.events_of(ReconnectAttempt)


def test_transient_failures_back_off_then_fail_and_continue_at_the_cap(
    connection: RabbitConnection, telemetry: CapturedTelemetry, clock: FakeClock
) -> None:
    for _ in range(6):
        clock.advance(1.0)
        connection._attempt_failed(pika_errors.AMQPConnectionError("refused"))

    assert [a.next_delay for a in _attempts(telemetry)] == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert {a.error_type for a in _attempts(telemetry)} == {"connection"}
    assert connection.state is ConnectionState.FAILED
    finished = telemetry.events_of(ReconnectFinished)
    assert [(f.outcome, f.attempts) for f in finished] == [("failure", 4)]
    assert finished[0].duration == pytest.approx(4.0)
    assert connection.reconnect_attempts == 6
    assert "refused" in (connection.last_error or "")


def test_an_auth_failure_is_failed_at_once_and_waits_for_the_cap(
    connection: RabbitConnection, telemetry: CapturedTelemetry
) -> None:
    connection._attempt_failed(pika_errors.ProbableAuthenticationError(
        "ConnectionClosedByBroker: (403) 'ACCESS_REFUSED - Login was refused'"))

    assert connection.state is ConnectionState.FAILED
    assert [(a.error_type, a.next_delay) for a in _attempts(telemetry)] == [("auth", 5.0)]


def test_password_never_reaches_last_error(clock: FakeClock,
                                           telemetry: CapturedTelemetry) -> None:
    conn = RabbitConnection("amqp://guest:s3cret@127.0.0.1:1/", name="pw", telemetry=telemetry,
                            clock=clock)
    try:
        conn._attempt_failed(pika_errors.AMQPConnectionError(
            "could not connect to amqp://guest:s3cret@127.0.0.1:1/"))
        assert "s3cret" not in (conn.last_error or "")
        assert "s3cret" not in str(conn.health())
    finally:
        conn.close()


def test_close_before_start_is_closed_and_counts_no_illegal_transition(
    clock: FakeClock, telemetry: CapturedTelemetry
) -> None:
    conn = RabbitConnection("amqp://127.0.0.1/", name="never", telemetry=telemetry, clock=clock)
    conn.close()
    conn.close()
    assert conn.state is ConnectionState.CLOSED
    assert conn.illegal_transitions == 0


def test_a_callback_error_is_contained(connection: RabbitConnection) -> None:
    def broken() -> None:
        raise RuntimeError("bug")

    def illegal() -> None:
        connection.machine.transition(ConnectionState.CLOSED)
        connection.machine.transition(ConnectionState.CONNECTED)

    connection.guarded(broken)()  # logged, not raised
    connection.guarded(illegal)()  # counted, not raised
    assert connection.illegal_transitions == 1
