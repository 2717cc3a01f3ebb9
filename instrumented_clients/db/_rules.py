"""The retry schedule, the breaker's failure rule and the commit rule of the SQL client."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Connection

from instrumented_clients.db.errors import CommitOutcomeUnknownError, classify
from instrumented_clients.resilience import (
    ConnectionTracker,
    ErrorCategory,
    RetryPolicy,
    classify_exception,
)
from instrumented_clients.settings import (
    DB_RETRY_BASE_DELAY,
    DB_RETRY_MAX_ATTEMPTS,
    DB_RETRY_MAX_DELAY,
)

__all__ = [
    "commit_failure",
    "commit_or_report_ambiguity",
    "counts_against_breaker",
    "db_policy_from_env",
    "default_db_policy",
    "note_failure",
    "rollback_quietly",
    "with_db_classifier",
]

_log = logging.getLogger("instrumented_clients.db")


def default_db_policy(
    max_attempts: int = DB_RETRY_MAX_ATTEMPTS.default,
    initial_delay: float = DB_RETRY_BASE_DELAY.default,
    max_delay: float = DB_RETRY_MAX_DELAY.default,
    **options: Any,
) -> RetryPolicy:
    """The database schedule: 4 attempts (~1, 2, 4 s between them), ×0.5–1.5 jitter.

    ``options`` are further :class:`RetryPolicy` fields (``clock``, ``jitter_mode``, ...).
    """
    options.setdefault("jitter", 0.5)
    options.setdefault("classifier", classify)
    return RetryPolicy(max_attempts=max_attempts, initial_delay=initial_delay,
                       max_delay=max_delay, **options)


def db_policy_from_env(environ: Mapping[str, str] | None = None, **options: Any) -> RetryPolicy:
    """:func:`default_db_policy` from ``DB_RETRY_MAX_ATTEMPTS`` (attempts, the first included),
    ``DB_RETRY_BASE_DELAY`` and ``DB_RETRY_MAX_DELAY``."""
    return default_db_policy(DB_RETRY_MAX_ATTEMPTS.read(environ),
                             DB_RETRY_BASE_DELAY.read(environ),
                             DB_RETRY_MAX_DELAY.read(environ), **options)


def with_db_classifier(policy: RetryPolicy) -> RetryPolicy:
    """The policy, with the SQL classifier when it was built with the generic one."""
    if policy.classifier is classify_exception:
        return policy.replace(classifier=classify)
    return policy


def counts_against_breaker(error: BaseException) -> bool:
    """Only errors that say something about the database's health trip the breaker."""
    if isinstance(error, CommitOutcomeUnknownError):
        return True  # the connection died: the database is unwell whatever the caller opted for
    return classify(error).is_transient


def rollback_quietly(connection: Connection) -> None:
    """Roll back after a failed attempt; a dead connection has nothing left to undo."""
    try:
        connection.rollback()
    except Exception:  # the connection may be gone; the server rolls back what it had
        _log.debug("rollback after a failed attempt failed", exc_info=True)


def commit_or_report_ambiguity(connection: Connection, idempotent: bool) -> None:
    """COMMIT; a connection lost while it was in flight becomes
    :class:`CommitOutcomeUnknownError` (retried only when ``idempotent``)."""
    try:
        connection.commit()
    except Exception as error:
        raise commit_failure(error, idempotent) from error


def commit_failure(error: Exception, idempotent: bool) -> Exception:
    """What a failed COMMIT raises (the COMMIT rule, for the sync and the asyncio client).

    A connection lost while COMMIT was in flight is ambiguous — the server may have committed —
    so it becomes :class:`CommitOutcomeUnknownError`, retried only when ``idempotent``. Any
    other error is raised as it is (e.g. 40001 at COMMIT: the server said it rolled back, so a
    rerun is safe).
    """
    if classify(error) is ErrorCategory.CONNECTION:
        return CommitOutcomeUnknownError(error, idempotent=idempotent)
    return error


def note_failure(tracker: ConnectionTracker, error: BaseException) -> None:
    """Record a failed attempt in the connection state: a lost connection is a reconnect
    attempt, another transient error a failure in a row; an error the server answered with
    shows it reachable and changes nothing."""
    cause = error.__cause__ if isinstance(error, CommitOutcomeUnknownError) else error
    category = classify(cause) if isinstance(cause, BaseException) else ErrorCategory.UNKNOWN
    if not category.is_transient or not isinstance(cause, BaseException):
        return
    if category is ErrorCategory.CONNECTION:
        tracker.failed(cause, category, attempt=True, reason=f"{category.value} error")
    else:
        tracker.record_failure(cause)
