"""CircuitBreaker: threshold, cool-down, half-open probes, rate mode, thread safety."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from instrumented_clients import BreakerState, CircuitBreaker, CircuitOpenError
from instrumented_clients.resilience.events import BreakerRejected, BreakerStateChanged
from instrumented_clients.testing import CapturedTelemetry, FakeClock


class Recorder:
    """A minimal instrumentation that keeps the events (the breaker only calls emit)."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def emit(self, event: Any) -> None:
        self.events.append(event)

    def transitions(self) -> list[tuple[str | None, str]]:
        return [(e.from_state, e.to_state) for e in self.events
                if isinstance(e, BreakerStateChanged)]


def make(clock: FakeClock, **kwargs: Any) -> tuple[CircuitBreaker, Recorder]:
    recorder = Recorder()
    breaker = CircuitBreaker(clock=clock, instrumentation=recorder, name="svc", **kwargs)
    return breaker, recorder


def fail(breaker: CircuitBreaker, times: int = 1, error: Exception | None = None) -> None:
    for _ in range(times):
        breaker.before_call()
        breaker.on_failure(error or ConnectionError("down"))


def succeed(breaker: CircuitBreaker) -> None:
    breaker.before_call()
    breaker.on_success()


# -- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"recovery_timeout": -1}, "recovery_timeout"),
        ({"half_open_max_calls": 0}, "half_open_max_calls"),
        ({"failure_rate_threshold": 0}, "failure_rate_threshold"),
        ({"failure_rate_threshold": 1.5}, "failure_rate_threshold"),
        ({"window_size": 0}, "window_size"),
        ({"minimum_calls": 0}, "minimum_calls"),
    ],
)
def test_invalid_settings_are_named(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        CircuitBreaker(**kwargs)


def test_defaults_are_five_failures_and_thirty_seconds() -> None:
    breaker = CircuitBreaker()
    assert (breaker.failure_threshold, breaker.recovery_timeout) == (5, 30.0)
    assert breaker.half_open_max_calls == 1
    assert breaker.state is BreakerState.CLOSED


# -- consecutive failures ------------------------------------------------------------------


def test_opens_after_threshold_consecutive_failures(clock: FakeClock) -> None:
    breaker, recorder = make(clock, failure_threshold=3)
    fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.consecutive_failures == 2
    fail(breaker)
    assert breaker.state is BreakerState.OPEN
    assert recorder.transitions() == [(None, "closed"), ("closed", "open")]


def test_a_success_resets_the_consecutive_count(clock: FakeClock) -> None:
    breaker, _ = make(clock, failure_threshold=3)
    fail(breaker, 2)
    succeed(breaker)
    fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED


def test_caller_errors_do_not_count_by_default(clock: FakeClock) -> None:
    breaker, _ = make(clock, failure_threshold=2)
    for error in (ValueError("bad input"), KeyError("k"), PermissionError(13, "denied")):
        breaker.before_call()
        assert breaker.on_failure(error) is False
    assert breaker.consecutive_failures == 0
    assert breaker.state is BreakerState.CLOSED


def test_failure_on_types(clock: FakeClock) -> None:
    breaker, _ = make(clock, failure_threshold=2, failure_on=(ValueError,))
    fail(breaker, 5, ConnectionError("not counted now"))
    assert breaker.state is BreakerState.CLOSED
    fail(breaker, 2, ValueError("counted"))
    assert breaker.state is BreakerState.OPEN


def test_failure_on_predicate(clock: FakeClock) -> None:
    breaker, _ = make(clock, failure_threshold=1, failure_on=lambda e: "fatal" in str(e))
    fail(breaker, 3, RuntimeError("minor"))
    assert breaker.state is BreakerState.CLOSED
    fail(breaker, 1, RuntimeError("fatal"))
    assert breaker.state is BreakerState.OPEN


# -- open, cool-down, half-open ------------------------------------------------------------


def test_open_breaker_fails_fast_with_remaining_cool_down(clock: FakeClock) -> None:
    breaker, recorder = make(clock, failure_threshold=1, recovery_timeout=30)
    fail(breaker)
    clock.advance(12)
    assert breaker.remaining() == pytest.approx(18)
    called = []
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(lambda: called.append(1))
    assert called == []
    assert info.value.remaining == pytest.approx(18)
    assert info.value.name == "svc"
    assert "18.0s" in str(info.value)
    [rejected] = [e for e in recorder.events if isinstance(e, BreakerRejected)]
    assert rejected.remaining == pytest.approx(18)


def test_cool_down_then_successful_probe_closes(clock: FakeClock) -> None:
    breaker, recorder = make(clock, failure_threshold=1, recovery_timeout=30)
    fail(breaker)
    clock.advance(29.9)
    assert breaker.state is BreakerState.OPEN
    clock.advance(0.1)
    assert breaker.state is BreakerState.HALF_OPEN  # reads as half-open once the time is up
    assert breaker.remaining() == 0
    assert breaker.call(lambda: "probe") == "probe"
    assert breaker.state is BreakerState.CLOSED
    assert recorder.transitions()[1:] == [
        ("closed", "open"), ("open", "half_open"), ("half_open", "closed")
    ]


def test_failed_probe_reopens_with_a_fresh_cool_down(clock: FakeClock) -> None:
    breaker, _ = make(clock, failure_threshold=1, recovery_timeout=10)
    fail(breaker)
    clock.advance(10)
    fail(breaker)
    assert breaker.state is BreakerState.OPEN
    assert breaker.remaining() == pytest.approx(10)


def test_half_open_admits_a_bounded_number_of_probes(clock: FakeClock) -> None:
    breaker, _ = make(clock, failure_threshold=1, recovery_timeout=5, half_open_max_calls=2)
    fail(breaker)
    clock.advance(5)
    breaker.before_call()
    breaker.before_call()
    with pytest.raises(CircuitOpenError) as info:
        breaker.before_call()
    assert info.value.remaining == 0.0
    breaker.on_success()
    assert breaker.state is BreakerState.HALF_OPEN  # one of two probes back
    breaker.on_success()
    assert breaker.state is BreakerState.CLOSED


def test_a_probe_answered_with_a_caller_error_counts_as_alive(clock: FakeClock) -> None:
    breaker, _ = make(clock, failure_threshold=1, recovery_timeout=5)
    fail(breaker)
    clock.advance(5)
    breaker.before_call()
    breaker.on_failure(ValueError("bad request"))
    assert breaker.state is BreakerState.CLOSED


def test_an_interrupted_probe_reopens_instead_of_wedging(clock: FakeClock) -> None:
    breaker, _ = make(clock, failure_threshold=1, recovery_timeout=5)
    fail(breaker)
    clock.advance(5)
    breaker.before_call()
    assert breaker.on_failure(asyncio.CancelledError()) is False
    assert breaker.state is BreakerState.OPEN
    clock.advance(5)
    succeed(breaker)  # the next period admits a probe again
    assert breaker.state is BreakerState.CLOSED


def test_interruptions_never_count_while_closed(clock: FakeClock) -> None:
    breaker, _ = make(clock, failure_threshold=1, failure_on=lambda e: True)
    breaker.before_call()
    breaker.on_failure(KeyboardInterrupt())
    assert breaker.state is BreakerState.CLOSED


def test_reset_closes(clock: FakeClock) -> None:
    breaker, _ = make(clock, failure_threshold=1)
    fail(breaker)
    breaker.reset()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.consecutive_failures == 0


# -- failure-rate mode ---------------------------------------------------------------------


def test_failure_rate_mode_opens_at_the_rate_with_minimum_calls(clock: FakeClock) -> None:
    breaker, _ = make(clock, failure_threshold=100, failure_rate_threshold=0.5,
                      window_size=10, minimum_calls=6)
    for _ in range(2):
        succeed(breaker)
        fail(breaker)
    succeed(breaker)
    assert breaker.state is BreakerState.CLOSED  # 2/5 failures, and below minimum_calls
    fail(breaker)
    assert breaker.state is BreakerState.OPEN  # 3/6 = 50 %


def test_failure_rate_mode_window_slides(clock: FakeClock) -> None:
    breaker, _ = make(clock, failure_threshold=100, failure_rate_threshold=0.5,
                      window_size=4, minimum_calls=4)
    fail(breaker)
    for _ in range(3):
        succeed(breaker)
    fail(breaker)  # window: S S S F -> 25 %; the first failure slid out
    assert breaker.state is BreakerState.CLOSED
    fail(breaker)  # S S F F -> 50 %
    assert breaker.state is BreakerState.OPEN


# -- as a decorator, sync and async --------------------------------------------------------


def test_decorator_sync_and_async(clock: FakeClock) -> None:
    breaker, _ = make(clock, failure_threshold=2)

    @breaker
    def sync_op(fail_it: bool) -> str:
        if fail_it:
            raise ConnectionError("down")
        return "ok"

    @breaker
    async def async_op() -> str:
        return "async ok"

    assert sync_op(False) == "ok"
    assert asyncio.run(async_op()) == "async ok"
    for _ in range(2):
        with pytest.raises(ConnectionError):
            sync_op(True)
    with pytest.raises(CircuitOpenError):
        sync_op(False)
    with pytest.raises(CircuitOpenError):
        asyncio.run(async_op())


def test_acall(clock: FakeClock) -> None:
    breaker, _ = make(clock, failure_threshold=1)

    async def down() -> None:
        raise TimeoutError("slow")

    with pytest.raises(TimeoutError):
        asyncio.run(breaker.acall(down))
    assert breaker.state is BreakerState.OPEN


# -- metrics -------------------------------------------------------------------------------


def test_state_gauge_transitions_and_rejections_in_metrics(clock: FakeClock) -> None:
    telemetry = CapturedTelemetry(logs=False)
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=5, clock=clock,
                             instrumentation=telemetry, name="svc", system="redis")
    labels = {"system": "redis", "client": "svc"}
    assert telemetry.value("circuit_breaker_state", state="closed", **labels) == 1
    assert telemetry.value("circuit_breaker_rejections_total", **labels) == 0
    fail(breaker)
    assert telemetry.value("circuit_breaker_state", state="open", **labels) == 1
    assert telemetry.value("circuit_breaker_state", state="closed", **labels) == 0
    with pytest.raises(CircuitOpenError):
        breaker.before_call()
    assert telemetry.value("circuit_breaker_rejections_total", **labels) == 1
    clock.advance(5)
    succeed(breaker)
    for from_state, to_state in (("closed", "open"), ("open", "half_open"),
                                 ("half_open", "closed")):
        assert telemetry.value("circuit_breaker_transitions_total", from_state=from_state,
                               to_state=to_state, **labels) == 1


