"""PostgreSQL: find out whether a COMMIT whose reply was lost took effect, instead of guessing.

``transaction(fn)`` learns its transaction id in the round trip that opens it: the client sends
``BEGIN ...; SELECT pg_current_xact_id()`` where psycopg would send ``BEGIN`` alone, so resolution
costs no extra round trip (and assigns an id at once, which a writing transaction takes anyway;
``read_only=True`` skips it). Other work (``execute``) reads
``pg_current_xact_id_if_assigned()`` before COMMIT — NULL when nothing was written. Once per
connection the client also reads the backend's pid and its server's WAL timeline. When the
connection is lost with COMMIT in flight, a *new* connection asks ``pg_xact_status(xid)``:

- ``committed``: the work is done; its result is returned and it is not run again;
- ``aborted``: nothing was applied; the attempt fails with the connection error and is rerun as
  for any transient error;
- ``in progress``: the old backend has not noticed yet (or waits for a synchronous standby); it
  is terminated with ``pg_terminate_backend`` — only while it still holds that transaction — and
  the question is asked again, until ``timeout``;
- NULL (the id is too old to tell), an error, the answer of a server on another timeline (a
  promoted standby may never have seen the transaction, or may reuse its id), or the timeout:
  :class:`CommitOutcomeUnknownError`, as without resolution.

The asyncio client's :class:`AsyncCommitOutcomeResolver` follows the same rules (one sans-I/O
sequence of questions, :func:`_resolution`) for psycopg's async mode and asyncpg: it takes the id
before COMMIT (one round trip, as ``execute`` does) and asks over a new connection of the same
driver, waiting without blocking the event loop.

MySQL and MariaDB have no such question (XA RECOVER covers only XA transactions): their lost
COMMITs raise :class:`CommitOutcomeUnknownError` and are rerun only when declared idempotent.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import NullPool

from instrumented_clients.db._rules import rollback_quietly
from instrumented_clients.db.errors import CommitOutcomeUnknownError, classify
from instrumented_clients.resilience import ErrorCategory
from instrumented_clients.resilience.clock import Clock

__all__ = [
    "AsyncCommitOutcomeResolver",
    "CommitMarker",
    "CommitOutcome",
    "CommitOutcomeResolver",
    "open_transaction",
]

_log = logging.getLogger("instrumented_clients.db")

_XID_SQL: Final = "SELECT pg_current_xact_id_if_assigned()::text"
# The timeline of the server's WAL; NULL on a standby, where nothing can commit anyway.
_TIMELINE_SQL: Final = (
    "CASE WHEN pg_is_in_recovery() THEN NULL "
    "ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END")
_SESSION_SQL: Final = f"SELECT pg_backend_pid(), {_TIMELINE_SQL}"
_STATUS_SQL: Final = f"SELECT pg_xact_status(%s::text::xid8), {_TIMELINE_SQL}"
# The pid alone could by now belong to another session: terminate it only while it holds our xid.
_TERMINATE_SQL: Final = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE pid = %s AND backend_xid = %s::text::xid")
# The same questions with named parameters, for any driver through SQLAlchemy (asyncio client).
_STATUS_TEXT: Final = text(
    f"SELECT pg_xact_status(CAST(CAST(:xid AS text) AS xid8)), {_TIMELINE_SQL}")
_TERMINATE_TEXT: Final = text(
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE pid = :pid AND backend_xid = CAST(CAST(:xid AS text) AS xid)")
_SESSION_KEY: Final = "instrumented_clients.pg_session"
_MIN_SERVER: Final = (13,)  # pg_current_xact_id_if_assigned and pg_xact_status(xid8)


def _first_row(connection: Connection, sql: str) -> tuple[str | None, ...]:
    """The first row of ``sql``, as text, inside the connection's open transaction.

    psycopg 3's libpq connection runs it in one C call: this is on every writing transaction's
    path, and the cursor machinery would cost more client CPU than the round trip itself.
    """
    dbapi: Any = connection.connection.dbapi_connection
    pgconn = getattr(dbapi, "pgconn", None)
    if pgconn is None:  # another driver: through its cursor
        cursor = dbapi.cursor()
        try:
            cursor.execute(sql)
            row = cursor.fetchone()
        finally:
            cursor.close()
        return tuple(None if value is None else str(value) for value in row)
    result = _exec_rows(pgconn, sql.encode())
    values = (result.get_value(0, column) for column in range(result.nfields))
    return tuple(None if value is None else bytes(value).decode() for value in values)


def _exec_rows(pgconn: Any, sql: bytes, *, rows: bool = True) -> Any:
    """Run ``sql`` on psycopg's libpq connection in one C call; its rows (``rows=False``: a
    command's result), or the driver's ``OperationalError`` (what a lost connection raises
    everywhere else)."""
    from psycopg import OperationalError, pq

    result = pgconn.exec_(sql)
    expected = pq.ExecStatus.TUPLES_OK if rows else pq.ExecStatus.COMMAND_OK
    if result.status != expected:
        message = (result.error_message or pgconn.error_message).decode(errors="replace")
        raise OperationalError(message.strip() or "the connection is lost")
    return result


def _begin_statement(dbapi: Any) -> bytes:
    """The ``BEGIN`` psycopg would send, from the connection's public settings."""
    parts = [b"BEGIN"]
    if dbapi.isolation_level is not None:
        parts += [b"ISOLATION LEVEL", dbapi.isolation_level.name.replace("_", " ").encode()]
    if dbapi.read_only is not None:
        parts.append(b"READ ONLY" if dbapi.read_only else b"READ WRITE")
    if dbapi.deferrable is not None:
        parts.append(b"DEFERRABLE" if dbapi.deferrable else b"NOT DEFERRABLE")
    return b" ".join(parts)


