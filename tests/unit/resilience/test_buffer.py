"""EventBuffer: overflow policies, expiry, restore, shutdown, drop hook, accounting."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from instrumented_clients import BufferFullError, EventBuffer, OverflowPolicy
from instrumented_clients.resilience.events import EventsDropped
from instrumented_clients.testing import CapturedTelemetry, FakeClock

LABELS = {"system": "rabbitmq", "client": "events"}


def make(
    clock: FakeClock, capacity: int = 3, **kwargs: Any
) -> tuple[EventBuffer[Any], CapturedTelemetry, list[tuple[Any, str]]]:
    telemetry = CapturedTelemetry(logs=False)
    telemetry.prepare("rabbitmq", "events")  # as a client does: drop counters start at 0
    drops: list[tuple[Any, str]] = []
    buffer: EventBuffer[Any] = EventBuffer(
        capacity, clock=clock, instrumentation=telemetry, system="rabbitmq", client="events",
        on_drop=lambda item, reason: drops.append((item, reason)), **kwargs,
    )
    return buffer, telemetry, drops


def dropped(telemetry: CapturedTelemetry, reason: str) -> float | None:
    return telemetry.value("buffer_dropped_events_total", reason=reason, **LABELS)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"capacity": 0}, "capacity"),
        ({"capacity": True}, "capacity"),
        ({"capacity": 2.5}, "capacity"),
        ({"max_age": 0}, "max_age"),
        ({"overflow": "explode"}, "overflow"),
    ],
)
def test_invalid_settings_are_named(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        EventBuffer(**kwargs)


def test_fifo_take(clock: FakeClock) -> None:
    buffer, telemetry, _ = make(clock, capacity=10)
    for item in range(5):
        assert buffer.put(item) is True
    assert buffer.take(2) == [0, 1]
    assert buffer.take() == [2, 3, 4]
    assert buffer.take() == []
    assert telemetry.value("buffered_events_total", **LABELS) == 5
    assert telemetry.value("buffer_flushed_events_total", **LABELS) == 5
    assert telemetry.value("buffer_events", **LABELS) == 0
    assert telemetry.value("buffer_capacity_events", **LABELS) == 10


def test_drop_oldest(clock: FakeClock) -> None:
    buffer, telemetry, drops = make(clock, overflow=OverflowPolicy.DROP_OLDEST)
    for item in range(5):
        assert buffer.put(item) is True
    assert buffer.take() == [2, 3, 4]
    assert drops == [(0, "overflow"), (1, "overflow")]
    assert dropped(telemetry, "overflow") == 2
    assert buffer.stats().dropped == {"overflow": 2, "expired": 0, "shutdown": 0}


def test_drop_newest(clock: FakeClock) -> None:
    buffer, telemetry, drops = make(clock, overflow="drop_newest")
    results = [buffer.put(item) for item in range(5)]
    assert results == [True, True, True, False, False]
    assert buffer.take() == [0, 1, 2]
    assert drops == [(3, "overflow"), (4, "overflow")]
    assert dropped(telemetry, "overflow") == 2
    stats = buffer.stats()
    assert (stats.accepted, stats.delivered, stats.dropped_total, stats.held) == (5, 3, 2, 0)


def test_raise_policy_refuses_without_taking(clock: FakeClock) -> None:
    buffer, telemetry, drops = make(clock, overflow=OverflowPolicy.RAISE)
    for item in range(3):
        buffer.put(item)
    with pytest.raises(BufferFullError, match="full"):
        buffer.put(99)
    assert buffer.stats().accepted == 3
    assert buffer.take() == [0, 1, 2]
    assert drops == []
    assert dropped(telemetry, "overflow") == 0


def test_restored_items_do_not_shield_older_ones_from_expiry(clock: FakeClock) -> None:
    buffer, telemetry, drops = make(clock, capacity=10, max_age=10)
    buffer.put("a")
    buffer.put("b")
    taken = buffer.take(1)
    clock.advance(8)
    buffer.restore(taken)  # delivery of "a" failed 8 s later
    clock.advance(3)  # "b" is 11 s old now
    assert buffer.take() == []
    assert drops == [("a", "expired"), ("b", "expired")]
    assert dropped(telemetry, "expired") == 2


def test_max_age_expiry(clock: FakeClock) -> None:
    buffer, telemetry, drops = make(clock, capacity=10, max_age=10)
    buffer.put("a")
    clock.advance(5)
    buffer.put("b")
    clock.advance(5.5)  # a is 10.5 s old, b 5.5 s
    assert buffer.take() == ["b"]
    assert drops == [("a", "expired")]
    assert dropped(telemetry, "expired") == 1
    assert buffer.stats().dropped["expired"] == 1


def test_restore_puts_items_back_in_front_in_order(clock: FakeClock) -> None:
    buffer, _, _ = make(clock, capacity=10)
    for item in "abcd":
        buffer.put(item)
    taken = buffer.take(2)
    buffer.put("e")
    buffer.restore(taken)  # delivery failed
    stats = buffer.stats()
    assert (stats.accepted, stats.delivered, stats.held) == (5, 0, 5)
    assert buffer.take() == ["a", "b", "c", "d", "e"]


def test_drain_for_shutdown(clock: FakeClock) -> None:
    buffer, telemetry, drops = make(clock, capacity=10)
    for item in range(4):
        buffer.put(item)
    assert buffer.drain_for_shutdown() == [0, 1, 2, 3]
    assert len(buffer) == 0
    assert drops == [(n, "shutdown") for n in range(4)]
    assert dropped(telemetry, "shutdown") == 4
    [event] = telemetry.events_of(EventsDropped)
    assert (event.reason, event.count, event.depth) == ("shutdown", 4, 0)


def test_a_failing_drop_hook_is_logged_and_the_other_drops_still_reported(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[int] = []

    def hook(item: int, reason: str) -> None:
        seen.append(item)
        if item == 0:
            raise RuntimeError("fallback path broken")

    buffer: EventBuffer[int] = EventBuffer(5, clock=clock, on_drop=hook,
                                           instrumentation=CapturedTelemetry(logs=False))
    for item in range(3):
        buffer.put(item)
    with caplog.at_level(logging.ERROR):
        buffer.drain_for_shutdown()
    assert seen == [0, 1, 2]
    assert "on_drop hook failed" in caplog.text


def _wait_for_blocked_putter(buffer: EventBuffer[Any]) -> None:
    # Spin (yielding the CPU, no fixed sleep) until the producer waits on the room condition.
    for _ in range(10_000_000):
        if buffer._room._waiters:  # type: ignore[attr-defined]
            return
        os.sched_yield()
    raise AssertionError("the producer never blocked")


def test_block_policy_waits_for_a_draining_thread(clock: FakeClock) -> None:
    buffer, telemetry, drops = make(clock, capacity=1, overflow=OverflowPolicy.BLOCK,
                                    block_timeout=30)
    buffer.put("first")
    result: list[bool] = []
    producer = threading.Thread(target=lambda: result.append(buffer.put("second")))
    producer.start()
    _wait_for_blocked_putter(buffer)
    drainer = threading.Thread(target=buffer.take)
    drainer.start()
    drainer.join(timeout=30)
    producer.join(timeout=30)
    assert result == [True]
    assert buffer.take() == ["second"]
    assert drops == []
    assert dropped(telemetry, "overflow") == 0


def test_block_policy_times_out(clock: FakeClock) -> None:
    buffer, _, _ = make(clock, capacity=1, overflow=OverflowPolicy.BLOCK, block_timeout=0.01)
    buffer.put("first")
    with pytest.raises(BufferFullError, match="stayed full"):
        buffer.put("second")
    assert buffer.stats().accepted == 1


def test_block_policy_wakes_when_shutdown_drains(clock: FakeClock) -> None:
    buffer, _, _ = make(clock, capacity=1, overflow=OverflowPolicy.BLOCK, block_timeout=30)
    buffer.put("first")
    producer = threading.Thread(target=buffer.put, args=("second",))
    producer.start()
    _wait_for_blocked_putter(buffer)
    assert buffer.drain_for_shutdown() == ["first"]
    producer.join(timeout=30)
    assert not producer.is_alive()
    assert buffer.take() == ["second"]


# -- property: accepted == delivered + dropped + held, whatever happens ----------------------

buffer_ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(0, 1000)),
        st.tuples(st.just("take"), st.none() | st.integers(0, 5)),
        st.tuples(st.just("restore"), st.none()),
        st.tuples(st.just("advance"), st.floats(0, 8, allow_nan=False)),
        st.tuples(st.just("shutdown"), st.none()),
    ),
    max_size=100,
)


@settings(max_examples=200, deadline=None)
@given(ops=buffer_ops, capacity=st.integers(1, 6),
       policy=st.sampled_from([OverflowPolicy.DROP_OLDEST, OverflowPolicy.DROP_NEWEST,
                               OverflowPolicy.RAISE]),
       max_age=st.none() | st.floats(1, 20))
def test_buffer_accounting_invariant(
    ops: list[tuple[str, Any]], capacity: int, policy: OverflowPolicy, max_age: float | None
) -> None:
    clock = FakeClock()
    buffer, telemetry, drops = make(clock, capacity=capacity, overflow=policy, max_age=max_age)
    delivered: list[Any] = []
    last_taken: list[Any] = []
    for op, arg in ops:
        if op == "put":
            try:
                buffer.put(arg)
            except BufferFullError:
                assert policy is OverflowPolicy.RAISE
        elif op == "take":
            last_taken = buffer.take(arg)
            delivered.extend(last_taken)
        elif op == "restore":
            buffer.restore(last_taken)
            del delivered[len(delivered) - len(last_taken):]
            last_taken = []
        elif op == "advance":
            clock.advance(arg)
        else:
            buffer.drain_for_shutdown()
        stats = buffer.stats()
        assert stats.accepted == stats.delivered + stats.dropped_total + stats.held
        assert stats.held == len(buffer)
        assert stats.delivered == len(delivered)
    stats = buffer.stats()
    assert len(drops) == stats.dropped_total
    for reason, count in stats.dropped.items():
        assert dropped(telemetry, reason) == count
