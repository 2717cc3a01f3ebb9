"""RetryPolicy: validation, the default schedules, jitter bounds, the retry decision."""

from __future__ import annotations

import math
import random
import ssl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from instrumented_clients import CircuitOpenError, JitterMode, RetryPolicy
from instrumented_clients.resilience import ErrorCategory
from instrumented_clients.testing import CapturedTelemetry, FakeClock

# -- validation: the message names the field and the value -----------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "fragments"),
    [
        ({"max_attempts": 0}, ValueError, ("max_attempts", "0")),
        ({"max_attempts": -3}, ValueError, ("max_attempts", "-3")),
        ({"max_attempts": 2.5}, TypeError, ("max_attempts", "2.5")),
        ({"max_attempts": True}, TypeError, ("max_attempts", "True")),
        ({"initial_delay": -1}, ValueError, ("initial_delay", "-1")),
        ({"initial_delay": "1"}, ValueError, ("initial_delay", "'1'")),
        ({"initial_delay": math.nan}, ValueError, ("initial_delay", "nan")),
        ({"max_delay": -0.5}, ValueError, ("max_delay", "-0.5")),
        ({"exponential_base": 0.5}, ValueError, ("exponential_base", "0.5")),
        ({"exponential_base": -2}, ValueError, ("exponential_base", "-2")),
        ({"jitter": 1.5}, ValueError, ("jitter", "1.5")),
        ({"jitter": -0.1}, ValueError, ("jitter", "-0.1")),
        ({"jitter": 5, "jitter_mode": "proportional"}, ValueError, ("jitter", "5")),
        ({"jitter_mode": "wobbly"}, ValueError, ("jitter_mode", "'wobbly'")),
        ({"deadline": 0}, ValueError, ("deadline", "0")),
        ({"deadline": -5}, ValueError, ("deadline", "-5")),
        ({"deadline": math.nan}, ValueError, ("deadline", "nan")),
        ({"retry_on": "ConnectionError"}, TypeError, ("retry_on", "'ConnectionError'")),
        ({"retry_on": (ValueError, 3)}, TypeError, ("retry_on", "3")),
        ({"retry_on": int}, TypeError, ("retry_on", "int")),
        ({"classifier": 42}, TypeError, ("classifier", "42")),
        ({"on_retry": (print, 7)}, TypeError, ("on_retry", "7")),
    ],
)
def test_invalid_policy_names_field_and_value(
    kwargs: dict[str, object], error: type[Exception], fragments: tuple[str, ...]
) -> None:
    with pytest.raises(error) as info:
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
    for fragment in fragments:
        assert fragment in str(info.value)


def test_the_defaults() -> None:
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.initial_delay, policy.max_delay) == (3, 1.0, 60.0)
    assert (policy.exponential_base, policy.jitter) == (2.0, 0.1)
    assert policy.jitter_mode is JitterMode.PROPORTIONAL
    assert policy.deadline is None


def test_jitter_mode_given_as_string_becomes_the_enum() -> None:
    assert RetryPolicy(jitter_mode="full").jitter_mode is JitterMode.FULL  # type: ignore[arg-type]


def test_replace_validates_again() -> None:
    policy = RetryPolicy()
    assert policy.replace(max_attempts=5).max_attempts == 5
    with pytest.raises(ValueError, match="max_attempts"):
        policy.replace(max_attempts=0)


# -- the default schedules, exactly -------------------------------------------------------------


@pytest.mark.parametrize(
    ("initial", "cap", "attempts", "expected"),
    [
        (1, 30, 7, [1, 2, 4, 8, 16, 30]),
        (0.5, 5, 4, [0.5, 1.0, 2.0]),
        (1, 60, 11, [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]),
    ],
)
def test_schedules(initial: float, cap: float, attempts: int, expected: list[float]) -> None:
    policy = RetryPolicy(initial_delay=initial, max_delay=cap, max_attempts=attempts)
    assert list(policy.delays()) == expected


def test_the_loop_waits_exactly_the_schedule_without_jitter() -> None:
    clock = FakeClock()
    policy = RetryPolicy(initial_delay=1, max_delay=30, max_attempts=7,
                         jitter_mode=JitterMode.NONE, clock=clock)
    with pytest.raises(ConnectionError):
        policy.call(_always(ConnectionError("down")))
    assert clock.sleeps == [1, 2, 4, 8, 16, 30]