def open_transaction(connection: Connection) -> bool:
    """Send the ``BEGIN`` psycopg would send with the first statement, now, so that it is the
    checkout's first round trip and a dead pooled connection fails there, before any of the
    caller's work; False (nothing sent) where psycopg is not underneath or no BEGIN is due."""
    dbapi: Any = connection.connection.dbapi_connection
    pgconn = getattr(dbapi, "pgconn", None)
    if pgconn is None or dbapi.autocommit:
        return False
    from psycopg import pq

    if pgconn.transaction_status != pq.TransactionStatus.IDLE:
        return False
    _exec_rows(pgconn, _begin_statement(dbapi), rows=False)
    return True


class CommitOutcome(str, enum.Enum):
    COMMITTED = "committed"
    ABORTED = "aborted"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class CommitMarker:
    """What identifies a transaction after its connection is gone."""

    xid: int | None  # None: no id was assigned, the work wrote nothing
    backend_pid: int
    timeline: str | None  # None: not known (a standby), so no answer can be trusted


_E = TypeVar("_E", Engine, AsyncEngine)


class _ResolverBase(Generic[_E]):
    """What both resolvers hold: the engine, the clock, the timeout and the server check."""

    def __init__(self, engine: _E, clock: Clock, timeout: float = 5.0) -> None:
        if timeout <= 0:
            raise ValueError(f"commit resolution timeout must be > 0 seconds, got {timeout!r}")
        self._engine: _E = engine
        self._clock = clock
        self.timeout = timeout
        self._supported: bool | None = None  # decided by the server's version at first use

    def _is_supported(self, connection: Connection | AsyncConnection) -> bool:
        if self._supported is None:
            version = connection.dialect.server_version_info or ()
            self._supported = tuple(version) >= _MIN_SERVER
        return self._supported


