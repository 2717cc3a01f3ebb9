"""The in-house retry helpers' database names, as thin layers over the real API.

Code written against those helpers ports with an import change::

    from instrumented_clients.compat import DatabaseConnectionRetry, with_db_retry

    retry = DatabaseConnectionRetry(max_retries=3)
    connection = retry.connect_with_retry(lambda: pymysql.connect(**config), "mysql-main")
    rows = retry.execute_with_retry(query, "fetch users")

``max_retries`` counts *retries*, as the in-house helpers did (3 → 4 attempts); the
``DB_RETRY_MAX_ATTEMPTS`` variable counts *attempts*, the first included. Raw driver errors
(psycopg, PyMySQL, sqlite3, mysql-connector) are classified by
:func:`instrumented_clients.db.errors.classify`: authentication, configuration and programming
errors are raised at once. The ``name`` arguments appear in log lines and error messages only;
metrics use the bounded ``client`` label and the operations ``connect`` / ``execute``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

from instrumented_clients.db._rules import default_db_policy
from instrumented_clients.db.errors import classify
from instrumented_clients.redaction import redact_text
from instrumented_clients.resilience import CircuitBreaker, Guard, RetryPolicy
from instrumented_clients.resilience.events import Instrumentation
from instrumented_clients.settings import (
    DB_RETRY_BASE_DELAY,
    DB_RETRY_MAX_ATTEMPTS,
    DB_RETRY_MAX_DELAY,
)

__all__ = ["DatabaseConnectionRetry", "get_db_connection_retry", "with_db_retry"]

P = ParamSpec("P")
T = TypeVar("T")
_log = logging.getLogger("instrumented_clients.db")


class DatabaseConnectionRetry:
    """The in-house helpers' retry handler for database connections and operations.

    Args:
        max_retries: retries after the first attempt (default 3).
        base_delay: seconds before the first retry (1.0).
        max_delay: cap on one delay (30.0).
        exponential_base: growth between delays (2.0).
        client: the ``client`` label (low cardinality).
        system: the ``system`` label (default ``mysql``, as the in-house helpers assumed).
        breaker: optional circuit breaker around every call.
        telemetry: where metrics and spans go (default: the package's).
        policy: use this policy instead of the four numbers above.
    """

    def __init__(
        self,
        max_retries: int = 3,
        base_delay: float = 1.0,
        max_delay: float = 30.0,
        exponential_base: float = 2.0,
        *,
        client: str = "database",
        system: str = "mysql",
        breaker: CircuitBreaker | None = None,
        telemetry: Instrumentation | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        self.policy = policy or default_db_policy(
            max_retries + 1, base_delay, max_delay, exponential_base=exponential_base)
        self.max_retries = self.policy.max_attempts - 1
        self.client = client
        self.system = system
        self._guards = {
            operation: Guard(self.policy, breaker=breaker, instrumentation=telemetry,
                             system=system, client=client, operation=operation,
                             span_attributes={"db.system.name": system})
            for operation in ("connect", "execute")
        }

    def guard(self, operation: str) -> Guard:
        """The Guard of ``connect`` or ``execute`` (what :func:`with_db_retry` wraps calls in)."""
        return self._guards[operation]

    def connect_with_retry(self, connect_fn: Callable[[], T], name: str = "database") -> T:
        """Call ``connect_fn`` until it returns a connection or the attempts are spent."""
        _log.info("Attempting to connect to %s", name)
        try:
            connection = self._guards["connect"].call(connect_fn)
        except Exception as error:
            _log.error("Failed to connect to %s (%s): %s", name, classify(error).value,
                       redact_text(str(error)))
            raise
        _log.info("Successfully connected to %s", name)
        return connection

    def execute_with_retry(self, fn: Callable[[], T], name: str = "operation") -> T:
        """Call ``fn`` and retry it on transient database errors."""
        try:
            return self._guards["execute"].call(fn)
        except Exception as error:
            _log.error("Database operation %s failed (%s): %s", name, classify(error).value,
                       redact_text(str(error)))
            raise


def with_db_retry(
    max_retries: int = 3,
    base_delay: float = 1.0,
    max_delay: float = 30.0,
    **options: Any,
) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """The in-house helpers' decorator: retry the function on transient database errors.

    ``options`` go to :class:`DatabaseConnectionRetry` (``client`` defaults to the function's
    qualified name, bounded by the code).
    """

    def decorate(fn: Callable[P, T]) -> Callable[P, T]:
        options.setdefault("client", getattr(fn, "__qualname__", "database"))
        handler = DatabaseConnectionRetry(max_retries, base_delay, max_delay, **options)
        guard = handler.guard("execute")

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return guard.call(fn, *args, **kwargs)

        wrapper.retry_handler = handler  # type: ignore[attr-defined]
        return wrapper

    return decorate


def get_db_connection_retry(
    max_retries: int | None = None,
    base_delay: float | None = None,
    max_delay: float | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    **options: Any,
) -> DatabaseConnectionRetry:
    """The in-house helpers' factory: arguments win, then ``DB_RETRY_MAX_ATTEMPTS`` (attempts, first
    included), ``DB_RETRY_BASE_DELAY`` and ``DB_RETRY_MAX_DELAY``, then 4 / 1 s / 30 s.

    Raises:
        ConfigError: naming a variable whose value does not parse.
    """
    if max_retries is None:
        max_retries = DB_RETRY_MAX_ATTEMPTS.read(environ) - 1
    if base_delay is None:
        base_delay = DB_RETRY_BASE_DELAY.read(environ)
    if max_delay is None:
        max_delay = DB_RETRY_MAX_DELAY.read(environ)
    return DatabaseConnectionRetry(max_retries, base_delay, max_delay, **options)
