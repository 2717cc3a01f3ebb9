"""Telemetry: sink isolation, shared metrics per registry, pre-initialised series, tracing."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from instrumented_clients import Guard, JitterMode, RetryPolicy, Telemetry
from instrumented_clients.resilience.events import (
    BreakerStateChanged,
    ConnectionStateChanged,
    EventsDropped,
    ReconnectAttempt,
    RetryScheduled,
)
from instrumented_clients.telemetry import METRICS, OpenTelemetrySink, PrometheusMetrics
from instrumented_clients.testing import CapturedTelemetry, FakeClock


class BrokenSink:
    def __init__(self) -> None:
        self.calls = 0

    def emit(self, event: object) -> None:
        self.calls += 1
        raise RuntimeError("sink bug")


class ListSink:
    def __init__(self) -> None:
        self.events: list[object] = []

    def emit(self, event: object) -> None:
        self.events.append(event)


def retry_event(attempt: int = 1) -> RetryScheduled:
    return RetryScheduled("redis", "cache", "get", attempt, 3, 1.0, "connection",
                          ConnectionError("down"), "get")


def test_a_raising_sink_is_logged_once_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    broken, after = BrokenSink(), ListSink()
    telemetry = Telemetry(registry=CollectorRegistry(), tracing=False, logs=False,
                          sinks=[broken, after])
    with caplog.at_level(logging.ERROR, logger="instrumented_clients"):
        telemetry.emit(retry_event(1))
        telemetry.emit(retry_event(2))
    assert broken.calls == 2
    assert len(after.events) == 2  # the sink after the broken one still gets everything
    failures = [r for r in caplog.records if "telemetry sink" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].exc_info is not None
    registry = telemetry.registry
    assert registry is not None
    assert registry.get_sample_value(
        "resilient_client_retries_total",
        {"system": "redis", "client": "cache", "operation": "get", "error_type": "connection"},
    ) == 2


def test_a_raising_sink_never_breaks_the_caller(clock: FakeClock) -> None:
    telemetry = Telemetry(registry=CollectorRegistry(), tracing=False, logs=False,
                          sinks=[BrokenSink()])
    guard = Guard(RetryPolicy(clock=clock), instrumentation=telemetry)
    calls = 0

    def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("down")
        return "ok"

    assert guard.call(flaky) == "ok"


def test_two_telemetry_objects_share_metrics_on_one_registry() -> None:
    registry = CollectorRegistry()
    first = Telemetry(registry=registry, tracing=False, logs=False)
    second = Telemetry(registry=registry, tracing=False, logs=False)  # no "Duplicated timeseries"
    assert first.metrics is second.metrics
    first.emit(retry_event())
    second.emit(retry_event())
    assert registry.get_sample_value(
        "resilient_client_retries_total",
        {"system": "redis", "client": "cache", "operation": "get", "error_type": "connection"},
    ) == 2
    other_namespace = Telemetry(registry=registry, namespace="acme", tracing=False, logs=False)
    assert other_namespace.metrics is not first.metrics
    assert PrometheusMetrics.for_registry(registry) is first.metrics


def test_every_catalog_metric_is_registered_with_its_type() -> None:
    registry = CollectorRegistry()
    telemetry = Telemetry(registry=registry, tracing=False, logs=False)
    telemetry.prepare("redis", "cache", ["get", "set"])
    telemetry.prepare("rabbitmq", "events", ["publish"])  # the broker's families are its own
    families = {f.name: f.type for f in text_string_to_metric_families(
        telemetry_scrape(registry))}
    for spec in METRICS:
        name = spec.full_name()
        if spec.kind == "counter":
            name = name.removesuffix("_total")
        if spec.name in ("retries_total", "connection_transitions_total",
                         "circuit_breaker_transitions_total", "circuit_breaker_state",
                         "connection_state", "pool_connections"):
            continue  # labels only known once something happens
        assert families.get(name) == spec.kind, spec.name


def telemetry_scrape(registry: CollectorRegistry) -> str:
    from prometheus_client import generate_latest

    return generate_latest(registry).decode()


def test_prepare_creates_series_at_zero() -> None:
    registry = CollectorRegistry()
    telemetry = Telemetry(registry=registry, tracing=False, logs=False)
    telemetry.prepare("redis", "cache", ["get"])

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(f"resilient_client_{name}",
                                         {"system": "redis", "client": "cache", **labels})

    for outcome in ("success", "success_after_retry", "failure", "failure_after_retry",
                    "rejected", "buffered"):
        assert value("operation_duration_seconds_count", operation="get", outcome=outcome) == 0
    assert value("retries_exhausted_total", operation="get") == 0
    assert value("retry_budget_denied_total") == 0
    assert value("circuit_breaker_rejections_total") == 0
    # The buffer is the RabbitMQ publisher's: its series start at 0 there, and never for Redis.
    telemetry.prepare("rabbitmq", "events", ["publish"])
    for reason in ("overflow", "expired", "shutdown"):
        assert value("buffer_dropped_events_total", reason=reason) is None
        assert registry.get_sample_value("resilient_client_buffer_dropped_events_total", {
            "system": "rabbitmq", "client": "events", "reason": reason}) == 0
    for outcome in ("success", "failure"):
        assert value("reconnect_attempts_total", outcome=outcome) == 0
    assert value("operation_duration_seconds_sum", operation="get", outcome="success") == 0
    assert value("operation_duration_seconds_count", operation="set", outcome="success") is None


def test_prepare_can_be_limited_to_families() -> None:
    registry = CollectorRegistry()
    telemetry = Telemetry(registry=registry, tracing=False, logs=False)
    telemetry.prepare("redis", "cache", ["get"], families=["operation_duration_seconds"])
    labels = {"system": "redis", "client": "cache"}
    assert registry.get_sample_value(
        "resilient_client_operation_duration_seconds_count",
        {**labels, "operation": "get", "outcome": "success"},
    ) == 0
    assert registry.get_sample_value("resilient_client_retry_budget_denied_total", labels) is None


def test_disabled_backends() -> None:
    telemetry = Telemetry(metrics=False, tracing=False, logs=False)
    assert telemetry.metrics is None
    assert telemetry.registry is None
    guard = Guard(RetryPolicy(), instrumentation=telemetry)
    assert guard.call(lambda: 5) == 5
    telemetry.prepare("redis", "x", ["get"])  # no-op, no error


def test_duration_buckets_resolve_loopback_and_reconnect_latencies() -> None:
    spec = next(s for s in METRICS if s.name == "operation_duration_seconds")
    assert spec.buckets[0] <= 0.0001
    assert spec.buckets[-1] >= 30


# -- tracing --------------------------------------------------------------------------------


def test_one_span_per_operation_with_one_event_per_retry(
    telemetry: CapturedTelemetry, clock: FakeClock
) -> None:
    guard = Guard(RetryPolicy(max_attempts=4, clock=clock, jitter_mode=JitterMode.NONE),
                  instrumentation=telemetry, system="redis", client="cache", operation="get",
                  span_name="GET", span_attributes={"db.system.name": "redis"})
    calls = 0

    def get() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("redis://:hunter2@localhost:6379 unreachable")
        return "v"

    assert guard.call(get) == "v"
    [span] = telemetry.spans()
    assert span.name == "GET"
    assert span.attributes["db.system.name"] == "redis"
    assert span.attributes["resilient_client.attempts"] == 3
    events = [e for e in span.events if e.name == "retry"]
    assert [e.attributes["error.type"] for e in events] == ["ConnectionError"] * 2
    assert [e.attributes["resilient_client.error.category"] for e in events] == ["connection"] * 2
    assert [e.attributes["retry.attempt"] for e in events] == [1, 2]
    assert [e.attributes["retry.delay_s"] for e in events] == [1.0, 2.0]
    for event in events:
        assert "hunter2" not in str(dict(event.attributes))
    assert span.status.is_ok


def test_failed_operation_span_has_error_status_without_secrets(
    telemetry: CapturedTelemetry, clock: FakeClock
) -> None:
    guard = Guard(RetryPolicy(max_attempts=2, clock=clock), instrumentation=telemetry,
                  operation="connect")
    with pytest.raises(ConnectionError):
        guard.call(_raise(ConnectionError("amqp://guest:s3cret@broker:5672/ refused")))
    [span] = telemetry.spans()
    assert not span.status.is_ok
    assert "s3cret" not in (span.status.description or "")
    assert "***" in (span.status.description or "")
    assert span.attributes["error.type"] == "ConnectionError"
    assert "retry.exhausted" in [e.name for e in span.events]
    for event in span.events:
        assert "s3cret" not in str(dict(event.attributes))


def _raise(error: Exception):  # type: ignore[no-untyped-def]
    def fail() -> None:
        raise error

    return fail


def test_breaker_transitions_and_drops_are_span_events(telemetry: CapturedTelemetry) -> None:
    tracer = telemetry.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("work"):
        telemetry.emit(BreakerStateChanged("redis", "c", "closed", "open", "5 failures"))
        telemetry.emit(EventsDropped("rabbitmq", "c", "overflow", 3, 10))
    [span] = telemetry.spans()
    assert [e.name for e in span.events] == ["circuit_breaker.state_change", "buffer.dropped"]
    assert span.events[1].attributes["count"] == 3


def test_reconnect_cycle_is_a_span_of_its_own(telemetry: CapturedTelemetry) -> None:
    for from_state, to_state in (("connected", "disconnected"), ("disconnected", "connecting")):
        telemetry.emit(ConnectionStateChanged("rabbitmq", "c", from_state, to_state, 0.0))
    telemetry.emit(ReconnectAttempt("rabbitmq", "c", 1, "failure", "connection",
                                    ConnectionRefusedError("refused"), 1.0))
    telemetry.emit(ConnectionStateChanged("rabbitmq", "c", "connecting", "connected", 2.0))
    [span] = telemetry.spans()
    assert span.name == "rabbitmq reconnect"
    assert span.parent is None
    assert span.attributes["resilient_client.outcome"] == "connected"
    assert "reconnect.attempt" in [e.name for e in span.events]


def test_a_first_connection_at_start_up_is_no_reconnect_span(telemetry: CapturedTelemetry) -> None:
    for from_state, to_state in ((None, "disconnected"), ("disconnected", "connecting")):
        telemetry.emit(ConnectionStateChanged("rabbitmq", "c", from_state, to_state, 0.0))
    telemetry.emit(ReconnectAttempt("rabbitmq", "c", 1, "failure", "connection",
                                    ConnectionRefusedError("refused"), 1.0))
    for from_state, to_state in (("connecting", "disconnected"), ("disconnected", "connecting"),
                                 ("connecting", "connected")):
        telemetry.emit(ConnectionStateChanged("rabbitmq", "c", from_state, to_state, 2.0))
    assert not telemetry.spans()
    # a later outage is one
    for from_state, to_state in (("connected", "disconnected"), ("disconnected", "connecting"),
                                 ("connecting", "connected")):
        telemetry.emit(ConnectionStateChanged("rabbitmq", "c", from_state, to_state, 3.0))
    assert [span.name for span in telemetry.spans()] == ["rabbitmq reconnect"]


def test_the_tracer_names_the_package_version_and_the_conventions_schema(
        telemetry: CapturedTelemetry) -> None:
    from instrumented_clients.telemetry.conventions import PACKAGE_VERSION, SCHEMA_URL

    Guard(RetryPolicy(max_attempts=1), instrumentation=telemetry, operation="op").call(int)
    [span] = telemetry.spans()
    scope = span.instrumentation_scope
    assert scope is not None
    assert (scope.name, scope.version, scope.schema_url) == (
        "instrumented_clients", PACKAGE_VERSION, SCHEMA_URL)
    assert SCHEMA_URL.startswith("https://opentelemetry.io/schemas/1.")
    assert PACKAGE_VERSION != "0+unknown"


def test_nothing_is_traced_when_tracing_is_not_configured(clock: FakeClock) -> None:
    sink = OpenTelemetrySink(None)  # the global provider: not configured in this process
    assert sink.enabled is False
    assert sink.start("x", None) is None
    telemetry = Telemetry(registry=CollectorRegistry(), logs=False)
    recorder = telemetry.observe_operation("custom", "c", "op")
    assert recorder.tracing is False


def test_tracing_configured_after_import_is_picked_up() -> None:
    # The global provider is set-once per process: prove it in a child process.
    script = textwrap.dedent(
        """
        from prometheus_client import CollectorRegistry
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from instrumented_clients import Guard, RetryPolicy, Telemetry

        telemetry = Telemetry(registry=CollectorRegistry(), logs=False)
        guard = Guard(RetryPolicy(), instrumentation=telemetry, operation="early")
        guard.call(lambda: 1)  # before tracing exists: no span, no error
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        guard.call(lambda: 2)
        print(",".join(span.name for span in exporter.get_finished_spans()))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "early"


def test_duration_histogram_carries_the_trace_id_as_exemplar(
    telemetry: CapturedTelemetry, clock: FakeClock
) -> None:
    guard = Guard(RetryPolicy(clock=clock), instrumentation=telemetry, operation="op")
    guard.call(lambda: None)
    [span] = telemetry.spans()
    trace_id = format(span.context.trace_id, "032x")
    registry = telemetry.registry
    assert registry is not None
    exemplars = [
        sample.exemplar
        for family in registry.collect()
        if family.name == "resilient_client_operation_duration_seconds"
        for sample in family.samples
        if sample.exemplar is not None
    ]
    assert [exemplar.labels for exemplar in exemplars] == [{"trace_id": trace_id}]


def test_captured_telemetry_without_namespace() -> None:
    telemetry = CapturedTelemetry(namespace="", logs=False)
    telemetry.prepare("redis", "c", ["get"])
    assert telemetry.value("operation_duration_seconds_count",
                           system="redis", client="c", operation="get",
                           outcome="success") == 0