class CommitOutcomeResolver(_ResolverBase[Engine]):
    """COMMIT with resolution of a lost reply, for one PostgreSQL engine.

    Args:
        engine: the client's engine; the question goes over a new connection made from its URL
            (libpq multi-host URLs included), never over a pooled one.
        clock: sleeps between questions while the transaction is still in progress.
        timeout: how long to keep asking before giving up (UNKNOWN).
    """

    # -- before COMMIT ----------------------------------------------------------------------------

    def _session(self, connection: Connection) -> tuple[str | None, ...]:
        """The backend pid and timeline, read once per pooled connection."""
        info = connection.connection.info
        session: Any = info.get(_SESSION_KEY)
        if session is None:
            session = _first_row(connection, _SESSION_SQL)
            if session[1] is not None:  # a standby's answer would go stale on promotion
                info[_SESSION_KEY] = session
        return tuple(session)

    def begin(self, connection: Connection) -> CommitMarker | None:
        """Open the transaction and take its id in one round trip (psycopg 3 on a primary).

        Call after the isolation level is set and before the first statement: psycopg then finds
        the transaction open and sends no ``BEGIN`` of its own. Returns the marker, for
        :meth:`commit`; None where this does nothing (then :meth:`mark` asks before COMMIT).
        """
        dbapi: Any = connection.connection.dbapi_connection
        pgconn = getattr(dbapi, "pgconn", None)
        if pgconn is None or dbapi.autocommit or not self._is_supported(connection):
            return None
        from psycopg import pq

        if pgconn.transaction_status != pq.TransactionStatus.IDLE:
            return None
        session = self._session(connection)
        if session[1] is None:
            return None  # a standby assigns no transaction ids
        result = _exec_rows(pgconn,
                            _begin_statement(dbapi) + b"; SELECT pg_current_xact_id()::text")
        return CommitMarker(int(bytes(result.get_value(0, 0) or b"0").decode()),
                            int(session[0] or 0), session[1])

    def mark(self, connection: Connection) -> CommitMarker | None:
        """The transaction's id (one round trip), backend pid and timeline."""
        if not self._is_supported(connection):
            return None
        session = self._session(connection)
        text = _first_row(connection, _XID_SQL)[0]
        return CommitMarker(None if text is None else int(text), int(session[0] or 0), session[1])

    def commit(self, connection: Connection,
               marker: CommitMarker | None = None) -> CommitOutcome | None:
        """COMMIT, and resolve a lost reply; None when COMMIT answered normally. Without the
        ``marker`` of :meth:`begin`, :meth:`mark` takes one first.

        Raises:
            CommitOutcomeUnknownError: the outcome could not be established.
            Exception: the driver's connection error when the transaction did not commit (the
                caller's retry reruns it), or any error the server answered with.
        """
        try:
            if marker is None:
                marker = self.mark(connection)
        except BaseException:
            rollback_quietly(connection)  # before COMMIT: an ordinary failed attempt
            raise
        try:
            connection.commit()
            return None
        except Exception as error:
            if classify(error) is not ErrorCategory.CONNECTION:
                raise  # e.g. 40001 at COMMIT: the server said it rolled back
            return _settle(error, *(self.resolve(marker) if marker is not None else _NO_MARKER))

    # -- after a lost COMMIT ----------------------------------------------------------------------

    def resolve(self, marker: CommitMarker) -> tuple[CommitOutcome, str]:
        """Ask a new connection what became of ``marker``'s transaction, and why we think so."""
        steps = _resolution(marker, self.timeout, self._clock.monotonic)
        try:
            step = next(steps)
        except StopIteration as settled:
            return settled.value  # type: ignore[no-any-return]
        try:
            dbapi = self._connect()
        except Exception as error:
            return CommitOutcome.UNKNOWN, f"could not ask: {type(error).__name__}"
        try:
            while True:
                if isinstance(step, _Wait):
                    self._clock.sleep(step.seconds)
                    step = steps.send(None)
                elif step.terminate:
                    step = steps.send(self._query(dbapi, _TERMINATE_SQL, (
                        step.backend_pid, str(step.xid & 0xFFFFFFFF))))
                else:
                    step = steps.send(self._query(dbapi, _STATUS_SQL, (str(step.xid),)))
        except StopIteration as settled:
            return settled.value  # type: ignore[no-any-return]
        except Exception as error:
            return CommitOutcome.UNKNOWN, f"the question failed: {type(error).__name__}"
        finally:
            try:
                dbapi.close()
            except Exception:  # closing a connection we only asked through; nothing to keep
                _log.debug("closing the resolution connection failed", exc_info=True)

    def _connect(self) -> Any:
        dialect = self._engine.dialect
        args, options = dialect.create_connect_args(self._engine.url)
        options = dict(options)
        options.setdefault("connect_timeout", max(1, round(self.timeout)))
        dbapi = dialect.connect(*args, **options)
        dbapi.autocommit = True
        return dbapi

    @staticmethod
    def _query(dbapi: Any, sql: str, parameters: tuple[Any, ...]) -> Any:
        cursor = dbapi.cursor()
        try:
            cursor.execute(sql, parameters)
            return cursor.fetchone()
        finally:
            cursor.close()


