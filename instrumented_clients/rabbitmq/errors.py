"""The one seam where pika's exceptions become :class:`ErrorCategory` values.

Exception tree of this package (all under the core's ``ResilienceError``)::

    ResilienceError
    └── RabbitMQError
        ├── BrokerUnavailableError      required=True and the connect policy is spent
        ├── NotConnectedError           a blocking publish found no usable channel (transient)
        ├── PublisherClosedError        publish() after close()
        ├── MessageDroppedError         the buffer dropped the message (overflow/expired/shutdown)
        └── PublishError                the broker refused a publish
            ├── PublishNackedError      basic.nack (transient: the blocking form retries it)
            ├── PublishTimeoutError     no confirm within confirm_timeout (transient)
            ├── ConnectionLostError     lost with the message unconfirmed (transient)
            ├── UnroutableError         basic.return of a mandatory message (permanent)
            └── ChannelClosedError      channel closed by the broker; reply_code tells (403/404/406
                                        permanent, 320/541 transient)

Classification: pika connection errors, lost streams, heartbeat timeouts, 320
(connection forced) and 541 (internal error) are transient; a channel closed with 403, 404 or 406
is permanent, and so is an authentication failure (wrong password, ``ACCESS_REFUSED`` at connect)
or a TLS certificate or host name that does not verify (a configuration error).
"""

from __future__ import annotations

import re
from typing import Final

from pika import exceptions as pika_errors

from instrumented_clients.redaction import describe_error
from instrumented_clients.resilience.errors import (
    ErrorCategory,
    ResilienceError,
    classify_exception,
    tls_verification_failure,
)

__all__ = [
    "BrokerUnavailableError",
    "ChannelClosedError",
    "ConnectionLostError",
    "MessageDroppedError",
    "NotConnectedError",
    "PublishError",
    "PublishNackedError",
    "PublishTimeoutError",
    "PublisherClosedError",
    "RabbitMQError",
    "UnroutableError",
    "classify",
    "describe_error",
    "is_transient_rmq_error",
    "reply_code_category",
]

# AMQP reply codes -> category. 320 CONNECTION_FORCED (broker shutdown, node failover) and
# 541 INTERNAL_ERROR heal by reconnecting; the rest are a caller's or an operator's mistake.
_REPLY_CODES: Final[dict[int, ErrorCategory]] = {
    311: ErrorCategory.PROGRAMMING,     # content too large
    312: ErrorCategory.NOT_FOUND,       # no route (basic.return)
    313: ErrorCategory.CONFIGURATION,   # no consumers (immediate)
    320: ErrorCategory.CONNECTION,      # connection forced
    402: ErrorCategory.CONFIGURATION,   # invalid path (vhost)
    403: ErrorCategory.PERMISSION,      # access refused
    404: ErrorCategory.NOT_FOUND,       # not found (exchange, queue)
    405: ErrorCategory.CONFIGURATION,   # resource locked (exclusive queue of another connection)
    406: ErrorCategory.CONFIGURATION,   # precondition failed (declare with other arguments)
    501: ErrorCategory.PROGRAMMING,     # frame error
    502: ErrorCategory.PROGRAMMING,     # syntax error
    503: ErrorCategory.PROGRAMMING,     # command invalid
    504: ErrorCategory.PROGRAMMING,     # channel error
    505: ErrorCategory.PROGRAMMING,     # unexpected frame
    506: ErrorCategory.SERVER_BUSY,     # resource error (channel_max, memory)
    530: ErrorCategory.PERMISSION,      # not allowed (vhost access)
    540: ErrorCategory.PROGRAMMING,     # not implemented
    541: ErrorCategory.CONNECTION,      # internal error
}

_AUTH_MARKERS: Final = re.compile(r"ACCESS_REFUSED|\b403\b|authenticat|PLAIN login refused",
                                  re.IGNORECASE)
_MISSING_EXCHANGE: Final = re.compile(r"no exchange '(?P<name>[^']*)'")


class RabbitMQError(ResilienceError):
    """Base class of the RabbitMQ client's own exceptions."""


class BrokerUnavailableError(RabbitMQError):
    """``required=True`` and no broker URL accepted a connection within the connect policy."""


class NotConnectedError(RabbitMQError, ConnectionError):
    """No usable connection right now (a ``ConnectionError``, so it is transient)."""


class PublisherClosedError(RabbitMQError):
    """The publisher is closed (or closing) and takes no more messages."""


class MessageDroppedError(RabbitMQError):
    """The message left the buffer without being sent; ``reason`` is the drop reason."""

    def __init__(self, reason: str, message_id: str | None) -> None:
        self.reason = reason
        self.message_id = message_id
        super().__init__(f"message {message_id} dropped from the buffer ({reason})")


class PublishError(RabbitMQError):
    """The broker did not accept a publish. ``message_id`` names the message."""

    category: ErrorCategory = ErrorCategory.UNKNOWN

    def __init__(self, text: str, message_id: str | None = None) -> None:
        self.message_id = message_id
        super().__init__(text)


