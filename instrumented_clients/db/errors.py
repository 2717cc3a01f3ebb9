"""The one place where SQL driver exceptions become :class:`ErrorCategory` values.

Works for SQLAlchemy's wrappers (``sqlalchemy.exc.DBAPIError`` with ``.orig`` and
``connection_invalidated``) and for raw DB-API exceptions alike, because ``with_db_retry`` and
``DatabaseConnectionRetry`` wrap plain driver calls. The decision is made, in this order, from:

1. a TLS certificate or host name that does not verify, wrapped however the driver wraps it
   (PyMySQL's ``OperationalError`` raised from the ``ssl`` error, or libpq's message) →
   ``CONFIGURATION``: waiting never heals it;
2. ``connection_invalidated`` on a SQLAlchemy error: the connection is gone → ``CONNECTION``;
3. the SQLSTATE (psycopg ``.sqlstate``, psycopg2 ``.pgcode``, mysql-connector ``.sqlstate``);
4. the MySQL/MariaDB error number (PyMySQL/mysqlclient ``.args[0]``, mysql-connector ``.errno``);
5. SQLite's result code (``sqlite_errorcode``; "database is locked" is ``LOCK_TIMEOUT``);
6. the message of errors that carry no code (libpq reports a failed *connect*, a wrong password
   included, as an ``OperationalError`` with no SQLSTATE);
7. the DB-API class (``IntegrityError``, ``ProgrammingError``, ...), then
   :func:`~instrumented_clients.resilience.errors.classify_exception`.

Exception tree of this package::

    ResilienceError
    └── DatabaseError
        ├── CommitOutcomeUnknownError   the connection was lost during COMMIT: it may have applied
        └── DatabaseUnavailableError    connect_with_retry(required=True) spent its attempts
"""

from __future__ import annotations

import re
from typing import Final

from instrumented_clients.redaction import redact_text
from instrumented_clients.resilience.errors import (
    ErrorCategory,
    ResilienceError,
    classify_exception,
    tls_verification_failure,
)

__all__ = [
    "CommitOutcomeUnknownError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "classify",
    "is_transient_db_error",
]

_C = ErrorCategory


class DatabaseError(ResilienceError):
    """Base class of the errors :mod:`instrumented_clients.db` raises itself."""


class CommitOutcomeUnknownError(DatabaseError):
    """The connection failed while COMMIT was in flight: the transaction may or may not be applied.

    It is rerun only when the caller said it is safe (``idempotent=True``); otherwise the caller
    must find out (e.g. look for the row by a natural key) before doing the work again.

    Attributes:
        idempotent: whether the caller declared the work safe to run twice (then it is retried).
        detail: why asking the server (PostgreSQL's COMMIT outcome resolution) did not settle it.
        __cause__: the driver's error.
    """

    def __init__(self, cause: BaseException, *, idempotent: bool = False,
                 detail: str | None = None) -> None:
        self.idempotent = idempotent
        self.detail = detail
        super().__init__(
            "connection lost during COMMIT: the transaction may or may not have been committed "
            f"({type(cause).__name__}: {redact_text(str(cause)).strip()[:300]}). "
            + (f"Asking the server did not settle it: {detail}. " if detail else "")
            + ("It is rerun: the caller declared it idempotent." if idempotent else
               "It is not rerun automatically; pass idempotent=True if running it twice is safe.")
        )


class DatabaseUnavailableError(DatabaseError):
    """``connect_with_retry(required=True)`` could not connect within its attempts."""


# -- SQLSTATE (PostgreSQL; MySQL reports some too) ------------------------------------------------

_SQLSTATE_EXACT: Final[dict[str, ErrorCategory]] = {
    "40001": _C.SERIALIZATION,   # serialization_failure
    "40P01": _C.DEADLOCK,        # deadlock_detected
    "40002": _C.INTEGRITY,       # transaction_integrity_constraint_violation
    "40003": _C.UNKNOWN,         # statement_completion_unknown: never guess
    "57P01": _C.CONNECTION,      # admin_shutdown (pg_terminate_backend, fast shutdown)
    "57P02": _C.CONNECTION,      # crash_shutdown
    "57P03": _C.CONNECTION,      # cannot_connect_now (starting up, recovering)
    "57P04": _C.CONFIGURATION,   # database_dropped: the session's database is gone for good
    "57014": _C.TIMEOUT,         # query_canceled (statement_timeout)
    "55P03": _C.LOCK_TIMEOUT,    # lock_not_available (lock_timeout, NOWAIT)
    "53300": _C.SERVER_BUSY,     # too_many_connections
    "42501": _C.PERMISSION,      # insufficient_privilege
    "3D000": _C.CONFIGURATION,   # invalid_catalog_name: the database does not exist
}

