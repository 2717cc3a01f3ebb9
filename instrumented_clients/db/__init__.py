"""SQL databases through SQLAlchemy: ``ResilientDatabase`` and the in-house helpers' names.

Needs the ``db`` extra (plus ``postgres`` for psycopg or ``mysql`` for PyMySQL).
"""

from typing import TYPE_CHECKING, Any

from instrumented_clients.db._rules import default_db_policy
from instrumented_clients.db.compat import (
    DatabaseConnectionRetry,
    get_db_connection_retry,
    with_db_retry,
)
from instrumented_clients.db.database import ResilientDatabase
from instrumented_clients.db.errors import (
    CommitOutcomeUnknownError,
    DatabaseError,
    DatabaseUnavailableError,
    classify,
    is_transient_db_error,
)
from instrumented_clients.db.result import ExecuteResult

if TYPE_CHECKING:
    from instrumented_clients.db.aio import AsyncResilientDatabase


def __getattr__(name: str) -> Any:
    # Imported on first use: it needs the asyncio extra (greenlet and the async drivers).
    if name == "AsyncResilientDatabase":
        from instrumented_clients.db.aio import AsyncResilientDatabase

        return AsyncResilientDatabase
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AsyncResilientDatabase",
    "CommitOutcomeUnknownError",
    "DatabaseConnectionRetry",
    "DatabaseError",
    "DatabaseUnavailableError",
    "ExecuteResult",
    "ResilientDatabase",
    "classify",
    "default_db_policy",
    "get_db_connection_retry",
    "is_transient_db_error",
    "with_db_retry",
]
