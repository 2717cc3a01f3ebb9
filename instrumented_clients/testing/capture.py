"""``CapturedTelemetry``: a Telemetry whose every output a test can read back."""

from __future__ import annotations

from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, generate_latest

from instrumented_clients.resilience.events import Event
from instrumented_clients.telemetry.core import Telemetry

__all__ = ["CapturedTelemetry"]

E = TypeVar("E")


class _ListSink:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)


class CapturedTelemetry(Telemetry):
    """Telemetry on a fresh registry, with an in-memory span exporter and an event list.

    Needs ``opentelemetry-sdk`` (the ``otel`` extra), which tests have and the package does not.
    """

    def __init__(self, *, namespace: str = "resilient_client", logs: bool = True) -> None:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self._events = _ListSink()
        super().__init__(
            registry=CollectorRegistry(),
            namespace=namespace,
            tracer_provider=self.tracer_provider,
            logs=logs,
            sinks=[self._events],
        )

    @property
    def events(self) -> list[Event]:
        return self._events.events

    def events_of(self, kind: type[E]) -> list[E]:
        return [event for event in self._events.events if isinstance(event, kind)]

    def value(self, name: str, **labels: str) -> float | None:
        """A sample's value; ``name`` without namespace, e.g. ``"retries_total"``."""
        assert self.registry is not None
        full_name = f"{self.namespace}_{name}" if self.namespace else name
        return self.registry.get_sample_value(full_name, labels)

    def spans(self) -> tuple[Any, ...]:
        return tuple(self.exporter.get_finished_spans())

    def scrape(self) -> str:
        """The registry in the Prometheus text format."""
        assert self.registry is not None
        return generate_latest(self.registry).decode()