_SQLSTATE_CLASS: Final[dict[str, ErrorCategory]] = {
    "08": _C.CONNECTION,         # connection_exception
    "28": _C.AUTH,               # invalid_authorization_specification (wrong password)
    "42": _C.PROGRAMMING,        # syntax error or access rule violation
    "23": _C.INTEGRITY,          # integrity_constraint_violation
    "22": _C.PROGRAMMING,        # data_exception: bad input never heals by waiting
    "0A": _C.PROGRAMMING,        # feature_not_supported
    "25": _C.PROGRAMMING,        # invalid_transaction_state
    "26": _C.PROGRAMMING,        # invalid_sql_statement_name
    "34": _C.PROGRAMMING,        # invalid_cursor_name
    "3F": _C.PROGRAMMING,        # invalid_schema_name
    "53": _C.SERVER_BUSY,        # insufficient_resources
    "58": _C.CONNECTION,         # system_error (I/O error on the server)
}

# -- MySQL / MariaDB error numbers ----------------------------------------------------------------

_MYSQL_CODES: Final[dict[int, ErrorCategory]] = {
    1213: _C.DEADLOCK,           # ER_LOCK_DEADLOCK
    1205: _C.LOCK_TIMEOUT,       # ER_LOCK_WAIT_TIMEOUT (rolls back the statement only)
    1045: _C.AUTH,               # ER_ACCESS_DENIED_ERROR (wrong password)
    1698: _C.AUTH,               # ER_ACCESS_DENIED_NO_PASSWORD_ERROR
    1251: _C.AUTH,               # ER_NOT_SUPPORTED_AUTH_MODE
    1044: _C.PERMISSION,         # ER_DBACCESS_DENIED_ERROR
    1142: _C.PERMISSION,         # ER_TABLEACCESS_DENIED_ERROR
    1143: _C.PERMISSION,         # ER_COLUMNACCESS_DENIED_ERROR
    1227: _C.PERMISSION,         # ER_SPECIFIC_ACCESS_DENIED_ERROR
    1049: _C.CONFIGURATION,      # ER_BAD_DB_ERROR
    1290: _C.CONFIGURATION,      # ER_OPTION_PREVENTS_STATEMENT (--read-only)
    1040: _C.SERVER_BUSY,        # ER_CON_COUNT_ERROR (too many connections)
    1203: _C.SERVER_BUSY,        # ER_TOO_MANY_USER_CONNECTIONS
    1053: _C.CONNECTION,         # ER_SERVER_SHUTDOWN
    1152: _C.CONNECTION,         # ER_ABORTING_CONNECTION
    1153: _C.PROGRAMMING,        # ER_NET_PACKET_TOO_LARGE: resending the packet cannot help
    1158: _C.CONNECTION,         # ER_NET_READ_ERROR
    1159: _C.CONNECTION,         # ER_NET_READ_INTERRUPTED
    1160: _C.CONNECTION,         # ER_NET_ERROR_ON_WRITE
    1161: _C.CONNECTION,         # ER_NET_WRITE_INTERRUPTED
    1927: _C.CONNECTION,         # ER_CONNECTION_KILLED (MariaDB)
    4031: _C.CONNECTION,         # ER_CLIENT_INTERACTION_TIMEOUT (MySQL 8)
    2002: _C.CONNECTION,         # CR_CONNECTION_ERROR (socket)
    2003: _C.CONNECTION,         # CR_CONN_HOST_ERROR
    2006: _C.CONNECTION,         # CR_SERVER_GONE_ERROR
    2013: _C.CONNECTION,         # CR_SERVER_LOST
    2055: _C.CONNECTION,         # CR_SERVER_LOST_EXTENDED
    2005: _C.CONNECTION,         # CR_UNKNOWN_HOST (DNS can fail for a moment)
    2026: _C.CONNECTION,         # CR_SSL_CONNECTION_ERROR
    2027: _C.CONNECTION,         # CR_MALFORMED_PACKET
    2048: _C.CONNECTION,         # CR_INVALID_CONN_HANDLE
    1129: _C.CONFIGURATION,      # ER_HOST_IS_BLOCKED (needs FLUSH HOSTS)
    1130: _C.PERMISSION,         # ER_HOST_NOT_PRIVILEGED
    3024: _C.TIMEOUT,            # ER_QUERY_TIMEOUT (max_execution_time)
    1969: _C.TIMEOUT,            # ER_STATEMENT_TIMEOUT (MariaDB max_statement_time)
    1064: _C.PROGRAMMING,        # ER_PARSE_ERROR
    1146: _C.PROGRAMMING,        # ER_NO_SUCH_TABLE
    1054: _C.PROGRAMMING,        # ER_BAD_FIELD_ERROR
    1062: _C.INTEGRITY,          # ER_DUP_ENTRY
    1048: _C.INTEGRITY,          # ER_BAD_NULL_ERROR
    1216: _C.INTEGRITY,          # ER_NO_REFERENCED_ROW
    1217: _C.INTEGRITY,          # ER_ROW_IS_REFERENCED
    1451: _C.INTEGRITY,          # ER_ROW_IS_REFERENCED_2
    1452: _C.INTEGRITY,          # ER_NO_REFERENCED_ROW_2
    1557: _C.INTEGRITY,          # ER_FOREIGN_DUPLICATE_KEY
    4025: _C.INTEGRITY,          # ER_CONSTRAINT_FAILED (CHECK, MariaDB)
    3819: _C.INTEGRITY,          # ER_CHECK_CONSTRAINT_VIOLATED (MySQL)
}

