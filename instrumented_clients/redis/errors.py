"""The one place where redis-py's exceptions are mapped to an :class:`ErrorCategory`.

redis-py's tree, and what each branch means here (note that several auth and "busy" errors are
subclasses of ``ConnectionError``, so the order of the checks matters)::

    RedisError
    ├── ConnectionError ─────────────── CONNECTION   transient
    │   ├── (from a TLS certificate or host name that does not verify) CONFIGURATION permanent
    │   ├── AuthenticationError ─────── AUTH         permanent
    │   ├── AuthorizationError ──────── AUTH         permanent
    │   ├── ExternalAuthProviderError ─ AUTH         permanent
    │   ├── BusyLoadingError ────────── SERVER_BUSY  transient (the server refused: not applied)
    │   └── MaxConnectionsError ─────── SERVER_BUSY  transient (the pool is full: nothing sent)
    ├── TimeoutError ────────────────── TIMEOUT      transient
    ├── InvalidResponse ─────────────── CONNECTION   transient (protocol desync: the socket is gone)
    ├── ResponseError ───────────────── PROGRAMMING  permanent (the server answered "no")
    │   ├── NoPermissionError ───────── AUTH         permanent (ACL)
    │   ├── ReadOnlyError ───────────── CONFIGURATION permanent (writing to a replica; behind
    │   │                               Sentinel redis-py raises it as a ConnectionError, which
    │   │                               is retried: refused, so not applied)
    │   ├── OutOfMemoryError ────────── CONFIGURATION permanent (maxmemory reached)
    │   ├── TryAgainError ───────────── SERVER_BUSY  transient (the server refused: not applied)
    │   └── ClusterDownError, MasterDownError ── SERVER_BUSY transient (refused: not applied)
    ├── ClusterError ────────────────── SERVER_BUSY  transient (RedisCluster's "TTL exhausted":
    │                                                every try redirected or refused, none ran)
    ├── WatchError ──────────────────── UNKNOWN      never retried here: the caller's
    │                                                ``transaction()`` loop re-runs its function
    ├── DataError, PubSubError, LockError ── PROGRAMMING permanent
    └── StaleConnectionError (ours) ─── CONNECTION   transient; nothing was sent

Anything else falls back to :func:`~instrumented_clients.resilience.classify_exception`
(``ConnectionRefusedError`` and friends are CONNECTION, ``ValueError`` is PROGRAMMING, ...).

Besides the category, a failure has a *phase*, which decides whether a write may be retried:
an error raised while connecting, authenticating or health-checking a connection — before the
command's first byte went to the socket — is marked *unsent* by
:mod:`instrumented_clients.redis.connection` (:func:`was_unsent`). A failure after sending is
ambiguous: the server may have applied the command. See :mod:`instrumented_clients.redis.client`
for the rule built on this.
"""

from __future__ import annotations

import contextlib
from typing import Final

from redis import exceptions as rx

from instrumented_clients.resilience.errors import (
    ErrorCategory,
    classify_exception,
    tls_verification_failure,
)

__all__ = [
    "StaleConnectionError",
    "classify",
    "is_demoted_primary",
    "is_refused_by_server",
    "mark_unsent",
    "was_unsent",
]

_UNSENT_ATTRIBUTE: Final = "_instrumented_clients_unsent"


class StaleConnectionError(rx.RedisError):
    """A pooled connection was found dead when it was taken from the pool; nothing was sent.

    redis-py replaces such a connection silently inside ``ConnectionPool.get_connection``. Under
    :class:`~instrumented_clients.redis.ResilientRedis` the attempt fails with this error instead,
    so that the retry is counted, and the next attempt connects afresh. It deliberately does not
    derive from redis-py's ``ConnectionError``, which the pool would catch and heal unseen.
    """


