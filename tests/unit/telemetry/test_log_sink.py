"""LoggingSink: the in-house helpers' retry line, structured fields, rate limiting, no secrets."""

from __future__ import annotations

import logging

import pytest

from instrumented_clients import Guard, JitterMode, RetryPolicy, Telemetry
from instrumented_clients.resilience.events import (
    BreakerStateChanged,
    ConnectionStateChanged,
    EventsDropped,
    RetriesExhausted,
    RetryScheduled,
)
from instrumented_clients.telemetry import LoggingSink, RateLimiter
from instrumented_clients.testing import FakeClock

LOGGER = "test.instrumented_clients.logs"


@pytest.fixture
def logger() -> logging.Logger:
    return logging.getLogger(LOGGER)


def retry_event(error: BaseException, *, client: str = "workers", attempt: int = 2,
                error_type: str = "connection", delay: float = 2.1) -> RetryScheduled:
    return RetryScheduled("custom", client, "create", attempt, 5, delay, error_type, error,
                          "create_worker")


def test_retry_line_has_the_documented_form(
    logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    sink = LoggingSink(logger, clock=FakeClock())
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        sink.emit(retry_event(ConnectionError("connection refused")))
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "Attempt 2/5 failed for create_worker with ConnectionError: connection refused. "
        "Retrying in 2.1s..."
    )
    assert record.client == "workers"  # type: ignore[attr-defined]
    assert record.attempt == 2  # type: ignore[attr-defined]
    assert record.error_type == "connection"  # type: ignore[attr-defined]
    assert record.delay == 2.1  # type: ignore[attr-defined]
    assert record.suppressed == 0  # type: ignore[attr-defined]


def test_guard_logs_the_retry_line_with_the_function_name(
    logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    telemetry = Telemetry(registry=None, metrics=False, tracing=False, logger=logger)
    guard = Guard(RetryPolicy(max_attempts=5, clock=clock, jitter_mode=JitterMode.NONE),
                  instrumentation=telemetry)
    calls = 0

    def create_worker() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("refused")
        return "ok"

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        guard.call(create_worker)
    assert [r.getMessage() for r in caplog.records] == [
        "Attempt 1/5 failed for create_worker with ConnectionError: refused. Retrying in 1.0s...",
        "Attempt 2/5 failed for create_worker with ConnectionError: refused. Retrying in 2.0s...",
    ]


def test_rate_limited_per_client_and_error_type_with_suppressed_count(
    logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    sink = LoggingSink(logger, burst=3, interval=60, clock=clock)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for _ in range(10):
            sink.emit(retry_event(ConnectionError("down")))
        # another client and another error type have their own allowance
        sink.emit(retry_event(ConnectionError("down"), client="other"))
        sink.emit(retry_event(TimeoutError("slow"), error_type="timeout"))
        assert len(caplog.records) == 5
        clock.advance(60)
        sink.emit(retry_event(ConnectionError("down")))
    last = caplog.records[-1]
    assert last.getMessage().endswith("(7 similar lines suppressed)")
    assert last.suppressed == 7  # type: ignore[attr-defined]


def test_rate_limiter_directly() -> None:
    clock = FakeClock()
    limiter = RateLimiter(burst=2, interval=10, clock=clock)
    assert limiter.admit(("k",)) == (True, 0)
    assert limiter.admit(("k",)) == (True, 0)
    assert limiter.admit(("k",)) == (False, 0)
    assert limiter.admit(("k",)) == (False, 0)
    clock.advance(9.9)
    assert limiter.admit(("k",)) == (False, 0)
    clock.advance(0.1)
    assert limiter.admit(("k",)) == (True, 3)
    assert limiter.admit(("k",)) == (True, 0)


def test_no_password_in_log_lines(logger: logging.Logger, caplog: pytest.LogCaptureFixture) -> None:
    sink = LoggingSink(logger, clock=FakeClock())
    error = ConnectionError(
        "cannot reach amqp://guest:sup3rsecret@broker:5672/ (password=sup3rsecret)"
    )
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        sink.emit(retry_event(error))
        sink.emit(RetriesExhausted("custom", "workers", "create", 5, "connection", error,
                                   "create_worker"))
        sink.emit(ConnectionStateChanged("rabbitmq", "workers", "connected", "disconnected", 0.0,
                                         "lost amqp://guest:sup3rsecret@broker:5672/"))
    assert len(caplog.records) == 3
    assert "sup3rsecret" not in caplog.text
    assert "guest:***@broker" in caplog.text


def test_other_events_are_logged(logger: logging.Logger, caplog: pytest.LogCaptureFixture) -> None:
    sink = LoggingSink(logger, clock=FakeClock())
    with caplog.at_level(logging.INFO, logger=LOGGER):
        sink.emit(BreakerStateChanged("redis", "cache", "closed", "open", "5 consecutive failures"))
        sink.emit(BreakerStateChanged("redis", "cache", None, "closed"))  # initial: silent
        sink.emit(EventsDropped("rabbitmq", "events", "overflow", 4, 1000))
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "redis/cache circuit breaker closed -> open (5 consecutive failures)",
        "rabbitmq/events dropped 4 buffered event(s): overflow",
    ]
    assert caplog.records[0].levelno == logging.WARNING


def test_disabled_level_costs_no_rate_limit_slot(
    logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    sink = LoggingSink(logger, burst=1, clock=clock)
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        sink.emit(retry_event(ConnectionError("down")))  # WARNING below the level: ignored
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        sink.emit(retry_event(ConnectionError("down")))
    assert len(caplog.records) == 1
    assert caplog.records[0].suppressed == 0  # type: ignore[attr-defined]


def test_reconnect_line_names_an_error_that_prints_as_nothing(
    logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    from instrumented_clients.resilience.events import ReconnectAttempt

    class SilentError(ConnectionError):
        def __str__(self) -> str:
            return ""

    sink = LoggingSink(logger, clock=FakeClock())
    error = SilentError()
    error.__cause__ = ConnectionRefusedError(111, "Connection refused")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        sink.emit(ReconnectAttempt("rabbitmq", "events", 2, "failure", "connection", error, 2.0))
    [record] = caplog.records
    assert "failed with connection: SilentError (ConnectionRefusedError: " in record.getMessage()