# -- SQLite primary result codes ------------------------------------------------------------------

_SQLITE_CODES: Final[dict[int, ErrorCategory]] = {
    5: _C.LOCK_TIMEOUT,          # SQLITE_BUSY: "database is locked"
    6: _C.LOCK_TIMEOUT,          # SQLITE_LOCKED: "database table is locked"
    14: _C.CONFIGURATION,        # SQLITE_CANTOPEN
    19: _C.INTEGRITY,            # SQLITE_CONSTRAINT
    23: _C.PERMISSION,           # SQLITE_AUTH
}

# -- messages of errors without a code ------------------------------------------------------------

_MESSAGE_RULES: Final[tuple[tuple[re.Pattern[str], ErrorCategory], ...]] = (
    # libpq verifies certificates itself: only its message tells (sslmode=verify-ca/verify-full).
    (re.compile(r"certificate verify failed|server certificate for .* does not match host name"
                r"|root certificate file .* does not exist|could not read root certificate",
                re.I), _C.CONFIGURATION),
    (re.compile(r"password authentication failed|authentication failed|access denied for user"
                r"|no pg_hba\.conf entry|role \S+ does not exist|password is required"
                r"|invalid password", re.I), _C.AUTH),
    (re.compile(r"database \S+ does not exist|unknown database", re.I), _C.CONFIGURATION),
    (re.compile(r"database is locked|database table is locked", re.I), _C.LOCK_TIMEOUT),
    (re.compile(r"timeout expired|timed out", re.I), _C.TIMEOUT),
    (re.compile(r"connection refused|could not connect|connection failed|server closed the "
                r"connection|terminating connection|connection (is|was) (closed|lost|killed)"
                r"|consuming input failed|lost connection|gone away|connection reset"
                r"|broken pipe|ssl syscall error|connection to server .* failed|already closed"
                r"|no connection to the server|could not receive data|could not send data",
                re.I), _C.CONNECTION),
)

_DBAPI_CLASSES: Final[dict[str, ErrorCategory]] = {
    "IntegrityError": _C.INTEGRITY,
    "ProgrammingError": _C.PROGRAMMING,
    "DataError": _C.PROGRAMMING,
    "NotSupportedError": _C.PROGRAMMING,
    "InterfaceError": _C.CONNECTION,   # closed/unusable connection object
    "DisconnectionError": _C.CONNECTION,
    "TimeoutError": _C.TIMEOUT,        # sqlalchemy.exc.TimeoutError: the pool had no connection
    "ArgumentError": _C.CONFIGURATION,
    "NoSuchModuleError": _C.CONFIGURATION,
    "CompileError": _C.PROGRAMMING,
    "InvalidRequestError": _C.PROGRAMMING,
    "ResourceClosedError": _C.PROGRAMMING,
    "NoResultFound": _C.PROGRAMMING,
    "MultipleResultsFound": _C.PROGRAMMING,
}


def _sqlstate(exc: BaseException) -> str | None:
    for attribute in ("sqlstate", "pgcode"):
        value = getattr(exc, attribute, None)
        if isinstance(value, str) and len(value) == 5:
            return value.upper()
    return None


