"""Guard, the retry decorator, on_retry callbacks, the compatibility names and the retry
budget."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from instrumented_clients import (
    CircuitBreaker,
    CircuitOpenError,
    Guard,
    JitterMode,
    RetryBudget,
    RetryPolicy,
    retry,
)
from instrumented_clients.compat import RetryConfig, is_transient_http_error, retry_async
from instrumented_clients.resilience import ErrorCategory
from instrumented_clients.resilience.events import (
    RetriesExhausted,
    RetryBudgetDenied,
    RetryScheduled,
)
from instrumented_clients.testing import CapturedTelemetry, FakeClock

LABELS = {"system": "custom", "client": "c", "operation": "op"}


def flaky(failures: int, error: Callable[[], BaseException] = lambda: ConnectionError("down")):
    """A function that fails ``failures`` times, then returns its call count."""
    calls = {"n": 0}

    def fn() -> int:
        calls["n"] += 1
        if calls["n"] <= failures:
            raise error()
        return calls["n"]

    fn.calls = calls  # type: ignore[attr-defined]
    return fn


def make_guard(telemetry: CapturedTelemetry, clock: FakeClock, **policy: object) -> Guard:
    options: dict[str, object] = {"max_attempts": 5, "jitter_mode": JitterMode.NONE}
    options.update(policy)
    return Guard(RetryPolicy(clock=clock, **options),  # type: ignore[arg-type]
                 instrumentation=telemetry, client="c", operation="op")


def outcome(telemetry: CapturedTelemetry, name: str) -> float | None:
    return telemetry.value("operation_duration_seconds_count", outcome=name, **LABELS)


# -- outcomes and metrics ------------------------------------------------------------------


def test_success_first_time(telemetry: CapturedTelemetry, clock: FakeClock) -> None:
    guard = make_guard(telemetry, clock)
    assert guard.call(lambda x, y=0: x + y, 2, y=3) == 5
    assert outcome(telemetry, "success") == 1
    assert outcome(telemetry, "success_after_retry") == 0


def test_success_after_retry_counts_one_operation(
    telemetry: CapturedTelemetry, clock: FakeClock
) -> None:
    guard = make_guard(telemetry, clock)
    fn = flaky(2)
    assert guard.call(fn) == 3
    assert outcome(telemetry, "success_after_retry") == 1
    assert outcome(telemetry, "success") == 0
    assert telemetry.value("retries_total", error_type="connection", **LABELS) == 2
    assert clock.sleeps == [1.0, 2.0]
    # the duration covers the backoff: 3 s of fake time
    assert telemetry.value("operation_duration_seconds_sum", outcome="success_after_retry",
                           **LABELS) == pytest.approx(3.0)


def test_exhausted_retries(telemetry: CapturedTelemetry, clock: FakeClock) -> None:
    guard = make_guard(telemetry, clock, max_attempts=3)
    errors = [ConnectionError(f"down {n}") for n in range(3)]
    it = iter(errors)

    def fail() -> None:
        raise next(it)

    with pytest.raises(ConnectionError) as info:
        guard.call(fail)
    assert info.value is errors[-1]
    assert outcome(telemetry, "failure_after_retry") == 1
    assert telemetry.value("retries_exhausted_total", **LABELS) == 1
    [exhausted] = telemetry.events_of(RetriesExhausted)
    assert exhausted.attempts == 3
    assert exhausted.error is errors[-1]


def test_permanent_failure_is_failure_not_exhaustion(
    telemetry: CapturedTelemetry, clock: FakeClock
) -> None:
    guard = make_guard(telemetry, clock)
    with pytest.raises(ValueError, match="bad"):
        guard.call(flaky(1, lambda: ValueError("bad")))
    assert outcome(telemetry, "failure") == 1
    assert telemetry.value("retries_exhausted_total", **LABELS) == 0
    assert telemetry.events_of(RetriesExhausted) == []


def test_async_guard(telemetry: CapturedTelemetry, clock: FakeClock) -> None:
    guard = make_guard(telemetry, clock)
    calls = 0

    async def fetch(value: int) -> int:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise TimeoutError("slow")
        return value

    assert asyncio.run(guard.acall(fetch, 7)) == 7
    assert calls == 3
    assert clock.sleeps == [1.0, 2.0]
    assert telemetry.value("retries_total", error_type="timeout", **LABELS) == 2


def test_cancelled_backoff_still_records_the_operation_and_ends_the_span(
    telemetry: CapturedTelemetry,
) -> None:
    class CancellingClock(FakeClock):
        async def asleep(self, seconds: float) -> None:
            raise asyncio.CancelledError

    guard = Guard(RetryPolicy(clock=CancellingClock()), instrumentation=telemetry,
                  client="c", operation="op")

    async def fail() -> None:
        raise ConnectionError("down")

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(guard.acall(fail))
    assert outcome(telemetry, "failure") == 1
    [span] = telemetry.spans()
    assert span.name == "op"
    assert span.attributes["error.type"] == "CancelledError"


def test_on_retry_callbacks_receive_each_retry(clock: FakeClock) -> None:
    seen: list[RetryScheduled] = []
    telemetry = CapturedTelemetry(logs=False)
    guard = make_guard(telemetry, clock, on_retry=(seen.append,))
    guard.call(flaky(2))
    assert [(e.attempt, e.delay, e.error_type) for e in seen] == [
        (1, 1.0, "connection"), (2, 2.0, "connection")
    ]
    assert all(e.max_attempts == 5 and e.target == "fn" for e in seen)


def test_single_on_retry_callback_is_accepted(clock: FakeClock) -> None:
    seen: list[int] = []
    policy = RetryPolicy(clock=clock, on_retry=lambda event: seen.append(event.attempt))
    policy.call(flaky(1))
    assert seen == [1]


def test_failing_on_retry_callback_is_logged_and_the_retry_goes_on(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: RetryScheduled) -> None:
        raise RuntimeError("callback bug")

    policy = RetryPolicy(clock=clock, on_retry=(broken,))
    with caplog.at_level(logging.ERROR, logger="instrumented_clients"):
        assert policy.call(flaky(2)) == 3
    assert "on_retry callback" in caplog.text


def test_failing_classifier_falls_back_to_the_default(
    telemetry: CapturedTelemetry, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(exc: BaseException) -> ErrorCategory:
        raise LookupError("classifier bug")

    guard = make_guard(telemetry, clock, classifier=broken)
    with caplog.at_level(logging.ERROR, logger="instrumented_clients"):
        assert guard.call(flaky(1)) == 2
    assert "classifier" in caplog.text
    assert telemetry.value("retries_total", error_type="connection", **LABELS) == 1


# -- the retry decorator -------------------------------------------------------------------


def test_retry_decorator_on_sync_function(telemetry: CapturedTelemetry, clock: FakeClock) -> None:
    calls = 0

    @retry(RetryPolicy(clock=clock, jitter_mode=JitterMode.NONE), instrumentation=telemetry,
           client="svc")
    def create_worker(name: str) -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("refused")
        return f"worker {name}"

    assert create_worker("a") == "worker a"
    assert create_worker.__name__ == "create_worker"
    assert clock.sleeps == [1.0, 2.0]
    assert telemetry.value("retries_total", system="custom", client="svc",
                           operation="create_worker", error_type="connection") == 2


def test_retry_decorator_on_async_function(telemetry: CapturedTelemetry, clock: FakeClock) -> None:
    calls = 0

    @retry(RetryPolicy(clock=clock), instrumentation=telemetry, client="svc", operation="fetch")
    async def fetch() -> str:
        nonlocal calls
        calls += 1
        if calls < 2:
            raise TimeoutError("slow")
        return "ok"

    assert asyncio.iscoroutinefunction(fetch)
    assert asyncio.run(fetch()) == "ok"
    assert calls == 2
    assert outcome_of(telemetry, "svc", "fetch", "success_after_retry") == 1


def outcome_of(telemetry: CapturedTelemetry, client: str, operation: str, name: str) -> float:
    value = telemetry.value("operation_duration_seconds_count", system="custom", client=client,
                            operation=operation, outcome=name)
    assert value is not None
    return value


def test_bare_retry_decorator_uses_the_default_policy() -> None:
    @retry
    def answer() -> int:
        return 42

    assert answer() == 42
    assert answer.guard.policy == RetryPolicy()  # type: ignore[attr-defined]


def test_retry_rejects_a_non_policy() -> None:
    with pytest.raises(TypeError, match="RetryPolicy"):
        retry(42)  # type: ignore[call-overload]


def test_retry_with_breaker_fails_fast_once_open(
    telemetry: CapturedTelemetry, clock: FakeClock
) -> None:
    breaker = CircuitBreaker(failure_threshold=2, recovery_timeout=30, clock=clock,
                             instrumentation=telemetry, name="c")
    guard = Guard(RetryPolicy(max_attempts=5, clock=clock), breaker=breaker,
                  instrumentation=telemetry, client="c", operation="op")
    fn = flaky(100)
    with pytest.raises(CircuitOpenError) as info:
        guard.call(fn)
    assert fn.calls["n"] == 2  # type: ignore[attr-defined]
    assert info.value.remaining == pytest.approx(30 - clock.sleeps[-1])
    assert outcome(telemetry, "rejected") == 1
    with pytest.raises(CircuitOpenError):
        guard.call(fn)
    assert fn.calls["n"] == 2  # type: ignore[attr-defined]  # no network touched


# -- compatibility names -------------------------------------------------------------------


def test_retry_config_defaults_and_conversion() -> None:
    config = RetryConfig()
    assert (config.max_attempts, config.initial_delay, config.max_delay) == (3, 1.0, 60.0)
    assert (config.exponential_base, config.jitter, config.jitter_factor) == (2.0, True, 0.1)
    policy = config.to_policy()
    assert policy.jitter == 0.1
    assert RetryConfig(jitter=False, jitter_factor=0.3).to_policy().jitter == 0.0
    assert list(RetryConfig(max_attempts=7, max_delay=30).to_policy().delays()) == [
        1, 2, 4, 8, 16, 30
    ]


def test_retry_config_exception_filter_and_three_argument_on_retry() -> None:
    seen: list[tuple[str, int, float]] = []

    def send_to_metrics(exc: Exception, attempt: int, delay: float) -> None:
        seen.append((type(exc).__name__, attempt, delay))

    config = RetryConfig(max_attempts=4, initial_delay=0, jitter=False,
                         exception_filter=is_transient_http_error, on_retry=send_to_metrics)

    class HTTPError(Exception):
        def __init__(self, status_code: int) -> None:
            super().__init__(status_code)
            self.status_code = status_code

    calls = 0

    @retry(config)
    def api_call() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise HTTPError(502)
        if calls == 2:
            raise HTTPError(503)
        return "ok"

    assert api_call() == "ok"
    assert seen == [("HTTPError", 1, 0.0), ("HTTPError", 2, 0.0)]

    @retry(config)
    def not_found() -> None:
        raise HTTPError(404)

    with pytest.raises(HTTPError):
        not_found()
    assert len(seen) == 2  # 404 is permanent: no retry, no callback


def test_retry_config_two_argument_on_retry() -> None:
    seen: list[int] = []
    config = RetryConfig(max_attempts=2, initial_delay=0,
                         on_retry=lambda exc, attempt: seen.append(attempt))
    retry(config)(flaky(1))()
    assert seen == [1]


def test_retry_async_alias() -> None:
    calls = 0

    @retry_async(RetryConfig(max_attempts=3, initial_delay=0))
    async def consume() -> int:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("broker gone")
        return calls

    assert asyncio.run(consume()) == 3


@pytest.mark.parametrize(
    ("error", "expected"),
    [(502, True), (503, True), (504, True), (500, False), (400, False), (404, False),
     (429, False), (200, False)],
)
def test_is_transient_http_error_status_codes(error: int, expected: bool) -> None:
    assert is_transient_http_error(error) is expected


class _Response:
    def __init__(self, status: int) -> None:
        self.status_code = status


class _WithResponse(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.response = _Response(status)


class _WithStatus(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class ConnectTimeout(Exception):  # named as requests'/httpx's class
    pass


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (_WithResponse(502), True),
        (_WithResponse(504), True),
        (_WithResponse(404), False),
        (_WithStatus(503), True),
        (_WithStatus(401), False),
        (ConnectTimeout("connect timed out"), True),
        (ConnectionError("reset"), True),
        (TimeoutError("read timed out"), True),
        (ValueError("bad json"), False),
    ],
)
def test_is_transient_http_error_exceptions(error: Exception, expected: bool) -> None:
    assert is_transient_http_error(error) is expected


def test_is_transient_http_error_rejects_bool() -> None:
    with pytest.raises(TypeError, match="True"):
        is_transient_http_error(True)


# -- retry budget --------------------------------------------------------------------------


def test_budget_allows_floor_plus_ratio(clock: FakeClock) -> None:
    budget = RetryBudget(ratio=0.5, min_per_second=0.2, window=10, clock=clock)
    for _ in range(10):
        budget.record_call()
    allowed = sum(budget.try_acquire() for _ in range(20))
    assert allowed == 2 + 5  # 0.2/s × 10 s + 0.5 × 10 calls
    clock.advance(10)  # the window slides past every deposit and withdrawal
    assert sum(budget.try_acquire() for _ in range(20)) == 2


def test_budget_validation() -> None:
    with pytest.raises(ValueError, match="ratio"):
        RetryBudget(ratio=-1)
    with pytest.raises(ValueError, match="min_per_second"):
        RetryBudget(min_per_second=-1)
    with pytest.raises(ValueError, match="window"):
        RetryBudget(window=0.5)


def test_budget_denial_fails_at_once_and_is_counted(
    telemetry: CapturedTelemetry, clock: FakeClock
) -> None:
    budget = RetryBudget(ratio=0.0, min_per_second=0.1, window=10, clock=clock)  # 1 retry
    guard = Guard(RetryPolicy(max_attempts=5, clock=clock), budget=budget,
                  instrumentation=telemetry, client="c", operation="op")
    first = flaky(100)
    with pytest.raises(ConnectionError):
        guard.call(first)
    assert first.calls["n"] == 2  # type: ignore[attr-defined]  # one retry, then denied
    second = flaky(100)
    with pytest.raises(ConnectionError) as info:
        guard.call(second)
    assert second.calls["n"] == 1  # type: ignore[attr-defined]
    assert isinstance(info.value, ConnectionError)
    assert len(clock.sleeps) == 1
    assert telemetry.value("retry_budget_denied_total", system="custom", client="c") == 2
    assert len(telemetry.events_of(RetryBudgetDenied)) == 2
    assert outcome(telemetry, "failure") == 1
    assert outcome(telemetry, "failure_after_retry") == 1


def test_target_names_the_operation_in_retry_events_instead_of_an_internal_function(
    telemetry: CapturedTelemetry, clock: FakeClock
) -> None:
    guard = Guard(RetryPolicy(max_attempts=2, clock=clock), instrumentation=telemetry,
                  client="c", operation="op", target="redis/cache GET")
    with pytest.raises(ConnectionError):
        guard.call(flaky(5))
    [scheduled] = telemetry.events_of(RetryScheduled)
    [exhausted] = telemetry.events_of(RetriesExhausted)
    assert scheduled.target == exhausted.target == "redis/cache GET"
    untargeted = make_guard(telemetry, clock, max_attempts=2)
    with pytest.raises(ConnectionError):
        untargeted.call(flaky(5))
    assert telemetry.events_of(RetryScheduled)[-1].target == "fn"
