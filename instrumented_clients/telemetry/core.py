"""``Telemetry``: fans the core's events out to sinks and serves the hot-path observers."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind
from prometheus_client import CollectorRegistry

from instrumented_clients.resilience.events import Event, Outcome, SpanKindName
from instrumented_clients.telemetry.catalog import DEFAULT_NAMESPACE, OUTCOMES
from instrumented_clients.telemetry.log_sink import LoggingSink
from instrumented_clients.telemetry.otel import (
    GLOBAL_SLOT,
    ErrorDescriber,
    OpenTelemetrySink,
    SpanScope,
)
from instrumented_clients.telemetry.prometheus import PrometheusMetrics, PrometheusSink

__all__ = ["OperationRecorder", "Sink", "Telemetry", "get_default_telemetry",
           "set_default_telemetry"]

_log = logging.getLogger(__name__)
_SPAN_KINDS = {"client": SpanKind.CLIENT, "producer": SpanKind.PRODUCER,
               "consumer": SpanKind.CONSUMER, "internal": SpanKind.INTERNAL}


class Sink(Protocol):
    """Anything that takes events. It may raise: :class:`Telemetry` contains it."""

    def emit(self, event: Event) -> None: ...


def _ignore(duration: float) -> None:
    return None


class OperationRecorder:
    """The observer of one (system, client, operation): metric children resolved once.

    The success path costs one histogram observation (its ``_count`` is the operation count, by
    outcome); with tracing configured, a span around the operation and the trace id as the
    histogram's exemplar.
    """

    __slots__ = ("_attributes", "_describe_error", "_exemplars", "_kind", "_otel", "_outcomes",
                 "_span_name", "record_success")

    def __init__(
        self,
        metrics: PrometheusMetrics | None,
        otel: OpenTelemetrySink | None,
        system: str,
        client: str,
        operation: str,
        span_name: str | None,
        span_attributes: dict[str, Any] | None,
        span_kind: SpanKindName = "client",
        describe_error: ErrorDescriber | None = None,
    ) -> None:
        self._otel = otel
        self._span_name = span_name or f"{operation}"
        self._attributes = dict(span_attributes or {})
        self._kind = _SPAN_KINDS[span_kind]
        self._describe_error = describe_error
        self._exemplars = True
        if metrics is not None:
            histogram = metrics["operation_duration_seconds"]
            self._outcomes: dict[str, Any] | None = {
                outcome: histogram.labels(system, client, operation, outcome)
                for outcome in OUTCOMES
            }
            # Not used here, but an operation that exists should show 0 exhaustions, not none.
            metrics["retries_exhausted_total"].labels(system, client, operation)
            self.record_success: Callable[[float], object] = self._outcomes["success"].observe
        else:
            self._outcomes = None
            self.record_success = _ignore

    @property
    def tracing(self) -> bool:
        otel = self._otel
        if otel is None:
            return False
        if otel.resolved:  # read inline, not through otel.enabled: this runs on every call
            return otel.resolved_tracer is not None
        if GLOBAL_SLOT and trace._TRACER_PROVIDER is None:  # see otel.GLOBAL_SLOT
            return False
        return otel.enabled

    def begin(self, parent: otel_context.Context | None = None,
              links: list[Link] | None = None) -> SpanScope | None:
        """Start this operation's span (current until :meth:`finish`), under ``parent`` (default:
        the current context)."""
        assert self._otel is not None
        return self._otel.start(self._span_name, self._attributes, self._kind, parent, links,
                                self._describe_error)

    def finish(
        self,
        outcome: Outcome,
        duration: float,
        attempts: int,
        scope: Any = None,
        error: BaseException | None = None,
    ) -> None:
        outcomes = self._outcomes
        if outcomes is not None:
            if scope is not None and self._exemplars:
                self._observe_with_exemplar(outcomes[outcome], duration, scope)
            else:
                outcomes[outcome].observe(duration)
        if scope is not None:
            scope.close(attempts, error, None)

    def record(self, outcome: Outcome, duration: float) -> None:
        """Count an operation that did not run through a Guard (e.g. a buffered publish)."""
        self.finish(outcome, duration, 1)

    def _observe_with_exemplar(self, histogram: Any, duration: float, scope: SpanScope) -> None:
        context = scope.span.get_span_context()
        if not context.is_valid or not context.trace_flags.sampled:
            histogram.observe(duration)
            return
        try:
            histogram.observe(duration, {"trace_id": trace.format_trace_id(context.trace_id)})
        except Exception:  # multiprocess mode has no exemplars: stop trying
            self._exemplars = False
            histogram.observe(duration)


class Telemetry:
    """Where clients report: Prometheus metrics, OpenTelemetry traces and log lines.

    Args:
        registry: Prometheus registry (default: prometheus_client's global ``REGISTRY``).
        namespace: metric name prefix.
        tracer_provider: OpenTelemetry provider (default: the global one, once configured).
        logger: logger for the logging sink.
        metrics, tracing, logs: switch a backend off.
        sinks: extra sinks that receive every event.
    """

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        tracer_provider: trace.TracerProvider | None = None,
        logger: logging.Logger | None = None,
        metrics: bool = True,
        tracing: bool = True,
        logs: bool = True,
        sinks: Iterable[Sink] = (),
    ) -> None:
        self.namespace = namespace
        self.metrics = PrometheusMetrics.for_registry(registry, namespace) if metrics else None
        self.otel = OpenTelemetrySink(tracer_provider) if tracing else None
        self._sinks: list[Sink] = []
        if self.metrics is not None:
            self._sinks.append(PrometheusSink(self.metrics))
        if self.otel is not None:
            self._sinks.append(self.otel)
        if logs:
            self._sinks.append(LoggingSink(logger))
        self._sinks.extend(sinks)
        self._broken: set[int] = set()
        self._lock = threading.Lock()

    @property
    def registry(self) -> CollectorRegistry | None:
        return self.metrics.registry if self.metrics is not None else None

    def add_sink(self, sink: Sink) -> None:
        with self._lock:
            self._sinks = [*self._sinks, sink]

    def emit(self, event: Event) -> None:
        """Give ``event`` to every sink; a sink that raises is logged (once) and skipped."""
        for sink in self._sinks:
            try:
                sink.emit(event)
            except Exception:
                if id(sink) not in self._broken:
                    self._broken.add(id(sink))
                    _log.exception("telemetry sink %r failed; its further errors are not logged",
                                   sink)

    def observe_operation(
        self,
        system: str,
        client: str,
        operation: str,
        *,
        span_name: str | None = None,
        span_attributes: dict[str, Any] | None = None,
        span_kind: SpanKindName = "client",
        describe_error: ErrorDescriber | None = None,
    ) -> OperationRecorder:
        """The recorder of one operation; ``describe_error`` gives a failed span its
        ``error.type`` (default: the exception's class name)."""
        return OperationRecorder(
            self.metrics, self.otel, system, client, operation, span_name, span_attributes,
            span_kind, describe_error,
        )

    def prepare(
        self,
        system: str,
        client: str,
        operations: Iterable[str] = (),
        families: Iterable[str] | None = None,
    ) -> None:
        """Pre-initialise a client's series so that its counters start at 0; only ``system``'s
        families are created (see :func:`~instrumented_clients.telemetry.catalog.families_for`)."""
        if self.metrics is not None:
            self.metrics.prepare(system, client, operations, families)


_default: Telemetry | None = None
_default_lock = threading.Lock()


def get_default_telemetry() -> Telemetry:
    """The package-wide :class:`Telemetry` (global registry and tracer provider), made on first
    use rather than on import."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Telemetry()
    return _default


def set_default_telemetry(telemetry: Telemetry | None) -> None:
    """Replace the package-wide default (None: make a fresh one on next use)."""
    global _default
    _default = telemetry
