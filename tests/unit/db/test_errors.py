"""Classification of real driver exception objects (psycopg, PyMySQL, sqlite3, SQLAlchemy)."""

from __future__ import annotations

import sqlite3

import psycopg
import pymysql
import pytest
from sqlalchemy import exc as sa_exc

from instrumented_clients.db.errors import (
    CommitOutcomeUnknownError,
    classify,
    is_transient_db_error,
)
from instrumented_clients.resilience import ErrorCategory as C


def pg(sqlstate: str, message: str = "boom") -> psycopg.Error:
    return psycopg.errors.lookup(sqlstate)(message)


@pytest.mark.parametrize(
    ("sqlstate", "expected"),
    [
        ("40001", C.SERIALIZATION),
        ("40P01", C.DEADLOCK),
        ("57P01", C.CONNECTION),
        ("08006", C.CONNECTION),
        ("08001", C.CONNECTION),
        ("28P01", C.AUTH),
        ("28000", C.AUTH),
        ("42601", C.PROGRAMMING),
        ("42P01", C.PROGRAMMING),
        ("42501", C.PERMISSION),
        ("23505", C.INTEGRITY),
        ("23503", C.INTEGRITY),
        ("55P03", C.LOCK_TIMEOUT),
        ("57014", C.TIMEOUT),
        ("53300", C.SERVER_BUSY),
        ("22012", C.PROGRAMMING),
        ("3D000", C.CONFIGURATION),
    ],
)
def test_psycopg_errors_are_classified_by_sqlstate(sqlstate: str, expected: C) -> None:
    error = pg(sqlstate)
    assert error.sqlstate == sqlstate
    assert classify(error) is expected


def test_transient_postgres_errors_are_retried_and_permanent_ones_are_not() -> None:
    for sqlstate in ("40001", "40P01", "57P01", "08006"):
        assert is_transient_db_error(pg(sqlstate)), sqlstate
    for sqlstate in ("28P01", "42601", "23505", "42501"):
        assert not is_transient_db_error(pg(sqlstate)), sqlstate


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ('connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  '
         'password authentication failed for user "app"', C.AUTH),
        ('connection failed: connection to server at "127.0.0.1", port 1 failed: Connection '
         "refused", C.CONNECTION),
        ("consuming input failed: server closed the connection unexpectedly", C.CONNECTION),
        ("the connection is closed", C.CONNECTION),
        ('connection failed: FATAL:  database "nope" does not exist', C.CONFIGURATION),
        ("something new and strange", C.CONNECTION),
    ],
)
def test_psycopg_operational_errors_without_sqlstate(message: str, expected: C) -> None:
    # libpq reports connect-time failures, a wrong password included, with no SQLSTATE.
    error = psycopg.OperationalError(message)
    assert error.sqlstate is None
    assert classify(error) is expected


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (pymysql.err.OperationalError(1213, "Deadlock found when trying to get lock"), C.DEADLOCK),
        (pymysql.err.OperationalError(1205, "Lock wait timeout exceeded"), C.LOCK_TIMEOUT),
        (pymysql.err.OperationalError(1045, "Access denied for user 'x'@'h' (using password: "
                                            "YES)"), C.AUTH),
        (pymysql.err.OperationalError(2003, "Can't connect to MySQL server"), C.CONNECTION),
        (pymysql.err.OperationalError(2013, "Lost connection to MySQL server"), C.CONNECTION),
        (pymysql.err.OperationalError(2006, "MySQL server has gone away"), C.CONNECTION),
        (pymysql.err.OperationalError(1927, "Connection was killed"), C.CONNECTION),
        (pymysql.err.ProgrammingError(1064, "You have an error in your SQL syntax"),
         C.PROGRAMMING),
        (pymysql.err.ProgrammingError(1146, "Table 'test.x' doesn't exist"), C.PROGRAMMING),
        (pymysql.err.IntegrityError(1062, "Duplicate entry '1' for key 'PRIMARY'"), C.INTEGRITY),
        (pymysql.err.OperationalError(1049, "Unknown database 'nope'"), C.CONFIGURATION),
        (pymysql.err.InterfaceError(0, ""), C.CONNECTION),
        (pymysql.err.OperationalError(9999, "an error nobody knows"), C.UNKNOWN),
    ],
)
def test_pymysql_errors_are_classified_by_error_number(
    error: pymysql.err.Error, expected: C
) -> None:
    assert classify(error) is expected


