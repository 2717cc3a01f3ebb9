"""ConnectionStateMachine: the transition table, timestamps, reporting."""

from __future__ import annotations

import itertools

import pytest

from instrumented_clients import ConnectionState, ConnectionStateMachine, IllegalTransitionError
from instrumented_clients.resilience.events import ConnectionStateChanged, IllegalTransition
from instrumented_clients.resilience.state import TRANSITIONS
from instrumented_clients.testing import CapturedTelemetry, FakeClock

S = ConnectionState
LEGAL = {
    (S.DISCONNECTED, S.CONNECTING), (S.DISCONNECTED, S.CONNECTED), (S.DISCONNECTED, S.FAILED),
    (S.DISCONNECTED, S.CLOSING), (S.DISCONNECTED, S.CLOSED),
    (S.CONNECTING, S.CONNECTED), (S.CONNECTING, S.DISCONNECTED), (S.CONNECTING, S.FAILED),
    (S.CONNECTING, S.CLOSING), (S.CONNECTING, S.CLOSED),
    (S.CONNECTED, S.DISCONNECTED), (S.CONNECTED, S.CONNECTING), (S.CONNECTED, S.CLOSING),
    (S.CONNECTED, S.CLOSED),
    (S.FAILED, S.CONNECTED), (S.FAILED, S.CONNECTING), (S.FAILED, S.CLOSING),
    (S.FAILED, S.CLOSED),
    (S.CLOSING, S.CLOSED),
}
ALL_PAIRS = [(a, b) for a, b in itertools.product(S, S) if a is not b]


def test_table_is_the_documented_one() -> None:
    assert {(a, b) for a, targets in TRANSITIONS.items() for b in targets} == LEGAL


@pytest.mark.parametrize(("from_state", "to_state"), sorted(LEGAL))
def test_legal_transition_is_reported(
    from_state: ConnectionState, to_state: ConnectionState
) -> None:
    telemetry = CapturedTelemetry(logs=False)
    clock = FakeClock()
    machine = ConnectionStateMachine("redis", "cache", clock=clock, instrumentation=telemetry,
                                     initial=from_state)
    clock.advance(2.5)
    assert machine.transition(to_state, "because") is True
    assert machine.state is to_state
    assert machine.since == clock.monotonic()
    assert machine.history[-1] == (clock.monotonic(), to_state)
    change = telemetry.events_of(ConnectionStateChanged)[-1]
    assert (change.from_state, change.to_state, change.at, change.reason) == (
        from_state.value, to_state.value, clock.monotonic(), "because"
    )
    labels = {"system": "redis", "client": "cache"}
    assert telemetry.value("connection_state", state=to_state.value, **labels) == 1
    assert telemetry.value("connection_state", state=from_state.value, **labels) == 0
    assert telemetry.value("connection_transitions_total", from_state=from_state.value,
                           to_state=to_state.value, **labels) == 1


@pytest.mark.parametrize(
    ("from_state", "to_state"), [pair for pair in ALL_PAIRS if pair not in LEGAL]
)
def test_illegal_transition_raises_and_is_counted(
    from_state: ConnectionState, to_state: ConnectionState
) -> None:
    telemetry = CapturedTelemetry(logs=False)
    machine = ConnectionStateMachine("rabbitmq", "orders", clock=FakeClock(),
                                     instrumentation=telemetry, initial=from_state)
    with pytest.raises(IllegalTransitionError) as info:
        machine.transition(to_state)
    assert info.value.from_state == from_state.value
    assert info.value.to_state == to_state.value
    assert f"{from_state.value} -> {to_state.value}" in str(info.value)
    assert machine.state is from_state  # unchanged
    assert len(telemetry.events_of(IllegalTransition)) == 1
    assert telemetry.value("illegal_transitions_total", system="rabbitmq", client="orders") == 1


def test_same_state_is_a_no_op() -> None:
    recorder = CapturedTelemetry(logs=False)
    machine = ConnectionStateMachine("redis", "c", clock=FakeClock(), instrumentation=recorder)
    assert machine.transition(S.DISCONNECTED) is False
    assert len(recorder.events_of(ConnectionStateChanged)) == 1  # the initial one only


def test_initial_state_is_reported_without_a_transition() -> None:
    telemetry = CapturedTelemetry(logs=False)
    ConnectionStateMachine("redis", "c", clock=FakeClock(), instrumentation=telemetry)
    [initial] = telemetry.events_of(ConnectionStateChanged)
    assert initial.from_state is None
    assert telemetry.value("connection_state", system="redis", client="c",
                           state="disconnected") == 1
    assert telemetry.value("connection_state", system="redis", client="c",
                           state="connected") == 0


def test_can_transition_and_closed_is_terminal() -> None:
    machine = ConnectionStateMachine("redis", "c", clock=FakeClock(),
                                     instrumentation=CapturedTelemetry(logs=False))
    assert machine.can_transition(S.CONNECTING)
    machine.transition(S.CLOSING)
    assert not machine.can_transition(S.CONNECTED)
    machine.transition(S.CLOSED)
    assert all(not machine.can_transition(state) for state in S if state is not S.CLOSED)


def test_history_is_bounded() -> None:
    machine = ConnectionStateMachine("redis", "c", clock=FakeClock(),
                                     instrumentation=CapturedTelemetry(logs=False))
    for _ in range(150):
        machine.transition(S.CONNECTING)
        machine.transition(S.DISCONNECTED)
    assert len(machine.history) == 100
    assert machine.history[-1][1] is S.DISCONNECTED
