"""Trace context across the broker, as OpenTelemetry's messaging conventions model it.

Producer: ``publish()`` opens a PRODUCER ``create`` span under the caller's context and injects
its context into the message headers through the global propagator (W3C tracecontext and baggage
by default); the headers travel with the message, through the buffer, the spool and any
re-send. Each transmission is a CLIENT ``send`` span, a child of the creation context and linked
to it, ended at the broker's confirm (or the drop, or the lost connection). ``publish_sync()`` is
one PRODUCER ``send`` span: create and send in one operation, its context the one injected.

Consumer: a CONSUMER ``process`` span per delivery, a child of the extracted context and linked
to it (or linked only, a new trace, with ``trace_link_only=True``).

Only called while tracing is configured: nothing here runs on the untraced hot path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode

from instrumented_clients.redaction import redact_text
from instrumented_clients.telemetry.conventions import (
    CREATE,
    ERROR_TYPE,
    MESSAGING_DESTINATION_NAME,
    MESSAGING_MESSAGE_BODY_SIZE,
    MESSAGING_MESSAGE_ID,
    MESSAGING_OPERATION_NAME,
    MESSAGING_OPERATION_TYPE,
    MESSAGING_RABBITMQ_DESTINATION_ROUTING_KEY,
    MESSAGING_RABBITMQ_MESSAGE_DELIVERY_TAG,
    MESSAGING_SYSTEM,
    PROCESS,
    SEND,
    SERVER_ADDRESS,
    SERVER_PORT,
    rabbitmq_destination,
    rabbitmq_span_name,
)

__all__ = [
    "REDELIVERED", "RESENT", "SETTLEMENT", "SUPPRESS_CONTRIB", "end_span", "extracted_origin",
    "inject_current",
    "process_attributes", "process_parent", "publish_sync_attributes", "start_create",
    "start_send",
]

SYSTEM = "rabbitmq"
RESENT = "resilient_client.resent"  # a transmission after a lost connection
REDELIVERED = "resilient_client.redelivered"  # the broker delivered it before
SETTLEMENT = "resilient_client.settlement"  # what the consumer did: ack, requeue or reject

# Made current around ``basic_publish``: the pika contrib instrumentation then neither starts a
# root span on the I/O thread nor overwrites the context ``publish()`` injected. The plain
# "suppress_instrumentation" key is the one opentelemetry-instrumentation's
# is_instrumentation_enabled() reads besides its own private key, which the API does not export.
SUPPRESS_CONTRIB = otel_context.set_value("suppress_instrumentation", True,
                                          otel_context.Context())


def _message_attributes(operation: str, exchange: str, routing_key: str,
                        message_id: str | None) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        MESSAGING_SYSTEM: SYSTEM,
        MESSAGING_OPERATION_TYPE: operation,
        MESSAGING_OPERATION_NAME: operation,
        MESSAGING_DESTINATION_NAME: rabbitmq_destination(exchange, routing_key),
    }
    if routing_key:
        attributes[MESSAGING_RABBITMQ_DESTINATION_ROUTING_KEY] = routing_key
    if message_id:
        attributes[MESSAGING_MESSAGE_ID] = message_id
    return attributes


def _writable_headers(message: Any) -> dict[str, Any]:
    """The message's own headers dict: a copy, so that a caller's dict is never written to."""
    properties = message.properties
    headers = dict(properties.headers or ())
    properties.headers = headers
    return headers


def start_create(tracer: trace.Tracer, message: Any) -> Span:
    """The PRODUCER ``create`` span of ``message``, under the current context; its context goes
    into the message headers and becomes ``message.origin``. The caller ends it."""
    attributes = _message_attributes(CREATE, message.exchange, message.routing_key,
                                     message.message_id)
    attributes[MESSAGING_MESSAGE_BODY_SIZE] = len(message.body)
    span = tracer.start_span(rabbitmq_span_name(CREATE, message.exchange),
                             kind=SpanKind.PRODUCER, attributes=attributes)
    propagate.inject(_writable_headers(message), context=trace.set_span_in_context(span))
    message.origin = span.get_span_context()
    return span


def inject_current(message: Any) -> None:
    """``publish_sync()``'s attempt: the current span (its PRODUCER ``send``) is the creation
    context."""
    propagate.inject(_writable_headers(message))
    message.origin = trace.get_current_span().get_span_context()


def publish_sync_attributes(exchange: str) -> dict[str, Any]:
    return _message_attributes(SEND, exchange, "", None)


def extracted_origin(headers: Mapping[str, Any] | None) -> SpanContext | None:
    """The creation context a message carries (a spooled one, read back by a new process)."""
    if not headers:
        return None
    context = trace.get_current_span(propagate.extract(headers)).get_span_context()
    return context if context.is_valid else None


def _server_attributes(channel: Any) -> dict[str, Any]:
    try:
        params = channel.connection.params
        return {SERVER_ADDRESS: params.host, SERVER_PORT: params.port}
    except AttributeError:
        return {}


def start_send(tracer: trace.Tracer, message: Any, channel: Any, resent: bool) -> Span:
    """One transmission of ``message``: a CLIENT ``send`` span, child of and linked to its
    creation context."""
    origin: SpanContext = message.origin
    attributes = _message_attributes(SEND, message.exchange, message.routing_key,
                                     message.message_id)
    attributes.update(_server_attributes(channel))
    if resent:
        attributes[RESENT] = True
    return tracer.start_span(
        rabbitmq_span_name(SEND, message.exchange),
        context=trace.set_span_in_context(trace.NonRecordingSpan(origin)),
        kind=SpanKind.CLIENT, attributes=attributes, links=(Link(origin),),
    )


def end_span(span: Span, error_type: str | None, description: str = "") -> None:
    """End a span, failed when ``error_type`` is set (a send span: at the confirm, the drop or
    the lost connection)."""
    if error_type is not None:
        span.set_attribute(ERROR_TYPE, error_type)
        span.set_status(Status(StatusCode.ERROR, redact_text(description or error_type)[:200]))
    span.end()


def process_parent(headers: Mapping[str, Any] | None,
                   link_only: bool) -> tuple[otel_context.Context | None, list[Link] | None]:
    """The parent context and links of a delivery's ``process`` span: a child of the producer's
    context and linked to it; with ``link_only``, a new trace linked to it. The handler has no
    ambient span, so without a producer context the span is a root."""
    if not headers:
        return otel_context.Context(), None
    extracted = propagate.extract(headers)
    origin = trace.get_current_span(extracted).get_span_context()
    if not origin.is_valid:
        return extracted, None  # baggage alone, perhaps
    if link_only:
        return otel_context.Context(), [Link(origin)]
    return extracted, [Link(origin)]


def process_attributes(queue: str, exchange: str, routing_key: str, message_id: str | None,
                       delivery_tag: int, body_size: int) -> dict[str, Any]:
    """A delivery's attributes; the destination names the queue too
    (``{exchange}:{routing_key}:{queue}``), as the conventions ask of a consumer."""
    attributes = _message_attributes(PROCESS, exchange, routing_key, message_id)
    source = rabbitmq_destination(exchange, routing_key)
    attributes[MESSAGING_DESTINATION_NAME] = (
        f"{source}:{queue}" if exchange and routing_key and queue else queue or source)
    attributes[MESSAGING_RABBITMQ_MESSAGE_DELIVERY_TAG] = delivery_tag
    attributes[MESSAGING_MESSAGE_BODY_SIZE] = body_size
    return attributes