def _mysql_code(exc: BaseException) -> int | None:
    errno = getattr(exc, "errno", None)  # mysql-connector; OSError has one too, handled later
    if isinstance(errno, int) and not isinstance(exc, OSError):
        return errno
    args = exc.args
    if args and isinstance(args[0], int) and not isinstance(args[0], bool):
        return args[0]
    return None


def _by_code(exc: BaseException) -> ErrorCategory | None:
    if isinstance(exc, OSError):
        return None
    sqlite_code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(sqlite_code, int):
        return _SQLITE_CODES.get(sqlite_code & 0xFF)
    # MySQL's number before its SQLSTATE: a deadlock (1213) reports SQLSTATE 40001 and a lock
    # wait timeout (1205) the catch-all HY000.
    code = _mysql_code(exc)
    if code is not None:
        if code == 0 and type(exc).__name__ == "InterfaceError":
            return _C.CONNECTION  # PyMySQL: "(0, '')" on a closed connection
        category = _MYSQL_CODES.get(code)
        if category is not None:
            return category
    state = _sqlstate(exc)
    if state is not None:
        return _SQLSTATE_EXACT.get(state) or _SQLSTATE_CLASS.get(state[:2])
    return None


def _by_message(exc: BaseException) -> ErrorCategory | None:
    text = str(exc)
    for pattern, category in _MESSAGE_RULES:
        if pattern.search(text):
            return category
    return None


def _by_class(exc: BaseException) -> ErrorCategory | None:
    for cls in type(exc).__mro__:
        category = _DBAPI_CLASSES.get(cls.__name__)
        if category is not None:
            return category
    return None


def _is_dbapi_error(exc: BaseException) -> bool:
    return any(cls.__name__ in ("Error", "DatabaseError") and cls.__module__ != "builtins"
               for cls in type(exc).__mro__[1:])


def classify(exc: BaseException) -> ErrorCategory:
    """The category of a SQL error: SQLAlchemy's, a raw DB-API driver's, or the stdlib's.

    Transient (retried): ``CONNECTION`` (lost connection, 08xxx, 57P01, MySQL 2006/2013),
    ``SERIALIZATION`` (40001), ``DEADLOCK`` (40P01, MySQL 1213), ``LOCK_TIMEOUT`` (MySQL 1205,
    55P03, SQLite "database is locked"), ``TIMEOUT``, ``SERVER_BUSY``. Never retried: ``AUTH``
    (28xxx, MySQL 1045), ``PROGRAMMING`` (42xxx and other programming errors), ``INTEGRITY``
    (23xxx), ``PERMISSION``, ``CONFIGURATION`` and ``UNKNOWN``.
    """
    if isinstance(exc, CommitOutcomeUnknownError):
        return _C.CONNECTION if exc.idempotent else _C.UNKNOWN
    if tls_verification_failure(exc) is not None:
        return _C.CONFIGURATION
    if getattr(exc, "connection_invalidated", False):
        return _C.CONNECTION
    orig = getattr(exc, "orig", None)  # sqlalchemy.exc.DBAPIError wraps the driver's error
    if isinstance(orig, BaseException):
        # Only the driver's error is read: the wrapper's text holds the statement, whose words
        # must not decide anything.
        category = _classify_driver(orig)
        if category is not None:
            return category
        return _by_class(orig) or classify_exception(orig)
    category = _classify_driver(exc)
    if category is not None:
        return category
    return classify_exception(exc)


def _classify_driver(exc: BaseException) -> ErrorCategory | None:
    category = _by_code(exc)
    if category is not None:
        return category
    # An error with a code we do not map is left to its class: its message is free text, and
    # "lost connection" in the text of, say, a constraint error must not make it retryable.
    has_code = (_sqlstate(exc) is not None or _mysql_code(exc) is not None
                or isinstance(getattr(exc, "sqlite_errorcode", None), int))
    if not has_code and (_is_dbapi_error(exc) or type(exc).__name__ == "OperationalError"):
        category = _by_message(exc)
        if category is not None:
            return category
    category = _by_class(exc)
    if category is not None:
        return category
    if type(exc).__name__ == "OperationalError" and _sqlstate(exc) is None:
        # libpq/psycopg report transport failures as OperationalError without a SQLSTATE.
        module = type(exc).__module__
        if module.startswith(("psycopg", "pg8000", "asyncpg")):
            return _C.CONNECTION
    return None


def is_transient_db_error(exc: BaseException) -> bool:
    """Whether ``exc`` deserves another attempt (usable as ``RetryPolicy(retry_on=...)``)."""
    return classify(exc).is_transient