def test_one_attempt_never_waits() -> None:
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=1, clock=clock)
    assert list(policy.delays()) == []
    with pytest.raises(ConnectionError):
        policy.call(_always(ConnectionError("down")))
    assert clock.sleeps == []


def test_base_delay_survives_huge_retry_numbers() -> None:
    policy = RetryPolicy(initial_delay=0.5, max_delay=10)
    assert policy.base_delay(5000) == 10.0
    with pytest.raises(ValueError, match="retry_number"):
        policy.base_delay(0)


# -- jitter: every mode within its bounds, and within [0, max_delay] -------------------------

policies = st.builds(
    RetryPolicy,
    max_attempts=st.integers(1, 20),
    initial_delay=st.floats(0, 100, allow_nan=False),
    max_delay=st.floats(0, 300, allow_nan=False),
    exponential_base=st.floats(1, 10, allow_nan=False),
    jitter=st.floats(0, 1, allow_nan=False),
    jitter_mode=st.sampled_from(list(JitterMode)),
)


@given(policy=policies, retry_number=st.integers(1, 80),
       previous=st.none() | st.floats(0, 1000, allow_nan=False),
       rng=st.randoms(use_true_random=False))
def test_backoff_within_zero_and_cap_and_mode_bounds(
    policy: RetryPolicy, retry_number: int, previous: float | None, rng: random.Random
) -> None:
    policy = policy.replace(rng=rng)
    delay = policy.backoff(retry_number, previous)
    base = policy.base_delay(retry_number)
    cap = policy.max_delay
    assert 0.0 <= delay <= cap
    tolerance = 1e-9 * max(1.0, base, cap)
    mode = policy.jitter_mode
    if mode is JitterMode.NONE:
        low, high = base, base
    elif mode is JitterMode.PROPORTIONAL:
        low, high = base * (1 - policy.jitter), base * (1 + policy.jitter)
    elif mode is JitterMode.FULL:
        low, high = 0.0, base
    elif mode is JitterMode.EQUAL:
        low, high = base / 2, base
    else:
        low = policy.initial_delay
        high = max(low, (previous if previous is not None else low) * 3)
    assert min(low, cap) - tolerance <= delay <= min(high, cap) + tolerance


def test_proportional_jitter_is_ten_percent_by_default() -> None:
    policy = RetryPolicy(rng=random.Random(7))
    samples = [policy.backoff(2) for _ in range(2000)]
    assert min(samples) >= 1.8
    assert max(samples) <= 2.2
    assert max(samples) - min(samples) > 0.3  # it does vary


def test_a_fixed_rng_gives_reproducible_delays() -> None:
    first = [RetryPolicy(rng=random.Random(3)).backoff(n) for n in range(1, 6)]
    second = [RetryPolicy(rng=random.Random(3)).backoff(n) for n in range(1, 6)]
    assert first == second


# -- deadline ------------------------------------------------------------------------------


def test_deadline_stops_retrying_before_a_wait_would_cross_it() -> None:
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=10, initial_delay=1, jitter_mode=JitterMode.NONE,
                         deadline=5.0, clock=clock)
    calls = []

    def failing() -> None:
        calls.append(clock.monotonic())
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        policy.call(failing)
    # waits 1 and 2 fit (t=3); the next wait of 4 would end at 7 > 5.
    assert clock.sleeps == [1, 2]
    assert len(calls) == 3


def test_deadline_counts_time_spent_in_attempts() -> None:
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=10, initial_delay=1, jitter_mode=JitterMode.NONE,
                         deadline=5.0, clock=clock)

    def slow_failure() -> None:
        clock.advance(4.5)
        raise TimeoutError("slow")

    with pytest.raises(TimeoutError):
        policy.call(slow_failure)
    assert clock.sleeps == []


# -- the retry decision: retry_on and default classification ---------------------------------


def _always(error: BaseException):  # type: ignore[no-untyped-def]
    def fail() -> None:
        raise error

    return fail


def _attempts(policy: RetryPolicy, error: BaseException) -> tuple[int, BaseException]:
    calls = 0

    def fail() -> None:
        nonlocal calls
        calls += 1
        raise error

    with pytest.raises(type(error)) as info:
        policy.call(fail)
    return calls, info.value


