"""OpenTelemetry sink: span events on the current span, and one span per reconnect cycle.

Only ``opentelemetry-api`` is imported. With no SDK configured, the global tracer provider is a
proxy and :attr:`OpenTelemetrySink.enabled` is False, so nothing at all is done per call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, ProxyTracerProvider, Span, SpanKind, Status, StatusCode

from instrumented_clients.redaction import redact_text
from instrumented_clients.resilience import events as ev
from instrumented_clients.telemetry.conventions import (
    ERROR_CATEGORY,
    ERROR_TYPE,
    PACKAGE_VERSION,
    SCHEMA_URL,
)

__all__ = ["GLOBAL_SLOT", "ErrorDescriber", "OpenTelemetrySink", "SpanScope", "exception_type"]

# Turns a failure into span attributes (``error.type`` and, for a database, its SQLSTATE).
ErrorDescriber = Callable[[BaseException], Mapping[str, Any]]


def exception_type(error: BaseException) -> str:
    """``error.type`` for an exception, as OpenTelemetry's conventions ask: its class name."""
    return type(error).__qualname__


# The current operation's ErrorDescriber, kept in the context beside its span so that the span's
# events (a retry) give ``error.type`` the same value as the span (a SQLSTATE, for a database).
_DESCRIBER_KEY = otel_context.create_key("resilient_client.describe_error")


def _event_error_type(error: BaseException) -> str:
    describe = otel_context.get_value(_DESCRIBER_KEY)
    if describe is not None:
        value = describe(error).get(ERROR_TYPE)  # type: ignore[operator]
        if isinstance(value, str):
            return value
    return exception_type(error)


def _is_configured(provider: trace.TracerProvider) -> bool:
    return not isinstance(provider, (ProxyTracerProvider, trace.NoOpTracerProvider))


# The global provider can be set only once (``set_tracer_provider`` is set-once), so "is it set
# yet?" is the only question worth asking per call. ``trace.get_tracer_provider()`` answers it
# with an ``os.environ`` lookup (~1 µs); the module attribute it reads costs a few ns. If a future
# opentelemetry-api renames that attribute, fall back to the public call.
GLOBAL_SLOT = hasattr(trace, "_TRACER_PROVIDER")
"""Whether opentelemetry-api keeps the global provider in ``trace._TRACER_PROVIDER`` (read
directly per call; no public API answers "is it set?" without an environment look-up)."""


def _global_provider_set() -> bool:
    if GLOBAL_SLOT:
        return trace._TRACER_PROVIDER is not None
    return _is_configured(trace.get_tracer_provider())


class SpanScope:
    """A started span made current; closed by :meth:`close`."""

    __slots__ = ("describe_error", "span", "token")

    def __init__(self, span: Span, token: object,
                 describe_error: ErrorDescriber | None = None) -> None:
        self.span = span
        self.token = token
        self.describe_error = describe_error

    def close(self, attempts: int, error: BaseException | None, error_type: str | None) -> None:
        span = self.span
        if attempts > 1 or error is not None:
            span.set_attribute("resilient_client.attempts", attempts)
        if error is not None:
            if self.describe_error is not None:
                span.set_attributes(self.describe_error(error))
            else:
                span.set_attribute(ERROR_TYPE, error_type or exception_type(error))
            span.set_status(Status(StatusCode.ERROR, redact_text(str(error))[:200]))
        otel_context.detach(self.token)  # type: ignore[arg-type]
        span.end()


