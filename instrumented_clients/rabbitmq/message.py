"""The publisher's message records and the result a publish future resolves to."""

from __future__ import annotations

import random
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any, Literal, NamedTuple

import pika

__all__ = ["OutgoingMessage", "PublishResult", "build_properties", "new_message_id",
           "properties_to_dict"]

ConfirmOutcome = Literal["ack", "nack", "returned", "timeout"]

_PROPERTY_FIELDS = ("content_type", "content_encoding", "headers", "delivery_mode", "priority",
                    "correlation_id", "reply_to", "expiration", "message_id", "timestamp",
                    "type", "user_id", "app_id", "cluster_id")


class PublishResult(NamedTuple):
    """How the broker settled a publish (a named tuple: cheap to make once per message).

    Attributes:
        outcome: ``ack`` (stored), ``nack`` (refused by the broker), ``returned`` (a mandatory
            message that matched no queue; never re-sent) or ``timeout`` (no confirm within
            ``confirm_timeout``).
        message_id: the message's id (generated when the caller set none).
        resent: True when the message was sent again after a reconnect (a consumer may see it
            twice: deduplicate on ``message_id``).
        reply_code, reply_text: the broker's reason for a ``returned`` message.
    """

    outcome: ConfirmOutcome
    message_id: str
    resent: bool = False
    reply_code: int | None = None
    reply_text: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "ack"


class OutgoingMessage:
    """One message on its way: what ``on_drop`` receives, plus the publisher's bookkeeping.

    Public attributes: ``exchange``, ``routing_key``, ``body``, ``properties``, ``mandatory``,
    ``message_id``.
    """

    __slots__ = ("body", "exchange", "future", "mandatory", "message_id", "origin", "properties",
                 "recorded", "resent", "returned", "routing_key", "sent_at", "span", "spool_id",
                 "started", "sync")

    def __init__(self, exchange: str, routing_key: str, body: bytes, properties: Any,
                 mandatory: bool, future: Future[PublishResult] | None, started: float,
                 sync: bool = False) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.body = body
        self.properties = properties
        self.mandatory = mandatory
        self.message_id: str = properties.message_id
        self.future = future
        self.started = started
        self.sync = sync
        self.sent_at = 0.0
        self.resent = False
        self.recorded = False  # the operation outcome is counted once per message
        self.returned: tuple[int, str] | None = None
        self.span: Any = None  # the current transmission's send span
        self.origin: Any = None  # the creation context injected into the headers, when traced
        self.spool_id: int | None = None

    def __repr__(self) -> str:
        return (f"OutgoingMessage(exchange={self.exchange!r}, routing_key={self.routing_key!r}, "
                f"message_id={self.message_id!r}, {len(self.body)} bytes)")


def new_message_id() -> str:
    """A random 128-bit id as 32 hex digits (uuid4's size). ``random`` rather than
    ``os.urandom``: no system call (which would release the GIL on the hot path); ``random``
    re-initialises its state in a forked child."""
    return f"{random.getrandbits(128):032x}"


def build_properties(
    properties: Any, headers: Mapping[str, Any] | None, persistent: bool,
    content_type: str | None = None,
) -> Any:
    """A copy of the caller's ``pika.BasicProperties`` (or a new one) with a ``message_id``
    (uuid4 hex when absent), the delivery mode and the extra headers filled in."""
    if properties is None:
        props = pika.BasicProperties()
    elif isinstance(properties, pika.BasicProperties):
        props = pika.BasicProperties(**{f: getattr(properties, f) for f in _PROPERTY_FIELDS})
    elif isinstance(properties, Mapping):
        unknown = set(properties) - set(_PROPERTY_FIELDS)
        if unknown:
            raise TypeError(f"properties has unknown fields {sorted(unknown)}: expected "
                            f"pika.BasicProperties fields {', '.join(_PROPERTY_FIELDS)}")
        props = pika.BasicProperties(**properties)
    else:
        raise TypeError(f"properties must be pika.BasicProperties, a dict or None, got "
                        f"{type(properties).__name__}")
    if not props.message_id:
        props.message_id = new_message_id()
    if props.delivery_mode is None:
        props.delivery_mode = 2 if persistent else 1
    if content_type is not None and props.content_type is None:
        props.content_type = content_type
    if headers:
        props.headers = {**(props.headers or {}), **headers}
    return props


def properties_to_dict(properties: Any) -> dict[str, Any]:
    """The set fields of a ``BasicProperties`` (for the spool)."""
    return {f: value for f in _PROPERTY_FIELDS if (value := getattr(properties, f)) is not None}
