"""The OpenTelemetry semantic conventions our spans follow: names from the pinned
``opentelemetry-semantic-conventions`` package, the schema URL of that version, and the few
naming rules (span names, RabbitMQ destinations) built on them.

The messaging conventions are still "development" status, so their constants live in the
package's ``_incubating`` module; they are re-exported here. The stable database ones are
imported from ``opentelemetry.semconv.attributes.db_attributes`` where they are used.
"""

from __future__ import annotations

from importlib import metadata

from opentelemetry.semconv._incubating.attributes.messaging_attributes import (
    MESSAGING_DESTINATION_NAME,
    MESSAGING_MESSAGE_BODY_SIZE,
    MESSAGING_MESSAGE_ID,
    MESSAGING_OPERATION_NAME,
    MESSAGING_OPERATION_TYPE,
    MESSAGING_RABBITMQ_DESTINATION_ROUTING_KEY,
    MESSAGING_RABBITMQ_MESSAGE_DELIVERY_TAG,
    MESSAGING_SYSTEM,
    MessagingOperationTypeValues,
)
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT
from opentelemetry.semconv.schemas import Schemas

__all__ = [
    "CREATE",
    "ERROR_CATEGORY",
    "ERROR_TYPE",
    "MESSAGING_DESTINATION_NAME",
    "MESSAGING_MESSAGE_BODY_SIZE",
    "MESSAGING_MESSAGE_ID",
    "MESSAGING_OPERATION_NAME",
    "MESSAGING_OPERATION_TYPE",
    "MESSAGING_RABBITMQ_DESTINATION_ROUTING_KEY",
    "MESSAGING_RABBITMQ_MESSAGE_DELIVERY_TAG",
    "MESSAGING_SYSTEM",
    "OWN_PREFIX",
    "PACKAGE_VERSION",
    "PROCESS",
    "SCHEMA_URL",
    "SEND",
    "SERVER_ADDRESS",
    "SERVER_PORT",
    "rabbitmq_destination",
    "rabbitmq_span_name",
]

# The newest schema the pinned conventions package knows: the version of the names we emit.
SCHEMA_URL: str = list(Schemas)[-1].value

try:
    PACKAGE_VERSION: str = metadata.version("instrumented-clients")
except metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    PACKAGE_VERSION = "0+unknown"

# Attributes the conventions do not define live under our own namespace, never under one that
# OpenTelemetry owns (``messaging.rabbitmq.*``, ``db.*``).
OWN_PREFIX = "resilient_client."
ERROR_CATEGORY = "resilient_client.error.category"  # the classifier's bounded category

CREATE = MessagingOperationTypeValues.CREATE.value
SEND = MessagingOperationTypeValues.SEND.value
PROCESS = MessagingOperationTypeValues.PROCESS.value

_DEFAULT_EXCHANGE = "amq.default"


def rabbitmq_destination(exchange: str, routing_key: str) -> str:
    """``messaging.destination.name`` for RabbitMQ: ``{exchange}:{routing_key}`` when both are
    non-empty, the one that is otherwise, ``amq.default`` when neither is."""
    if exchange and routing_key:
        return f"{exchange}:{routing_key}"
    return exchange or routing_key or _DEFAULT_EXCHANGE


def rabbitmq_span_name(operation: str, exchange: str) -> str:
    """``{operation} {exchange}`` (``amq.default`` for the default exchange): the exchange is
    the low-cardinality part of the destination; a routing key can be anything (an order id)
    and never goes into a span name."""
    return f"{operation} {exchange or _DEFAULT_EXCHANGE}"
