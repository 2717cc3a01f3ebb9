"""Error classification and the library's own exceptions.

Exception tree::

    ResilienceError
    ├── CircuitOpenError            the breaker is open; nothing touched the network
    ├── RetryBudgetExceededError    (never raised: a denied retry re-raises the original error)
    ├── IllegalTransitionError      a state machine was asked for a transition it does not allow
    └── BufferFullError             the buffer is full and its policy is ``raise``

Every client maps its driver's exceptions to an :class:`ErrorCategory` at one seam (its own
``errors.py``); the retry loop and the breaker only ever ask the category.
"""

from __future__ import annotations

import enum
import ssl
from collections.abc import Callable
from typing import Final

__all__ = [
    "BufferFullError",
    "CircuitOpenError",
    "Classifier",
    "ErrorCategory",
    "IllegalTransitionError",
    "ResilienceError",
    "classify_exception",
    "is_transient",
    "is_transient_http_error",
    "tls_verification_failure",
]


class ErrorCategory(str, enum.Enum):
    """What kind of failure an exception is: a bounded set, used as the ``error_type`` label."""

    CONNECTION = "connection"
    TIMEOUT = "timeout"
    SERVER_BUSY = "server_busy"
    DEADLOCK = "deadlock"
    SERIALIZATION = "serialization"
    LOCK_TIMEOUT = "lock_timeout"
    AUTH = "auth"
    PERMISSION = "permission"
    NOT_FOUND = "not_found"
    CONFIGURATION = "configuration"
    PROGRAMMING = "programming"
    INTEGRITY = "integrity"
    CIRCUIT_OPEN = "circuit_open"
    UNKNOWN = "unknown"

    @property
    def is_transient(self) -> bool:
        """True when waiting and trying again can succeed."""
        return self in _TRANSIENT

    def __str__(self) -> str:
        return self.value


_TRANSIENT: Final = frozenset(
    {
        ErrorCategory.CONNECTION,
        ErrorCategory.TIMEOUT,
        ErrorCategory.SERVER_BUSY,
        ErrorCategory.DEADLOCK,
        ErrorCategory.SERIALIZATION,
        ErrorCategory.LOCK_TIMEOUT,
    }
)

Classifier = Callable[[BaseException], ErrorCategory]
"""Maps an exception to its category; clients chain theirs before :func:`classify_exception`."""


class ResilienceError(Exception):
    """Base class of the exceptions this library raises itself."""


class CircuitOpenError(ResilienceError):
    """Raised instead of calling a dependency whose circuit breaker is open.

    Attributes:
        remaining: seconds until the breaker lets a probe call through.
        name: the breaker's client name.
    """

    def __init__(self, name: str, remaining: float) -> None:
        self.name = name
        self.remaining = max(0.0, remaining)
        super().__init__(
            f"circuit breaker {name!r} is open; next probe allowed in {self.remaining:.1f}s"
        )


class IllegalTransitionError(ResilienceError):
    """A state machine was asked for a transition that its table does not allow."""

    def __init__(self, machine: str, from_state: object, to_state: object) -> None:
        self.from_state = from_state
        self.to_state = to_state
        super().__init__(f"{machine}: illegal transition {from_state} -> {to_state}")


class BufferFullError(ResilienceError):
    """The buffer is at capacity and its overflow policy is ``raise``; the item was not taken."""


# OSErrors that waiting never heals: a missing file, a refused permission, a certificate that does
# not verify. Checked before the generic OSError -> CONNECTION rule.
_PERMANENT_OS_ERRORS: Final[tuple[type[BaseException], ...]] = (
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)

_PROGRAMMING_ERRORS: Final[tuple[type[BaseException], ...]] = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    NotImplementedError,
    AssertionError,
    LookupError,
)


def tls_verification_failure(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate or hostname verification failure behind ``exc``, if there is one.

    Drivers wrap it in their own connection errors (redis-py's ``ConnectionError``, PyMySQL's
    ``OperationalError``, pika's connection workflow errors): it is looked for in ``exc``, the
    exceptions it was raised from or during (``__cause__``, ``__context__``), and the exceptions
    it carries (in ``args``, an ``exception`` attribute or an ``exceptions`` list). Waiting never
    heals it: a wrong CA, an expired certificate or a host name the certificate does not name is
    a configuration error.
    """
    pending = [exc]
    seen: set[int] = set()
    while pending and len(seen) < 32:  # bounded: chains can be long or cyclic
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        carried = [*current.args, getattr(current, "exception", None)]  # pika's phase errors
        grouped = getattr(current, "exceptions", None)  # ExceptionGroup, pika's workflow errors
        if isinstance(grouped, (list, tuple)):
            carried.extend(grouped)
        pending.extend(item for item in carried if isinstance(item, BaseException))
        pending.extend(linked for linked in (current.__cause__, current.__context__)
                       if linked is not None)
    return None


def classify_exception(exc: BaseException) -> ErrorCategory:
    """The driver-agnostic classification of the standard library's exceptions."""
    if isinstance(exc, CircuitOpenError):
        return ErrorCategory.CIRCUIT_OPEN
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ErrorCategory.CONFIGURATION
    if isinstance(exc, TimeoutError):
        return ErrorCategory.TIMEOUT
    if isinstance(exc, PermissionError):
        return ErrorCategory.PERMISSION
    if isinstance(exc, _PERMANENT_OS_ERRORS):
        return ErrorCategory.CONFIGURATION
    if isinstance(exc, (ConnectionError, OSError, EOFError)):
        return ErrorCategory.CONNECTION
    if isinstance(exc, _PROGRAMMING_ERRORS):
        return ErrorCategory.PROGRAMMING
    return ErrorCategory.UNKNOWN


def is_transient(exc: BaseException) -> bool:
    """The default retry predicate: the standard library's transient errors."""
    return classify_exception(exc).is_transient


_TRANSIENT_HTTP_STATUS: Final = frozenset({502, 503, 504})
# Class names of the connection and timeout errors of requests, httpx, aiohttp and urllib3; matched
# by name so that none of them has to be installed.
_TRANSIENT_HTTP_CLASS_NAMES: Final = frozenset(
    {
        "ConnectError",
        "ConnectTimeout",
        "ReadTimeout",
        "WriteTimeout",
        "PoolTimeout",
        "TimeoutException",
        "Timeout",
        "ReadError",
        "RemoteProtocolError",
        "ServerDisconnectedError",
        "ClientConnectorError",
        "ClientConnectionError",
        "NewConnectionError",
        "ProtocolError",
        "ChunkedEncodingError",
    }
)


def _status_of(exc: BaseException) -> int | None:
    for holder in (getattr(exc, "response", None), exc):
        if holder is None:
            continue
        for attribute in ("status_code", "status"):
            value = getattr(holder, attribute, None)
            if isinstance(value, int):
                return value
    return None


def is_transient_http_error(error: BaseException | int) -> bool:
    """Whether an HTTP failure is worth retrying.

    Accepts a status code or an exception. Transient: 502, 503, 504, connection errors and
    timeouts. Every other status (4xx included) is permanent.
    """
    if isinstance(error, bool):
        raise TypeError(f"error must be an exception or an HTTP status code, not {error!r}")
    if isinstance(error, int):
        return error in _TRANSIENT_HTTP_STATUS
    status = _status_of(error)
    if status is not None:
        return status in _TRANSIENT_HTTP_STATUS
    if any(cls.__name__ in _TRANSIENT_HTTP_CLASS_NAMES for cls in type(error).__mro__):
        return True
    return is_transient(error)