class PublishNackedError(PublishError):
    """The broker answered basic.nack (an internal error on its side: worth another try)."""

    category = ErrorCategory.SERVER_BUSY


class PublishTimeoutError(PublishError, TimeoutError):
    """No confirm arrived within ``confirm_timeout``."""

    category = ErrorCategory.TIMEOUT


class ConnectionLostError(PublishError, ConnectionError):
    """The connection dropped while the message was unconfirmed (blocking form only: the
    non-blocking form re-sends it after the reconnect instead)."""

    category = ErrorCategory.CONNECTION


class UnroutableError(PublishError):
    """A ``mandatory`` message matched no queue and came back (basic.return). Never re-sent."""

    category = ErrorCategory.NOT_FOUND


class ChannelClosedError(PublishError):
    """The broker closed the publishing channel because of this message (e.g. 404 for a missing
    exchange). ``reply_code`` decides whether it is transient."""

    def __init__(self, reply_code: int, reply_text: str, message_id: str | None = None) -> None:
        self.reply_code = reply_code
        self.reply_text = reply_text
        self.category = reply_code_category(reply_code)
        super().__init__(f"channel closed by the broker: ({reply_code}) {reply_text}", message_id)


def reply_code_category(reply_code: int) -> ErrorCategory:
    """The category of an AMQP reply code (unknown codes are treated as connection trouble)."""
    return _REPLY_CODES.get(reply_code, ErrorCategory.CONNECTION)


def missing_exchange(reply_text: str) -> str | None:
    """The exchange named by a ``NOT_FOUND - no exchange 'x' in vhost '/'`` close, if any."""
    match = _MISSING_EXCHANGE.search(reply_text)
    return match["name"] if match else None


def classify(exc: BaseException) -> ErrorCategory:
    """Map a pika (or this package's) exception to an :class:`ErrorCategory`.

    Falls back to :func:`~instrumented_clients.resilience.errors.classify_exception` for the
    standard library's exceptions (``OSError``, ``TimeoutError``, ...).
    """
    if isinstance(exc, PublishError):
        return exc.category
    if tls_verification_failure(exc) is not None:
        # pika carries it inside its connection workflow errors, which are otherwise transient.
        return ErrorCategory.CONFIGURATION
    if isinstance(exc, (BrokerUnavailableError, NotConnectedError)):
        return ErrorCategory.CONNECTION
    if isinstance(exc, (PublisherClosedError, MessageDroppedError)):
        return ErrorCategory.CONFIGURATION
    if isinstance(exc, pika_errors.AuthenticationError):
        return ErrorCategory.AUTH
    if isinstance(exc, pika_errors.ProbableAuthenticationError):
        # pika guesses "authentication" for any close during the handshake, a cut stream
        # included; only the broker's own ACCESS_REFUSED is really a wrong password.
        return ErrorCategory.AUTH if _AUTH_MARKERS.search(str(exc)) else ErrorCategory.CONNECTION
    if isinstance(exc, pika_errors.ProbableAccessDeniedError):
        text = str(exc)
        if "StreamLostError" in text:
            return ErrorCategory.CONNECTION
        return ErrorCategory.PERMISSION
    if isinstance(exc, pika_errors.ConnectionClosedByBroker):
        if exc.reply_code == 403:
            return ErrorCategory.AUTH  # ACCESS_REFUSED while opening: the credentials
        return reply_code_category(exc.reply_code)
    if isinstance(exc, pika_errors.ChannelClosedByBroker):
        return reply_code_category(exc.reply_code)
    if isinstance(exc, pika_errors.AMQPHeartbeatTimeout):
        return ErrorCategory.TIMEOUT
    if isinstance(exc, pika_errors.ConnectionBlockedTimeout):
        return ErrorCategory.SERVER_BUSY
    if isinstance(exc, pika_errors.IncompatibleProtocolError):
        # Usually a TCP peer that closed during the protocol header: a restarting broker.
        return ErrorCategory.CONNECTION
    if isinstance(exc, pika_errors.UnroutableError):
        return ErrorCategory.NOT_FOUND
    if isinstance(exc, pika_errors.NackError):
        return ErrorCategory.SERVER_BUSY
    if isinstance(exc, (pika_errors.AMQPConnectionError, pika_errors.ChannelWrongStateError,
                        pika_errors.ChannelClosedByClient, pika_errors.ConsumerCancelled)):
        return ErrorCategory.CONNECTION
    if isinstance(exc, pika_errors.ChannelClosed):
        return reply_code_category(exc.reply_code)
    if isinstance(exc, (pika_errors.ProtocolSyntaxError, pika_errors.DuplicateConsumerTag,
                        pika_errors.ReentrancyError, pika_errors.ChannelError)):
        return ErrorCategory.PROGRAMMING
    return classify_exception(exc)


def is_transient_rmq_error(exc: BaseException) -> bool:
    """True when waiting and trying again can succeed.

    Usable as ``RetryConfig(exception_filter=is_transient_rmq_error)``.
    """
    return classify(exc).is_transient