_NO_MARKER: Final = (CommitOutcome.UNKNOWN, "server older than 13")


def _settle(error: Exception, outcome: CommitOutcome, detail: str) -> CommitOutcome:
    """What a lost COMMIT becomes once the server was asked: COMMITTED is returned (the work is
    done), ABORTED raises the connection error (rerun), UNKNOWN
    :class:`CommitOutcomeUnknownError`."""
    if outcome is CommitOutcome.COMMITTED:
        _log.info("connection lost during COMMIT; the server says it committed: "
                  "not rerun (%s)", detail)
        return outcome
    if outcome is CommitOutcome.ABORTED:
        _log.info("connection lost during COMMIT; the server says it did not commit: "
                  "rerun (%s)", detail)
        raise error
    raise CommitOutcomeUnknownError(error, detail=detail) from error


@dataclass(frozen=True, slots=True)
class _Ask:
    """Ask ``pg_xact_status(xid)`` (with the timeline), or end the backend still holding it."""

    xid: int
    backend_pid: int
    terminate: bool


@dataclass(frozen=True, slots=True)
class _Wait:
    seconds: float


def _resolution(marker: CommitMarker, timeout: float, monotonic: Callable[[], float]
                ) -> Generator[_Ask | _Wait, Any, tuple[CommitOutcome, str]]:
    """The questions to ask about a lost COMMIT and what the answers mean, without I/O: it
    yields each question (sent back its first row) or wait, and returns the outcome."""
    if marker.xid is None:
        return CommitOutcome.ABORTED, "no transaction id: nothing was written"
    if marker.timeline is None:
        return CommitOutcome.UNKNOWN, "the transaction's timeline is unknown"
    deadline = monotonic() + timeout
    delay = 0.01
    while True:
        status, timeline = yield _Ask(marker.xid, marker.backend_pid, terminate=False)
        if timeline != marker.timeline:
            return CommitOutcome.UNKNOWN, (
                f"the server answering is on timeline {timeline}, the transaction ran "
                f"on {marker.timeline} (failover)")
        if status == "committed":
            return CommitOutcome.COMMITTED, f"pg_xact_status({marker.xid}) = committed"
        if status == "aborted":
            return CommitOutcome.ABORTED, f"pg_xact_status({marker.xid}) = aborted"
        if status != "in progress":
            return CommitOutcome.UNKNOWN, f"pg_xact_status({marker.xid}) = {status}"
        yield _Ask(marker.xid, marker.backend_pid, terminate=True)
        if monotonic() >= deadline:
            return CommitOutcome.UNKNOWN, (
                f"transaction {marker.xid} still in progress after {timeout} s")
        yield _Wait(delay)
        delay = min(delay * 2, 0.25)


