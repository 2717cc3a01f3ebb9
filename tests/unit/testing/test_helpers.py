"""The public test helpers themselves: FakeClock and wait_until."""

from __future__ import annotations

import asyncio

import pytest

from instrumented_clients.resilience import Clock
from instrumented_clients.testing import FakeClock, wait_until


def test_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock(start=50.0)
    assert isinstance(clock, Clock)
    assert clock.monotonic() == 50.0
    clock.advance(2.5)
    clock.sleep(1.5)
    asyncio.run(clock.asleep(3.0))
    assert clock.monotonic() == 57.0
    assert clock.sleeps == [1.5, 3.0]  # advance() is not a sleep


def test_fake_clock_refuses_to_go_backwards() -> None:
    clock = FakeClock()
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="sleep"):
        clock.sleep(-0.1)


def test_wait_until_returns_the_truthy_value() -> None:
    values = iter([0, "", "ready"])
    assert wait_until(lambda: next(values), timeout=5, interval=0) == "ready"


def test_wait_until_times_out_with_the_message_and_last_value() -> None:
    with pytest.raises(TimeoutError) as info:
        wait_until(lambda: 0, timeout=0, message="queue drained")
    assert str(info.value) == "condition not met within 0s: queue drained (last value 0)"
    with pytest.raises(TimeoutError, match="after 3 tries"):
        wait_until(lambda: None, timeout=0, message=lambda: "after 3 tries")
