"""Invariants of the classification seam and the operation name, over generated inputs."""

from __future__ import annotations

import psycopg
import pymysql
from hypothesis import given
from hypothesis import strategies as st

from instrumented_clients.db._engine import SQL_VERBS, verb_of
from instrumented_clients.db.errors import classify
from instrumented_clients.resilience import ErrorCategory

SQLSTATE = st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=5, max_size=5)


@given(SQLSTATE, st.text(max_size=200))
def test_any_sqlstate_gets_a_category_and_auth_and_integrity_are_never_transient(
    sqlstate: str, message: str
) -> None:
    error = psycopg.Error(message)
    error.sqlstate = sqlstate  # type: ignore[misc]
    category = classify(error)
    assert isinstance(category, ErrorCategory)
    if sqlstate.startswith(("28", "23", "42")):
        assert not category.is_transient


@given(st.integers(min_value=-(2**31), max_value=2**31), st.text(max_size=200))
def test_any_mysql_error_number_gets_a_category(code: int, message: str) -> None:
    for cls in (pymysql.err.OperationalError, pymysql.err.ProgrammingError,
                pymysql.err.IntegrityError, pymysql.err.InternalError):
        assert isinstance(classify(cls(code, message)), ErrorCategory)


@given(st.sampled_from([1045, 1698, 1064, 1146, 1054, 1062, 1452]), st.text(max_size=200))
def test_permanent_mysql_errors_stay_permanent_whatever_the_message(
    code: int, message: str
) -> None:
    # A message like "Lost connection" inside a syntax error must not make it retryable.
    assert not classify(pymysql.err.OperationalError(code, message)).is_transient


@given(st.text(max_size=300))
def test_the_operation_name_is_always_from_the_bounded_set(sql: str) -> None:
    assert verb_of(sql) in SQL_VERBS | {"OTHER"}