class _MysqlConnectorLike(Exception):
    """mysql-connector's shape: ``errno`` and ``sqlstate`` attributes, message first."""

    def __init__(self, msg: str, errno: int, sqlstate: str) -> None:
        super().__init__(msg)
        self.errno = errno
        self.sqlstate = sqlstate


def test_mysql_deadlock_number_wins_over_its_sqlstate() -> None:
    # MySQL reports a deadlock (1213) with SQLSTATE 40001: it is a deadlock, not serialization.
    assert classify(_MysqlConnectorLike("Deadlock found", 1213, "40001")) is C.DEADLOCK
    assert classify(_MysqlConnectorLike("Lock wait timeout", 1205, "HY000")) is C.LOCK_TIMEOUT


def test_sqlite_database_is_locked_is_transient() -> None:
    connection = sqlite3.connect(":memory:")
    try:
        with pytest.raises(sqlite3.OperationalError) as syntax:
            connection.execute("selec 1")
    finally:
        connection.close()
    assert classify(syntax.value) is not C.LOCK_TIMEOUT
    assert not is_transient_db_error(syntax.value)
    locked = sqlite3.OperationalError("database is locked")
    assert classify(locked) is C.LOCK_TIMEOUT
    assert is_transient_db_error(locked)
    assert classify(sqlite3.IntegrityError("UNIQUE constraint failed: t.id")) is C.INTEGRITY


def test_sqlalchemy_wrappers_are_classified_by_their_driver_error() -> None:
    wrapped = sa_exc.OperationalError("SELECT 1", None, pg("40001"))
    assert classify(wrapped) is C.SERIALIZATION
    syntax = sa_exc.ProgrammingError("selec 1", None, pg("42601"))
    assert classify(syntax) is C.PROGRAMMING
    auth = sa_exc.OperationalError(None, None, pymysql.err.OperationalError(1045, "denied"))
    assert classify(auth) is C.AUTH


def test_an_invalidated_connection_is_a_connection_error_whatever_the_driver_said() -> None:
    error = sa_exc.OperationalError("SELECT 1", None, psycopg.OperationalError("x"),
                                    connection_invalidated=True)
    assert classify(error) is C.CONNECTION


def test_statement_text_does_not_decide_the_category() -> None:
    # The wrapper's message contains the SQL; "timed out" there must not make it a timeout.
    error = sa_exc.ProgrammingError("SELECT 'timed out' FROM gone_away", None, pg("42P01"))
    assert classify(error) is C.PROGRAMMING


def test_sqlalchemy_errors_without_a_driver_error() -> None:
    assert classify(sa_exc.TimeoutError("QueuePool limit reached")) is C.TIMEOUT
    assert classify(sa_exc.ArgumentError("bad")) is C.CONFIGURATION
    assert classify(sa_exc.DisconnectionError("gone")) is C.CONNECTION
    assert classify(ConnectionResetError()) is C.CONNECTION
    assert classify(ValueError("bad input")) is C.PROGRAMMING


def test_an_ambiguous_commit_is_retried_only_when_the_caller_opted_in() -> None:
    lost = sa_exc.OperationalError("COMMIT", None, pg("57P01"), connection_invalidated=True)
    cautious = CommitOutcomeUnknownError(lost)
    opted_in = CommitOutcomeUnknownError(lost, idempotent=True)
    assert not is_transient_db_error(cautious)
    assert classify(cautious) is C.UNKNOWN
    assert classify(opted_in) is C.CONNECTION
    assert "may or may not have been committed" in str(cautious)
    assert "idempotent=True" in str(cautious)
    # The retry log line quotes the message: it must not tell an opted-in caller to opt in.
    assert "It is rerun" in str(opted_in)
    assert "pass idempotent=True" not in str(opted_in)


def test_ambiguous_commit_message_carries_no_password() -> None:
    cause = psycopg.OperationalError("could not send data: postgresql://app:s3cret@db:5432/x")
    assert "s3cret" not in str(CommitOutcomeUnknownError(cause))


def test_an_unmapped_sqlstate_is_not_guessed_from_its_message() -> None:
    error = pg("XX000", "could not read block: connection reset by peer on the storage")
    assert classify(error) is C.UNKNOWN
    assert not is_transient_db_error(error)


def test_an_unmapped_mysql_number_is_not_guessed_from_its_message() -> None:
    error = pymysql.err.OperationalError(1366, "Incorrect integer value 'lost connection'")
    assert classify(error) is C.UNKNOWN
