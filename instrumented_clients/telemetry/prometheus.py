"""Prometheus sink: the catalog's metrics, each created once per (registry, namespace).

The metrics every system emits exist from the start; a metric that belongs to some systems only
(the publisher's buffer, a pool's gauges) is created when a client of one of them prepares its
series, so a registry never exports a family that none of its clients can emit.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from instrumented_clients.resilience import events as ev
from instrumented_clients.telemetry.catalog import (
    BREAKER_STATES,
    CONNECTION_STATES,
    DEFAULT_NAMESPACE,
    METRICS,
    MetricSpec,
    metric,
)
from instrumented_clients.telemetry.histogram import PerThreadHistogram, create_histogram

__all__ = ["PrometheusMetrics", "PrometheusSink"]

Metric = Counter | Gauge | Histogram | PerThreadHistogram

_cache_lock = threading.Lock()
_cache: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, PrometheusMetrics]] = (
    weakref.WeakKeyDictionary()
)


def _create(spec: MetricSpec, namespace: str, registry: CollectorRegistry) -> Metric:
    name = spec.full_name(namespace)
    if spec.kind == "counter":
        return Counter(name, spec.help, spec.labels, registry=registry)
    if spec.kind == "gauge":
        return Gauge(name, spec.help, spec.labels, registry=registry,
                     multiprocess_mode=spec.multiprocess_mode)  # type: ignore[arg-type]
    return create_histogram(name, spec.help, spec.labels, spec.buckets, registry)


class PrometheusMetrics:
    """The catalog's metric objects on one registry under one namespace.

    Use :meth:`for_registry`: two clients on the same registry share one instance instead of
    failing with "Duplicated timeseries".
    """

    def __init__(self, registry: CollectorRegistry, namespace: str) -> None:
        self.registry = registry
        self.namespace = namespace
        self._create_lock = threading.Lock()
        self.by_name: dict[str, Metric] = {
            spec.name: _create(spec, namespace, registry) for spec in METRICS if not spec.systems
        }

    @classmethod
    def for_registry(
        cls, registry: CollectorRegistry | None = None, namespace: str = DEFAULT_NAMESPACE
    ) -> PrometheusMetrics:
        registry = REGISTRY if registry is None else registry
        with _cache_lock:
            per_namespace = _cache.setdefault(registry, {})
            metrics = per_namespace.get(namespace)
            if metrics is None:
                metrics = per_namespace[namespace] = cls(registry, namespace)
            return metrics

    def __getitem__(self, name: str) -> Any:
        """The metric named ``name``, created on first use."""
        found = self.by_name.get(name)
        if found is not None:
            return found
        spec = metric(name)
        with self._create_lock:
            found = self.by_name.get(name)
            if found is None:
                found = self.by_name[name] = _create(spec, self.namespace, self.registry)
            return found

    def created(self) -> list[tuple[MetricSpec, Metric]]:
        """The metrics created so far on this registry, with their catalog entries."""
        return [(metric(name), created) for name, created in list(self.by_name.items())]

    def prepare(
        self,
        system: str,
        client: str,
        operations: Iterable[str] = (),
        families: Iterable[str] | None = None,
    ) -> None:
        """Create the series known up front, so that counters start at 0 rather than appear
        on their first increment (``rate()`` and ``increase()`` need the zero).

        Every family of ``system`` is created; ``families`` limits the series created to those
        metrics (default: all). A family that does not belong to ``system`` is never created.
        """
        wanted = None if families is None else set(families)
        operations = tuple(operations)
        for spec in METRICS:
            if not spec.belongs_to(system):
                continue
            metric = self[spec.name]
            if wanted is not None and spec.name not in wanted:
                continue
            extra = spec.labels[2:]
            if not extra:
                metric.labels(system, client)
            elif extra == ("operation",):
                for operation in operations:
                    metric.labels(system, client, operation)
            elif extra == ("operation", "outcome"):
                for operation in operations:
                    for outcome in spec.values_of("outcome"):
                        metric.labels(system, client, operation, outcome)
            elif len(extra) == 1 and spec.values_of(extra[0]) and spec.kind == "counter":
                for value in spec.values_of(extra[0]):
                    metric.labels(system, client, value)


class PrometheusSink:
    """Turns events into the catalog's metrics."""

    def __init__(self, metrics: PrometheusMetrics) -> None:
        self.metrics = metrics
        m = metrics.by_name
        self._retries: Any = m["retries_total"]
        self._exhausted: Any = m["retries_exhausted_total"]
        self._budget_denied: Any = m["retry_budget_denied_total"]
        self._conn_state: Any = m["connection_state"]
        self._conn_transitions: Any = m["connection_transitions_total"]
        self._illegal: Any = m["illegal_transitions_total"]
        self._reconnects: Any = m["reconnect_attempts_total"]
        self._reconnect_duration: Any = m["reconnect_duration_seconds"]
        self._breaker_state: Any = m["circuit_breaker_state"]
        self._breaker_transitions: Any = m["circuit_breaker_transitions_total"]
        self._rejections: Any = m["circuit_breaker_rejections_total"]
        # The broker's families are looked up per event (``metrics[...]``): they exist only on
        # a registry that holds a RabbitMQ client, the only source of those events.
        self._handlers: dict[type[Any], Callable[[Any], None]] = {
            ev.RetryScheduled: self._on_retry,
            ev.RetriesExhausted: self._on_exhausted,
            ev.RetryBudgetDenied: self._on_budget_denied,
            ev.ConnectionStateChanged: self._on_connection_state,
            ev.IllegalTransition: self._on_illegal,
            ev.ReconnectAttempt: self._on_reconnect_attempt,
            ev.ReconnectFinished: self._on_reconnect_finished,
            ev.ConnectionBlocked: self._on_blocked,
            ev.BreakerStateChanged: self._on_breaker_state,
            ev.BreakerRejected: self._on_rejected,
            ev.EventBuffered: self._on_buffered,
            ev.EventsFlushed: self._on_flushed,
            ev.EventsDropped: self._on_dropped,
            ev.PublishConfirmed: self._on_confirmed,
            ev.MessagesResent: self._on_resent,
            ev.MessageConsumed: self._on_consumed,
        }

    def emit(self, event: ev.Event) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def _on_retry(self, e: ev.RetryScheduled) -> None:
        self._retries.labels(e.system, e.client, e.operation, e.error_type).inc()

    def _on_exhausted(self, e: ev.RetriesExhausted) -> None:
        self._exhausted.labels(e.system, e.client, e.operation).inc()

    def _on_budget_denied(self, e: ev.RetryBudgetDenied) -> None:
        self._budget_denied.labels(e.system, e.client).inc()

    def _on_connection_state(self, e: ev.ConnectionStateChanged) -> None:
        for state in CONNECTION_STATES:
            self._conn_state.labels(e.system, e.client, state).set(1 if state == e.to_state else 0)
        if e.from_state is not None:
            self._conn_transitions.labels(e.system, e.client, e.from_state, e.to_state).inc()

    def _on_illegal(self, e: ev.IllegalTransition) -> None:
        self._illegal.labels(e.system, e.client).inc()

    def _on_reconnect_attempt(self, e: ev.ReconnectAttempt) -> None:
        self._reconnects.labels(e.system, e.client, e.outcome).inc()

    def _on_reconnect_finished(self, e: ev.ReconnectFinished) -> None:
        if e.outcome == "success":
            self._reconnect_duration.labels(e.system, e.client).observe(e.duration)

    def _on_blocked(self, e: ev.ConnectionBlocked) -> None:
        self.metrics["connection_blocked"].labels(e.system, e.client).set(1 if e.blocked else 0)

    def _on_breaker_state(self, e: ev.BreakerStateChanged) -> None:
        for state in BREAKER_STATES:
            self._breaker_state.labels(e.system, e.client, state).set(
                1 if state == e.to_state else 0
            )
        if e.from_state is not None:
            self._breaker_transitions.labels(e.system, e.client, e.from_state, e.to_state).inc()
        else:
            self._rejections.labels(e.system, e.client)

    def _on_rejected(self, e: ev.BreakerRejected) -> None:
        self._rejections.labels(e.system, e.client).inc()

    def _on_buffered(self, e: ev.EventBuffered) -> None:
        m = self.metrics
        m["buffered_events_total"].labels(e.system, e.client).inc()
        m["buffer_events"].labels(e.system, e.client).set(e.depth)
        m["buffer_capacity_events"].labels(e.system, e.client).set(e.capacity)

    def _on_flushed(self, e: ev.EventsFlushed) -> None:
        m = self.metrics
        m["buffer_flushed_events_total"].labels(e.system, e.client).inc(e.count)
        m["buffer_events"].labels(e.system, e.client).set(e.depth)

    def _on_dropped(self, e: ev.EventsDropped) -> None:
        m = self.metrics
        m["buffer_dropped_events_total"].labels(e.system, e.client, e.reason).inc(e.count)
        m["buffer_events"].labels(e.system, e.client).set(e.depth)

    def _on_confirmed(self, e: ev.PublishConfirmed) -> None:
        self.metrics["publish_confirms_total"].labels(e.system, e.client, e.outcome).inc(e.count)

    def _on_resent(self, e: ev.MessagesResent) -> None:
        self.metrics["publish_resent_total"].labels(e.system, e.client).inc(e.count)

    def _on_consumed(self, e: ev.MessageConsumed) -> None:
        self.metrics["consumed_messages_total"].labels(e.system, e.client, e.outcome).inc()