_AUTH: Final[tuple[type[BaseException], ...]] = (
    rx.AuthenticationError,
    rx.AuthorizationError,
    rx.ExternalAuthProviderError,
    rx.NoPermissionError,
    rx.AuthenticationWrongNumberOfArgsError,
)
# The server refused the command outright (it did not run it): safe to retry, writes included.
_REFUSED_BY_SERVER: Final[tuple[type[BaseException], ...]] = (
    rx.BusyLoadingError,
    rx.TryAgainError,
    rx.ClusterDownError,  # MasterDownError derives from it
    # RedisCluster's "TTL exhausted": every try of the command was redirected (MOVED, ASK) or
    # refused (TRYAGAIN), so no node ran it.
    rx.ClusterError,
)
_CONFIGURATION: Final[tuple[type[BaseException], ...]] = (rx.ReadOnlyError, rx.OutOfMemoryError)
_PROGRAMMING: Final[tuple[type[BaseException], ...]] = (
    rx.ResponseError,
    rx.DataError,
    rx.PubSubError,
    rx.LockError,
)


def classify(exc: BaseException) -> ErrorCategory:
    """The category of a redis-py (or standard library) exception.

    Pass it as ``RetryPolicy(classifier=classify)``; :class:`ResilientRedis` does so itself.
    """
    if isinstance(exc, rx.RedisError):
        if isinstance(exc, _AUTH):  # before ConnectionError: AuthenticationError derives from it
            return ErrorCategory.AUTH
        if isinstance(exc, (*_REFUSED_BY_SERVER, rx.MaxConnectionsError)):
            return ErrorCategory.SERVER_BUSY
        if isinstance(exc, (rx.ConnectionError, rx.InvalidResponse, StaleConnectionError)):
            # redis-py raises a certificate that does not verify as a ConnectionError.
            if tls_verification_failure(exc) is not None:
                return ErrorCategory.CONFIGURATION
            return ErrorCategory.CONNECTION
        if isinstance(exc, rx.TimeoutError):
            return ErrorCategory.TIMEOUT
        if isinstance(exc, _CONFIGURATION):
            return ErrorCategory.CONFIGURATION
        if isinstance(exc, _PROGRAMMING):
            return ErrorCategory.PROGRAMMING
        return ErrorCategory.UNKNOWN  # WatchError and the rest: the caller decides
    return classify_exception(exc)


def mark_unsent(exc: BaseException) -> BaseException:
    """Record that ``exc`` was raised before the command was handed to the socket."""
    # An exception type with __slots__ cannot be marked: it stays "maybe sent", the safe side.
    with contextlib.suppress(AttributeError):
        setattr(exc, _UNSENT_ATTRIBUTE, True)
    return exc


def was_unsent(exc: BaseException) -> bool:
    """Whether ``exc`` provably happened before the command was sent (see :func:`mark_unsent`)."""
    return getattr(exc, _UNSENT_ATTRIBUTE, False) is True


def is_refused_by_server(exc: BaseException) -> bool:
    """Whether the server answered with a refusal that means the command did not run
    (``LOADING``, ``TRYAGAIN``, ``CLUSTERDOWN``, ``MASTERDOWN``, or ``READONLY`` from a primary
    demoted by a failover, see :func:`is_demoted_primary`)."""
    return isinstance(exc, _REFUSED_BY_SERVER) or is_demoted_primary(exc)


def is_demoted_primary(exc: BaseException) -> bool:
    """Whether ``exc`` is a ``READONLY`` refusal from a server that is no longer the primary.

    Behind Sentinel, redis-py's ``SentinelManagedConnection`` turns the ``ReadOnlyError`` into
    ``ConnectionError("The previous master is now a slave")``, raised while handling it: the
    refusal is then the error's ``__context__``. A replica refuses a write before running it, so
    neither shape was applied.
    """
    if isinstance(exc, rx.ReadOnlyError):
        return True
    return isinstance(exc, rx.ConnectionError) and isinstance(exc.__context__, rx.ReadOnlyError)
