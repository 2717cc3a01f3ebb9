"""A scripted run: a flaky call, a breaker that trips and recovers, a buffer that
overflows — then the exact values in a scrape, the span, and ``promtool check metrics``."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from instrumented_clients import (
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
    EventBuffer,
    Guard,
    JitterMode,
    RetryPolicy,
)
from instrumented_clients.testing import CapturedTelemetry, FakeClock

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def scripted_run() -> tuple[CapturedTelemetry, str]:
    clock = FakeClock()
    telemetry = CapturedTelemetry(logs=False)
    telemetry.prepare("redis", "cache", ["get"])
    telemetry.prepare("postgresql", "orders", ["execute"])
    telemetry.prepare("rabbitmq", "events", ["publish"])

    # 1. A flaky function: three connection errors, then success, under one Guard.
    guard = Guard(RetryPolicy(max_attempts=5, jitter_mode=JitterMode.NONE, clock=clock),
                  instrumentation=telemetry, system="redis", client="cache", operation="get",
                  span_name="GET", span_attributes={"db.system.name": "redis"})
    failures = iter([ConnectionError("reset")] * 3)

    def get() -> str:
        error = next(failures, None)
        if error is not None:
            raise error
        return "value"

    assert guard.call(get) == "value"
    assert clock.sleeps == [1.0, 2.0, 4.0]

    # 2. A breaker that trips after two failures, rejects once, and recovers after its cool-down.
    breaker = CircuitBreaker(failure_threshold=2, recovery_timeout=30, clock=clock,
                             instrumentation=telemetry, name="orders", system="postgresql")

    def down() -> None:
        raise ConnectionRefusedError(111, "refused")

    for _ in range(2):
        with pytest.raises(ConnectionRefusedError):
            breaker.call(down)
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: "never runs")
    clock.advance(30)
    assert breaker.call(lambda: "probe ok") == "probe ok"
    assert breaker.state is BreakerState.CLOSED

    # 3. A buffer of three that is given five events: the two oldest overflow.
    buffer: EventBuffer[int] = EventBuffer(3, clock=clock, instrumentation=telemetry,
                                           system="rabbitmq", client="events")
    for event in range(5):
        buffer.put(event)
    assert buffer.take() == [2, 3, 4]

    return telemetry, telemetry.scrape()


def samples(scrape: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(scrape):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def sample(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
           **labels: str) -> float:
    return found[(f"resilient_client_{name}", frozenset(labels.items()))]


def test_scrape_holds_the_expected_values() -> None:
    _, scrape = scripted_run()
    found = samples(scrape)
    cache = {"system": "redis", "client": "cache"}
    orders = {"system": "postgresql", "client": "orders"}
    events = {"system": "rabbitmq", "client": "events"}

    assert sample(found, "retries_total", operation="get", error_type="connection",
                  **cache) == 3
    assert sample(found, "operation_duration_seconds_count",
                  operation="get", outcome="success_after_retry",
                  **cache) == 1
    assert sample(found, "operation_duration_seconds_count",
                  operation="get", outcome="failure", **cache) == 0
    assert sample(found, "retries_exhausted_total", operation="get", **cache) == 0
    assert sample(found, "operation_duration_seconds_sum", operation="get",
                  outcome="success_after_retry", **cache) == 7.0

    assert sample(found, "circuit_breaker_state", state="closed", **orders) == 1
    assert sample(found, "circuit_breaker_state", state="open", **orders) == 0
    assert sample(found, "circuit_breaker_state", state="half_open", **orders) == 0
    for from_state, to_state in (("closed", "open"), ("open", "half_open"),
                                 ("half_open", "closed")):
        assert sample(found, "circuit_breaker_transitions_total", from_state=from_state,
                      to_state=to_state, **orders) == 1
    assert sample(found, "circuit_breaker_rejections_total", **orders) == 1

    assert sample(found, "buffer_dropped_events_total", reason="overflow", **events) == 2
    assert sample(found, "buffer_dropped_events_total", reason="expired", **events) == 0
    assert sample(found, "buffer_dropped_events_total", reason="shutdown", **events) == 0
    assert sample(found, "buffered_events_total", **events) == 5
    assert sample(found, "buffer_flushed_events_total", **events) == 3
    assert sample(found, "buffer_events", **events) == 0
    assert sample(found, "buffer_capacity_events", **events) == 3


def test_exporter_holds_one_span_with_one_event_per_retry() -> None:
    telemetry, _ = scripted_run()
    [span] = telemetry.spans()
    assert span.name == "GET"
    retries = [event for event in span.events if event.name == "retry"]
    assert [event.attributes["retry.attempt"] for event in retries] == [1, 2, 3]
    assert [event.attributes["error.type"] for event in retries] == ["ConnectionError"] * 3
    assert [event.attributes["resilient_client.error.category"] for event in retries] == [
        "connection"] * 3
    assert span.attributes["resilient_client.attempts"] == 4


def test_promtool_check_metrics_passes_on_the_scrape() -> None:
    _, scrape = scripted_run()
    result = subprocess.run([PROMTOOL, "check", "metrics"], input=scrape, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""
    assert result.stderr.strip() == ""
