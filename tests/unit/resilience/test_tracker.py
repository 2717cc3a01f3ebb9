"""ConnectionTracker: reconnect cycles, attempts, last error and failures in a row (FakeClock)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from instrumented_clients.resilience import (
    ClientContext,
    ConnectionState,
    ConnectionTracker,
    ErrorCategory,
)
from instrumented_clients.resilience.events import (
    ConnectionStateChanged,
    ReconnectAttempt,
    ReconnectFinished,
)
from instrumented_clients.resilience.state import TRANSITIONS
from instrumented_clients.testing import CapturedTelemetry, FakeClock

S = ConnectionState
CONNECTION = ErrorCategory.CONNECTION
REFUSED = ConnectionRefusedError("connect to redis://app:hunter2@db:6379 refused")


def make(clock: FakeClock, telemetry: CapturedTelemetry) -> ConnectionTracker:
    return ConnectionTracker(ClientContext("redis", "t", clock, telemetry))


def test_a_first_connection_at_the_first_try_is_not_a_reconnect(
    clock: FakeClock, telemetry: CapturedTelemetry
) -> None:
    tracker = make(clock, telemetry)
    tracker.connecting()
    assert tracker.succeeded() is True
    assert tracker.state is S.CONNECTED
    assert tracker.connected
    assert telemetry.events_of(ReconnectAttempt) == []
    assert telemetry.events_of(ReconnectFinished) == []
    assert tracker.succeeded() is False  # nothing to report while connected


def test_a_failed_first_connection_makes_the_next_success_a_timed_reconnect(
    clock: FakeClock, telemetry: CapturedTelemetry
) -> None:
    tracker = make(clock, telemetry)
    tracker.connecting()
    clock.advance(1.0)
    assert tracker.failed(REFUSED, CONNECTION, attempt=True, next_delay=2.0) == 1
    assert tracker.state is S.DISCONNECTED
    clock.advance(2.0)
    tracker.connecting()
    assert tracker.succeeded()
    attempts = telemetry.events_of(ReconnectAttempt)
    assert [(a.attempt, a.outcome, a.next_delay) for a in attempts] == [
        (1, "failure", 2.0), (2, "success", None)]
    (finished,) = telemetry.events_of(ReconnectFinished)
    assert (finished.outcome, finished.attempts, finished.duration) == ("success", 2, 3.0)
    assert tracker.reconnect_attempts == 2


def test_a_loss_is_not_an_attempt_and_in_flight_failures_are_one_loss(
    clock: FakeClock, telemetry: CapturedTelemetry
) -> None:
    tracker = make(clock, telemetry)
    tracker.succeeded()
    for _ in range(5):  # every call in flight on the dropped link fails at once
        assert tracker.failed(ConnectionResetError("reset"), CONNECTION, attempt=False) == 0
    assert tracker.state is S.DISCONNECTED
    assert telemetry.events_of(ReconnectAttempt) == []
    assert tracker.consecutive_failures == 5
    tracker.attempt_started()
    assert tracker.state is S.CONNECTING
    clock.advance(0.5)
    tracker.succeeded()
    (finished,) = telemetry.events_of(ReconnectFinished)
    assert (finished.attempts, finished.duration) == (1, 0.5)
    assert tracker.consecutive_failures == 0


def test_failed_holds_until_a_success_and_the_cycle_failure_is_reported_once(
    clock: FakeClock, telemetry: CapturedTelemetry
) -> None:
    tracker = make(clock, telemetry)
    tracker.succeeded()
    tracker.failed(ConnectionResetError("reset"), CONNECTION, attempt=False)
    for _ in range(3):
        clock.advance(1.0)
        tracker.failed(REFUSED, CONNECTION, attempt=True)
        tracker.give_up("policy spent")
        assert tracker.state is S.FAILED
    (failed,) = telemetry.events_of(ReconnectFinished)
    assert (failed.outcome, failed.attempts, failed.duration) == ("failure", 1, 1.0)
    tracker.attempt_started()  # FAILED is not left for CONNECTING
    assert tracker.state is S.FAILED
    tracker.succeeded()
    assert tracker.state is S.CONNECTED
    assert [f.outcome for f in telemetry.events_of(ReconnectFinished)] == ["failure", "success"]


def test_give_up_without_reporting_keeps_the_cycle_open(
    clock: FakeClock, telemetry: CapturedTelemetry
) -> None:
    tracker = make(clock, telemetry)
    tracker.connecting()
    tracker.failed(REFUSED, CONNECTION, attempt=True)
    tracker.give_up("start-up attempts spent", report_cycle=False)
    assert tracker.state is S.FAILED
    assert telemetry.events_of(ReconnectFinished) == []
    clock.advance(4.0)
    tracker.succeeded()
    (finished,) = telemetry.events_of(ReconnectFinished)
    assert (finished.outcome, finished.attempts, finished.duration) == ("success", 2, 4.0)


def test_last_error_is_redacted_and_record_failure_counts_without_a_state_change(
    clock: FakeClock, telemetry: CapturedTelemetry
) -> None:
    tracker = make(clock, telemetry)
    tracker.succeeded()
    tracker.record_failure(TimeoutError("statement timeout"))
    assert tracker.state is S.CONNECTED
    assert tracker.connected is False  # the next success resets the count
    assert tracker.consecutive_failures == 1
    assert tracker.last_error == "TimeoutError: statement timeout"
    tracker.succeeded()
    assert tracker.consecutive_failures == 0
    assert tracker.connected
    tracker.failed(REFUSED, CONNECTION, attempt=True)
    assert "hunter2" not in (tracker.last_error or "")
    assert tracker.last_error_category is CONNECTION


def test_a_closed_tracker_ignores_reports_unless_reusable(
    clock: FakeClock, telemetry: CapturedTelemetry
) -> None:
    final = make(clock, telemetry)
    final.closing()
    final.closed_now()
    assert final.succeeded() is False
    assert final.state is S.CLOSED
    reusable = ConnectionTracker(ClientContext("redis", "r", clock, telemetry))
    reusable.succeeded()
    reusable.closing()
    reusable.closed_now(reusable=True)
    assert reusable.state is S.CLOSED
    assert reusable.succeeded() is True
    assert reusable.state is S.CONNECTED
    assert telemetry.events_of(ReconnectAttempt) == []  # used again: a connect, not a reconnect
    reopened = [e for e in telemetry.events_of(ConnectionStateChanged)
                if e.client == "r" and e.to_state == "connected"]
    assert [e.from_state for e in reopened] == ["disconnected", None]  # reported as a new life


ACTIONS = st.lists(st.sampled_from(
    ["connecting", "attempt_started", "succeeded", "fail_attempt", "fail_in_flight", "give_up",
     "record_failure", "advance"]), max_size=60)


@settings(max_examples=300, deadline=None)
@given(actions=ACTIONS)
def test_any_sequence_keeps_the_state_legal_and_counts_every_attempt(actions: list[str]) -> None:
    clock = FakeClock()
    telemetry = CapturedTelemetry(logs=False)
    tracker = make(clock, telemetry)
    for action in actions:
        if action == "advance":
            clock.advance(1.0)
        elif action == "fail_attempt":
            tracker.failed(REFUSED, CONNECTION, attempt=True)
        elif action == "fail_in_flight":
            tracker.failed(ConnectionResetError("reset"), CONNECTION, attempt=False)
        elif action == "give_up":
            tracker.give_up("spent")
        elif action == "record_failure":
            tracker.record_failure(TimeoutError("slow"))
        else:
            getattr(tracker, action)()
        if tracker.state is S.CONNECTED:
            assert tracker.cycle_attempts == 0
    changes = telemetry.events_of(ConnectionStateChanged)
    for change in changes[1:]:
        assert S(change.to_state) in TRANSITIONS[S(change.from_state or "disconnected")]
    attempts = telemetry.events_of(ReconnectAttempt)
    assert tracker.reconnect_attempts == len(attempts)
    finished = telemetry.events_of(ReconnectFinished)
    successes = [f for f in finished if f.outcome == "success"]
    assert len(successes) == sum(1 for a in attempts if a.outcome == "success")
    assert all(f.duration >= 0 for f in finished)
    assert (tracker.state is S.CONNECTED) == (
        bool(changes) and changes[-1].to_state == "connected")


@pytest.mark.parametrize("initial", [S.DISCONNECTED, S.CONNECTED])
def test_initial_state(initial: ConnectionState, clock: FakeClock,
                       telemetry: CapturedTelemetry) -> None:
    tracker = ConnectionTracker(ClientContext("redis", "i", clock, telemetry), initial=initial)
    assert tracker.state is initial
    assert tracker.connected is (initial is S.CONNECTED)