# -- thread safety: real threads, started together, no sleeps ------------------------------


def run_together(threads: int, work: Any) -> None:
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def body() -> None:
        try:
            barrier.wait(timeout=10)
            work()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=body) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert not errors, errors


def test_concurrent_failures_are_all_counted(clock: FakeClock) -> None:
    breaker, _ = make(clock, failure_threshold=10**9)

    def work() -> None:
        for _ in range(2000):
            breaker.on_failure(ConnectionError("down"))

    run_together(8, work)
    assert breaker.consecutive_failures == 16000


def test_concurrent_probes_never_exceed_the_half_open_limit(clock: FakeClock) -> None:
    for limit in (1, 3):
        breaker, recorder = make(clock, failure_threshold=1, recovery_timeout=1,
                                 half_open_max_calls=limit)
        fail(breaker)
        clock.advance(1)
        admitted = []

        def work(breaker: CircuitBreaker = breaker, admitted: list[int] = admitted) -> None:
            for _ in range(200):
                try:
                    breaker.before_call()
                except CircuitOpenError:
                    continue
                admitted.append(1)

        run_together(8, work)
        assert len(admitted) == limit
        assert recorder.transitions().count(("open", "half_open")) == 1


def test_concurrent_trip_emits_exactly_one_transition(clock: FakeClock) -> None:
    breaker, recorder = make(clock, failure_threshold=50)

    def work() -> None:
        for _ in range(100):
            breaker.on_failure(ConnectionError("down"))

    run_together(8, work)
    assert recorder.transitions().count(("closed", "open")) == 1