class AsyncCommitOutcomeResolver(_ResolverBase[AsyncEngine]):
    """:class:`CommitOutcomeResolver` for an ``AsyncEngine`` (psycopg async or asyncpg).

    The transaction id is read before COMMIT (``pg_current_xact_id_if_assigned()``: NULL when
    nothing was written, and then nothing is asked); the question goes over a new connection
    (no pool) of the engine's URL and driver.
    """

    def __init__(self, engine: AsyncEngine, clock: Clock, timeout: float = 5.0) -> None:
        super().__init__(engine, clock, timeout)
        self._asking: AsyncEngine | None = None

    async def _first_row(self, connection: AsyncConnection, sql: str) -> tuple[Any, ...]:
        row = (await connection.exec_driver_sql(sql)).first()
        return tuple(None if value is None else str(value) for value in row or ())

    async def mark(self, connection: AsyncConnection) -> CommitMarker | None:
        """The transaction's id (one round trip), backend pid and timeline."""
        if not self._is_supported(connection):
            return None
        info = connection.info
        session: Any = info.get(_SESSION_KEY)
        if session is None:
            session = await self._first_row(connection, _SESSION_SQL)
            if session[1] is not None:  # a standby's answer would go stale on promotion
                info[_SESSION_KEY] = session
        xid = (await self._first_row(connection, _XID_SQL))[0]
        return CommitMarker(None if xid is None else int(xid), int(session[0] or 0), session[1])

    async def commit(self, connection: AsyncConnection,
                     marker: CommitMarker | None) -> CommitOutcome | None:
        """COMMIT, and resolve a lost reply (see :meth:`CommitOutcomeResolver.commit`)."""
        try:
            await connection.commit()
            return None
        except Exception as error:
            if classify(error) is not ErrorCategory.CONNECTION:
                raise
            return _settle(error, *(await self.resolve(marker) if marker is not None
                                    else _NO_MARKER))

    def _asking_engine(self) -> AsyncEngine:
        if self._asking is None:
            from sqlalchemy.ext.asyncio import create_async_engine

            url = self._engine.url
            seconds = max(1, round(self.timeout))
            connect_args = ({"timeout": seconds} if url.get_driver_name() == "asyncpg"
                            else {"connect_timeout": seconds})
            self._asking = create_async_engine(url, poolclass=NullPool,
                                               isolation_level="AUTOCOMMIT",
                                               connect_args=connect_args)
        return self._asking

    async def resolve(self, marker: CommitMarker) -> tuple[CommitOutcome, str]:
        """Ask a new connection what became of ``marker``'s transaction."""
        steps = _resolution(marker, self.timeout, self._clock.monotonic)
        try:
            step = next(steps)
        except StopIteration as settled:
            return settled.value  # type: ignore[no-any-return]
        try:
            connection = await self._asking_engine().connect()
        except Exception as error:
            return CommitOutcome.UNKNOWN, f"could not ask: {type(error).__name__}"
        try:
            while True:
                if isinstance(step, _Wait):
                    await self._clock.asleep(step.seconds)
                    step = steps.send(None)
                elif step.terminate:
                    await connection.execute(_TERMINATE_TEXT, {
                        "pid": step.backend_pid, "xid": str(step.xid & 0xFFFFFFFF)})
                    step = steps.send(None)
                else:
                    row = (await connection.execute(_STATUS_TEXT, {"xid": str(step.xid)})).one()
                    step = steps.send((row[0], row[1]))
        except StopIteration as settled:
            return settled.value  # type: ignore[no-any-return]
        except Exception as error:
            return CommitOutcome.UNKNOWN, f"the question failed: {type(error).__name__}"
        finally:
            try:
                await connection.close()
            except Exception:  # a connection we only asked through; nothing to keep
                _log.debug("closing the resolution connection failed", exc_info=True)

    async def aclose(self) -> None:
        if self._asking is not None:
            await self._asking.dispose()