class OpenTelemetrySink:
    """Adds the core's events to traces.

    Args:
        tracer_provider: injected provider; None follows the global one, re-checked until an SDK
            is installed (applications often configure tracing after importing libraries).
    """

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self._provider = (
            None if isinstance(tracer_provider, ProxyTracerProvider) else tracer_provider
        )
        self.resolved_tracer: trace.Tracer | None = None
        """The tracer once :attr:`resolved` (None: tracing is off for good)."""
        self.resolved = False
        """True once the answer to "is tracing configured?" can no longer change: an injected
        provider, or the set-once global provider after it was set."""
        self._reconnect_spans: dict[tuple[str, str], Span] = {}
        # Clients that have been connected: only they can have an outage (a first connection
        # at start-up is not one).
        self._was_connected: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._handlers: dict[type[Any], Callable[[Any], None]] = {
            ev.RetryScheduled: self._on_retry,
            ev.RetriesExhausted: self._on_exhausted,
            ev.RetryBudgetDenied: self._span_event("retry_budget.denied"),
            ev.BreakerStateChanged: self._on_breaker_state,
            ev.BreakerRejected: self._span_event("circuit_breaker.rejected"),
            ev.EventBuffered: self._span_event("buffer.buffered"),
            ev.EventsDropped: self._span_event("buffer.dropped"),
            ev.ConnectionStateChanged: self._on_connection_state,
            ev.ReconnectAttempt: self._on_reconnect_attempt,
            ev.ConnectionBlocked: self._span_event("connection.blocked"),
        }
        if self._provider is not None:
            self._resolve(self._provider)
        else:
            trace.get_tracer_provider()  # installs OTEL_PYTHON_TRACER_PROVIDER's, if named

    def _resolve(self, provider: trace.TracerProvider) -> None:
        if _is_configured(provider):
            self.resolved_tracer = provider.get_tracer("instrumented_clients", PACKAGE_VERSION,
                                               schema_url=SCHEMA_URL)
        self.resolved = True

    @property
    def tracer(self) -> trace.Tracer | None:
        """The tracer, or None while no SDK is configured."""
        if not self.resolved:
            if not _global_provider_set():
                return None
            self._resolve(trace.get_tracer_provider())
        return self.resolved_tracer

    @property
    def enabled(self) -> bool:
        """Whether tracing is configured; costs an attribute check while it is not."""
        if self.resolved:
            return self.resolved_tracer is not None
        if GLOBAL_SLOT and trace._TRACER_PROVIDER is None:
            return False  # no SDK configured (yet): the common case, answered inline
        return self.tracer is not None

    def start(
        self,
        name: str,
        attributes: dict[str, Any] | None,
        kind: SpanKind = SpanKind.CLIENT,
        parent: otel_context.Context | None = None,
        links: Sequence[Link] | None = None,
        describe_error: ErrorDescriber | None = None,
    ) -> SpanScope | None:
        """Start a span under ``parent`` (default: the current context) and make it current."""
        tracer = self.tracer
        if tracer is None:
            return None
        span = tracer.start_span(name, context=parent, kind=kind, attributes=attributes,
                                 links=links)
        context = trace.set_span_in_context(span, parent)
        if describe_error is not None:
            context = otel_context.set_value(_DESCRIBER_KEY, describe_error, context)
        token = otel_context.attach(context)
        return SpanScope(span, token, describe_error)

    def emit(self, event: ev.Event) -> None:
        if self.resolved_tracer is None and not self.enabled:
            return
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    # -- span events ----------------------------------------------------------------------------

    @staticmethod
    def _add_event(name: str, attributes: dict[str, Any]) -> None:
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(name, attributes)

    def _span_event(self, name: str) -> Callable[[Any], None]:
        def handler(event: Any) -> None:
            attributes = {
                key: value
                for key in event.__slots__
                if isinstance(value := getattr(event, key), (str, int, float, bool))
            }
            self._add_event(name, attributes)

        return handler

    def _on_retry(self, e: ev.RetryScheduled) -> None:
        self._add_event(
            "retry",
            {
                "retry.attempt": e.attempt,
                "retry.delay_s": round(e.delay, 6),
                ERROR_TYPE: _event_error_type(e.error),
                ERROR_CATEGORY: e.error_type,
                "exception.type": type(e.error).__qualname__,
                "exception.message": redact_text(str(e.error))[:500],
            },
        )

    def _on_exhausted(self, e: ev.RetriesExhausted) -> None:
        self._add_event("retry.exhausted", {"retry.attempts": e.attempts,
                                             ERROR_TYPE: _event_error_type(e.error),
                                             ERROR_CATEGORY: e.error_type})

    def _on_breaker_state(self, e: ev.BreakerStateChanged) -> None:
        if e.from_state is None:
            return
        self._add_event(
            "circuit_breaker.state_change",
            {"circuit_breaker.from": e.from_state, "circuit_breaker.to": e.to_state,
             "circuit_breaker.reason": e.reason or ""},
        )

    # -- reconnect cycles: a span of their own --------------------------------------------------

    def _on_connection_state(self, e: ev.ConnectionStateChanged) -> None:
        key = (e.system, e.client)
        tracer = self.tracer
        if tracer is None:
            return
        with self._lock:
            if e.to_state == "connected":
                self._was_connected.add(key)
            span = self._reconnect_spans.get(key)
            if span is None and e.to_state in ("disconnected", "connecting") and (
                e.from_state in ("connected", "failed", "disconnected")
            ):
                if e.from_state != "connected" and key not in self._was_connected:
                    return  # connecting for the first time (start-up) is not an outage
                # Not made current and with no parent: an outage is one bar of its own.
                span = tracer.start_span(
                    f"{e.system} reconnect",
                    context=otel_context.Context(),
                    kind=SpanKind.INTERNAL,
                    attributes={"resilient_client.system": e.system,
                                "resilient_client.client": e.client},
                )
                self._reconnect_spans[key] = span
            if span is None:
                return
            span.add_event("state", {"from": e.from_state or "", "to": e.to_state})
            if e.to_state in ("connected", "failed", "closed"):
                del self._reconnect_spans[key]
                if e.to_state == "failed":
                    span.set_status(Status(StatusCode.ERROR, "reconnect policy spent"))
                span.set_attribute("resilient_client.outcome", e.to_state)
                span.end()

    def _on_reconnect_attempt(self, e: ev.ReconnectAttempt) -> None:
        with self._lock:
            span = self._reconnect_spans.get((e.system, e.client))
        if span is None:
            return
        attributes: dict[str, Any] = {"attempt": e.attempt, "outcome": e.outcome}
        if e.error is not None:
            attributes[ERROR_TYPE] = exception_type(e.error)
        if e.error_type:
            attributes[ERROR_CATEGORY] = e.error_type
        if e.error is not None:
            attributes["exception.message"] = redact_text(str(e.error))[:300]
        if e.next_delay is not None:
            attributes["next_delay_s"] = round(e.next_delay, 3)
        span.add_event("reconnect.attempt", attributes)