# -- property: never more than half_open_max_calls probes per half-open period --------------

# Weighted towards starting calls and failing them, so that random runs do reach the breaker's
# half-open state often (a uniform mix rarely trips it at all).
operations = st.lists(
    st.one_of(
        st.sampled_from([("start",), ("start",), ("start",), ("fail",), ("fail",), ("ok",),
                         ("ignored",)]),
        st.tuples(st.just("advance"), st.sampled_from([0.5, 5.0, 10.0, 25.0])),
    ),
    max_size=150,
)


@settings(max_examples=300, deadline=None)
@given(ops=operations, limit=st.integers(1, 4), threshold=st.integers(1, 4),
       rate=st.none() | st.floats(0.1, 1.0))
def test_half_open_never_admits_more_than_the_limit(
    ops: list[tuple[Any, ...]], limit: int, threshold: int, rate: float | None
) -> None:
    clock = FakeClock()
    breaker, recorder = make(clock, failure_threshold=threshold, recovery_timeout=10,
                             half_open_max_calls=limit, failure_rate_threshold=rate,
                             window_size=5, minimum_calls=2)
    in_flight: list[int] = []
    probes_per_period: dict[int, int] = {}
    for op in ops:
        if op[0] == "start":
            was_open = breaker._state is BreakerState.OPEN and breaker.remaining() > 0
            try:
                breaker.before_call()
            except CircuitOpenError:
                continue
            assert not was_open, "an open breaker admitted a call during its cool-down"
            if breaker._state is BreakerState.HALF_OPEN:
                period = recorder.transitions().count(("open", "half_open"))
                probes_per_period[period] = probes_per_period.get(period, 0) + 1
                assert probes_per_period[period] <= limit
            in_flight.append(1)
        elif op[0] == "advance":
            clock.advance(op[1])
        elif in_flight:
            in_flight.pop()
            if op[0] == "ok":
                breaker.on_success()
            elif op[0] == "fail":
                breaker.on_failure(ConnectionError("down"))
            else:
                breaker.on_failure(ValueError("caller's fault"))
        # The flag the success path reads instead of calling the breaker: a success changes
        # nothing exactly when it is set.
        assert breaker.quiet == (breaker._state is BreakerState.CLOSED and rate is None
                                 and breaker.consecutive_failures == 0)
    for from_state, to_state in recorder.transitions()[1:]:
        assert (from_state, to_state) in {
            ("closed", "open"), ("open", "half_open"), ("half_open", "open"),
            ("half_open", "closed"),
        }
