"""Span names and attributes of SQL statements, per OpenTelemetry's database conventions."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text

from instrumented_clients.db._engine import verb_of
from instrumented_clients.db.spans import describe_error, query_attributes, sanitize


@pytest.mark.parametrize(("sql", "summary"), [
    ("SELECT * FROM orders WHERE id = :id", "SELECT orders"),
    ("select a from public.orders o join items i on i.o = o.id", "SELECT public.orders"),
    ("INSERT INTO audit (at) VALUES (now())", "INSERT audit"),
    ("UPDATE ONLY accounts SET b = b - 1", "UPDATE accounts"),
    ("DELETE FROM \"Order Lines\" WHERE x = 1", "DELETE \"Order Lines\""),
    ("TRUNCATE TABLE jobs", "TRUNCATE jobs"),
    ("SELECT 1", "SELECT"),
    ("BEGIN", "BEGIN"),
])
def test_the_summary_is_the_verb_and_its_table(sql: str, summary: str) -> None:
    name, attributes = query_attributes(sql, verb_of(sql), with_text=False)
    assert name == summary
    assert attributes["db.query.summary"] == summary
    assert attributes["db.operation.name"] == verb_of(sql)
    assert "db.query.text" not in attributes


def test_an_unknown_statement_has_no_summary_nor_operation_name() -> None:
    assert query_attributes("frobnicate x", "OTHER", with_text=False) == (None, {})
    name, attributes = query_attributes(text("frobnicate 'x'"), "OTHER", with_text=True)
    assert name is None
    assert attributes == {"db.query.text": "frobnicate ?"}


@given(st.text(alphabet="0123456789abc'", max_size=12))
def test_no_literal_value_survives_sanitizing(secret: str) -> None:
    literal = "'" + secret.replace("'", "''") + "'"
    cleaned = sanitize(f"SELECT * FROM t WHERE a = {literal} AND b = 98765 AND c = :c")
    assert cleaned == "SELECT * FROM t WHERE a = ? AND b = ? AND c = :c"


class _SerializationFailure(Exception):
    sqlstate = "40001"


class _MySQLDeadlock(Exception):
    pass


def test_a_database_error_is_typed_by_its_code_and_categorised() -> None:
    assert describe_error(_SerializationFailure("could not serialize")) == {
        "error.type": "40001", "db.response.status_code": "40001",
        "resilient_client.error.category": "serialization"}
    deadlock = describe_error(_MySQLDeadlock(1213, "Deadlock found"))
    assert deadlock["error.type"] == deadlock["db.response.status_code"] == "1213"
    lost = describe_error(ConnectionResetError("reset"))
    assert lost["error.type"] == "ConnectionResetError"
    assert "db.response.status_code" not in lost


def test_a_retry_event_has_the_error_type_its_span_would_have(tmp_path: Path) -> None:
    from instrumented_clients import ResilientDatabase, RetryPolicy
    from instrumented_clients.testing import CapturedTelemetry, FakeClock

    telemetry = CapturedTelemetry(logs=False)
    db = ResilientDatabase(f"sqlite:///{tmp_path / 'retry.db'}", name="retry",
                           telemetry=telemetry, retry=RetryPolicy(max_attempts=2,
                                                                  clock=FakeClock()))
    runs: list[int] = []

    def work(_connection: object) -> None:
        runs.append(1)
        if len(runs) == 1:
            raise _SerializationFailure("could not serialize")

    try:
        db.transaction(work)
    finally:
        db.close()
    [span] = [s for s in telemetry.spans() if s.name == "transaction"]
    [event] = [e for e in span.events if e.name == "retry"]
    assert event.attributes["error.type"] == "40001"
    assert event.attributes["resilient_client.error.category"] == "serialization"
