"""Telemetry: the metric catalog and the Prometheus, OpenTelemetry and logging sinks."""

from instrumented_clients.resilience.events import set_default_instrumentation
from instrumented_clients.telemetry import catalog
from instrumented_clients.telemetry.catalog import METRICS, MetricSpec
from instrumented_clients.telemetry.core import (
    OperationRecorder,
    Sink,
    Telemetry,
    get_default_telemetry,
    set_default_telemetry,
)
from instrumented_clients.telemetry.log_sink import LoggingSink, RateLimiter
from instrumented_clients.telemetry.otel import OpenTelemetrySink
from instrumented_clients.telemetry.prometheus import PrometheusMetrics, PrometheusSink

# Components built without an explicit Telemetry report to the package default.
set_default_instrumentation(get_default_telemetry)

__all__ = [
    "METRICS",
    "LoggingSink",
    "MetricSpec",
    "OpenTelemetrySink",
    "OperationRecorder",
    "PrometheusMetrics",
    "PrometheusSink",
    "RateLimiter",
    "Sink",
    "Telemetry",
    "catalog",
    "get_default_telemetry",
    "set_default_telemetry",
]