@pytest.mark.parametrize(
    "error",
    [ConnectionError("reset"), ConnectionRefusedError(111, "refused"), TimeoutError("slow"),
     OSError(113, "no route to host"), BrokenPipeError(32, "broken pipe"), EOFError("eof")],
)
def test_transient_errors_are_retried_and_the_last_raised_unchanged(error: Exception) -> None:
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=3, clock=clock)
    errors = [type(error)(*error.args) for _ in range(3)]
    calls = 0

    def fail() -> None:
        nonlocal calls
        calls += 1
        raise errors[calls - 1]

    with pytest.raises(type(error)) as info:
        policy.call(fail)
    assert calls == 3
    assert info.value is errors[-1]
    assert len(clock.sleeps) == 2


@pytest.mark.parametrize(
    "error",
    [
        FileNotFoundError(2, "no such file"),
        PermissionError(13, "denied"),
        ssl.SSLCertVerificationError(1, "certificate verify failed"),
        ValueError("bad"),
        TypeError("wrong"),
        KeyError("missing"),
        IndexError("out of range"),
        AttributeError("nope"),
        NotImplementedError(),
        RuntimeError("unknown"),
    ],
)
def test_permanent_errors_raise_at_once_unchanged(error: Exception) -> None:
    clock = FakeClock()
    calls, raised = _attempts(RetryPolicy(max_attempts=5, clock=clock), error)
    assert calls == 1
    assert raised is error
    assert clock.sleeps == []


def test_base_exceptions_are_never_retried() -> None:
    clock = FakeClock()
    calls, raised = _attempts(RetryPolicy(max_attempts=5, clock=clock), KeyboardInterrupt())
    assert calls == 1
    assert isinstance(raised, KeyboardInterrupt)


def test_circuit_open_error_is_never_retried_even_when_retry_on_matches() -> None:
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=5, retry_on=Exception, clock=clock)
    calls, raised = _attempts(policy, CircuitOpenError("x", 3.0))
    assert calls == 1
    assert isinstance(raised, CircuitOpenError)


def test_retry_on_exception_types() -> None:
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=4, retry_on=(ValueError, KeyError), clock=clock)
    assert _attempts(policy, ValueError("retry me"))[0] == 4
    assert _attempts(policy, KeyError("and me"))[0] == 4
    # retry_on replaces the default: a connection error is now permanent.
    assert _attempts(policy, ConnectionError("not listed"))[0] == 1
    single = RetryPolicy(max_attempts=2, retry_on=LookupError, clock=clock)
    assert _attempts(single, IndexError("subclass"))[0] == 2


def test_retry_on_predicate() -> None:
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=3, retry_on=lambda exc: "again" in str(exc), clock=clock)
    assert _attempts(policy, RuntimeError("try again"))[0] == 3
    assert _attempts(policy, RuntimeError("give up"))[0] == 1


def test_custom_classifier_decides_by_default_and_names_the_error_type() -> None:
    clock = FakeClock()
    telemetry = CapturedTelemetry(logs=False)

    class Busy(Exception):
        pass

    def classify(exc: BaseException) -> ErrorCategory:
        return ErrorCategory.SERVER_BUSY if isinstance(exc, Busy) else ErrorCategory.PROGRAMMING

    policy = RetryPolicy(max_attempts=3, classifier=classify, clock=clock)
    from instrumented_clients import Guard

    guard = Guard(policy, instrumentation=telemetry, client="c", operation="op")
    with pytest.raises(Busy):
        guard.call(_always(Busy("busy")))
    assert telemetry.value("retries_total", system="custom", client="c", operation="op",
                           error_type="server_busy") == 2
    with pytest.raises(ConnectionError):  # the classifier said programming: no retry
        guard.call(_always(ConnectionError("down")))
    assert telemetry.value("operation_duration_seconds_count",
                           system="custom", client="c", operation="op",
                           outcome="failure") == 1


def test_should_retry_with_explicit_category() -> None:
    policy = RetryPolicy()
    assert policy.should_retry(ValueError(), ErrorCategory.CONNECTION)
    assert not policy.should_retry(ConnectionError(), ErrorCategory.AUTH)
