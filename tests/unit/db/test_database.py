"""ResilientDatabase on SQLite (no network), with a FakeClock: the retry and commit rules."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Column, Integer, MetaData, Table, event, insert, select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

from instrumented_clients.config import ConfigError
from instrumented_clients.db import (
    CommitOutcomeUnknownError,
    ResilientDatabase,
    default_db_policy,
)
from instrumented_clients.db._engine import verb_of
from instrumented_clients.resilience import RetryPolicy
from instrumented_clients.testing import CapturedTelemetry, FakeClock


@pytest.fixture
def db(
    tmp_path: Path, clock: FakeClock, telemetry: CapturedTelemetry
) -> Iterator[ResilientDatabase]:
    database = ResilientDatabase(
        f"sqlite:///{tmp_path / 'unit.db'}", name="unit", telemetry=telemetry,
        policy=default_db_policy(clock=clock),
    )
    database.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, v INTEGER)")
    yield database
    database.close()


def lost_connection() -> sa_exc.OperationalError:
    return sa_exc.OperationalError(
        "COMMIT", None, psycopg.OperationalError("server closed the connection unexpectedly"),
        connection_invalidated=True,
    )


def fail_commits(database: ResilientDatabase, times: int) -> list[int]:
    """Make the next ``times`` COMMITs fail as if the connection dropped while it was in flight."""
    failures: list[int] = []

    @event.listens_for(database.engine, "commit")
    def broken_commit(connection: Connection) -> None:
        if len(failures) < times:
            failures.append(1)
            raise lost_connection()

    return failures


def count(database: ResilientDatabase) -> int:
    return int(database.execute("SELECT count(*) FROM items").scalar_one())


def test_execute_returns_rows_and_rowcount(db: ResilientDatabase) -> None:
    inserted = db.execute("INSERT INTO items (id, v) VALUES (:id, :v)", {"id": 1, "v": 10})
    assert inserted.rowcount == 1
    result = db.execute("SELECT id, v FROM items WHERE id = :id", {"id": 1})
    assert result.all() == [(1, 10)]
    assert result.one().v == 10
    assert result.mappings() == [{"id": 1, "v": 10}]
    assert result.columns == ("id", "v")
    assert db.execute("UPDATE items SET v = v + 1").rowcount == 1


def test_execute_accepts_core_constructs(db: ResilientDatabase) -> None:
    items = Table("items", MetaData(), Column("id", Integer, primary_key=True),
                  Column("v", Integer))
    created = db.execute(insert(items).values(id=7, v=70))
    assert created.inserted_primary_key == (7,)
    assert db.execute(select(items.c.v).where(items.c.id == 7)).scalar_one() == 70


def test_a_lost_connection_during_commit_is_reported_as_ambiguous_and_not_rerun(
    db: ResilientDatabase, clock: FakeClock
) -> None:
    fail_commits(db, 1)
    runs: list[int] = []

    def work(connection: Connection) -> None:
        runs.append(1)
        connection.execute(text("INSERT INTO items (id, v) VALUES (1, 1)"))

    with pytest.raises(CommitOutcomeUnknownError) as raised:
        db.transaction(work)
    assert len(runs) == 1
    assert clock.sleeps == []
    assert isinstance(raised.value.__cause__, sa_exc.OperationalError)


def test_an_ambiguous_commit_is_rerun_when_the_caller_says_it_is_idempotent(
    db: ResilientDatabase, clock: FakeClock, telemetry: CapturedTelemetry
) -> None:
    fail_commits(db, 1)
    runs: list[int] = []

    def work(connection: Connection) -> str:
        runs.append(1)
        connection.execute(text("INSERT OR REPLACE INTO items (id, v) VALUES (1, 1)"))
        return "done"

    assert db.transaction(work, idempotent=True) == "done"
    assert len(runs) == 2
    assert len(clock.sleeps) == 1
    assert telemetry.value("retries_total", system="sqlite", client="unit",
                           operation="transaction", error_type="connection") == 1


def test_a_write_statement_with_an_ambiguous_commit_is_not_rerun_but_a_read_is(
    db: ResilientDatabase, clock: FakeClock
) -> None:
    fail_commits(db, 2)
    with pytest.raises(CommitOutcomeUnknownError):
        db.execute("INSERT INTO items (id, v) VALUES (2, 2)")
    assert db.execute("SELECT 1").scalar() == 1  # a read: safe to run again
    assert len(clock.sleeps) == 1


def test_a_transient_error_reruns_the_whole_function_after_rolling_back(
    db: ResilientDatabase, clock: FakeClock
) -> None:
    runs: list[int] = []

    def work(connection: Connection) -> int:
        runs.append(1)
        connection.execute(text("INSERT INTO items (id, v) VALUES (:id, 1)"), {"id": len(runs)})
        if len(runs) == 1:
            raise sqlite3.OperationalError("database is locked")
        return len(runs)

    assert db.transaction(work) == 2
    assert db.execute("SELECT id FROM items").scalars() == [2]  # the first run was rolled back
    assert len(clock.sleeps) == 1
    assert 0.5 <= clock.sleeps[0] <= 1.5  # ~1 s with ×0.5–1.5 jitter


def test_integrity_errors_are_never_retried(db: ResilientDatabase, clock: FakeClock) -> None:
    db.execute("INSERT INTO items (id, v) VALUES (1, 1)")
    with pytest.raises(sa_exc.IntegrityError) as raised:
        db.execute("INSERT INTO items (id, v) VALUES (:id, :v)", {"id": 1, "v": 31337})
    assert clock.sleeps == []
    assert count(db) == 1
    assert "31337" not in str(raised.value)  # hide_parameters: values never reach messages
    assert "parameters hidden" in str(raised.value)


def test_a_syntax_error_is_raised_at_once(
    db: ResilientDatabase, clock: FakeClock, telemetry: CapturedTelemetry
) -> None:
    with pytest.raises(sa_exc.OperationalError, match="syntax error"):
        db.execute("SELEC 1")
    assert clock.sleeps == []
    assert telemetry.value("operation_duration_seconds_count", system="sqlite", client="unit",
                           operation="execute", outcome="failure") == 1


def test_retries_stop_after_the_default_four_attempts(
    db: ResilientDatabase, clock: FakeClock
) -> None:
    runs: list[int] = []

    def always_locked(connection: Connection) -> None:
        runs.append(1)
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(sqlite3.OperationalError):
        db.transaction(always_locked)
    assert len(runs) == 4
    assert len(clock.sleeps) == 3
    for sleep, base in zip(clock.sleeps, (1.0, 2.0, 4.0), strict=True):
        assert 0.5 * base <= sleep <= 1.5 * base


def test_a_policy_without_a_classifier_gets_the_database_one(tmp_path: Path) -> None:
    database = ResilientDatabase(f"sqlite:///{tmp_path / 'p.db'}", name="p",
                                 telemetry=CapturedTelemetry(),
                                 policy=RetryPolicy(max_attempts=2, clock=FakeClock()))
    try:
        assert database.policy.classifier is not RetryPolicy().classifier
        assert database.policy.max_attempts == 2
    finally:
        database.close()


@pytest.mark.parametrize("url", ["not a url", "postgresql://u:pw@host:notaport/db", "://x"])
def test_a_malformed_url_fails_at_construction(url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        ResilientDatabase(url, telemetry=CapturedTelemetry())
    assert raised.value.variable == "url"
    assert "pw" not in str(raised.value)


def test_an_unknown_dialect_fails_at_construction() -> None:
    with pytest.raises(ConfigError, match="unknown dialect"):
        ResilientDatabase("nosuchdb://h/x", telemetry=CapturedTelemetry())


def test_a_non_numeric_max_attempts_names_the_variable() -> None:
    with pytest.raises(ConfigError) as raised:
        ResilientDatabase.from_env(environ={"DB_RETRY_MAX_ATTEMPTS": "lots"},
                                   telemetry=CapturedTelemetry())
    assert raised.value.variable == "DB_RETRY_MAX_ATTEMPTS"
    assert "lots" in str(raised.value)


def test_from_env_reads_the_url_and_schedule(tmp_path: Path) -> None:
    environ = {"DATABASE_URL": f"sqlite:///{tmp_path / 'env.db'}", "DB_RETRY_MAX_ATTEMPTS": "6",
               "DB_RETRY_BASE_DELAY": "0.25", "DB_RETRY_MAX_DELAY": "3"}
    database = ResilientDatabase.from_env(name="env", environ=environ,
                                          telemetry=CapturedTelemetry())
    try:
        assert (database.policy.max_attempts, database.policy.initial_delay,
                database.policy.max_delay, database.policy.jitter) == (6, 0.25, 3.0, 0.5)
        assert database.execute("SELECT 2").scalar() == 2
    finally:
        database.close()


def test_from_env_with_a_bad_url_names_the_variable() -> None:
    with pytest.raises(ConfigError) as raised:
        ResilientDatabase.from_env(environ={"DATABASE_URL": "postgresql://u:secret@h:x/d"},
                                   telemetry=CapturedTelemetry())
    assert raised.value.variable == "DATABASE_URL"
    assert "secret" not in str(raised.value)


def test_pool_gauges_read_the_pools_own_counts(
    db: ResilientDatabase, telemetry: CapturedTelemetry
) -> None:
    def gauge(state: str) -> float | None:
        return telemetry.value("pool_connections", system="sqlite", client="unit", state=state)

    held: list[Any] = []

    def hold(connection: Connection) -> None:
        held.append((gauge("in_use"), db.health()["pool"]["in_use"]))

    db.transaction(hold)
    assert held == [(1.0, 1)]
    assert gauge("in_use") == 0.0
    assert gauge("idle") == 1.0
    assert telemetry.value("pool_max_connections", system="sqlite", client="unit") == 15.0
    db.close()
    assert gauge("idle") == 0.0


def test_health_reports_state_and_no_secrets(tmp_path: Path) -> None:
    database = ResilientDatabase("postgresql://app:hunter2@db.example:5433/orders", name="h",
                                 telemetry=CapturedTelemetry())
    try:
        report = database.health()
        assert report["address"] == "db.example:5433"
        assert report["system"] == "postgresql"
        assert report["state"] == "disconnected"
        assert "hunter2" not in repr(report)
        assert "hunter2" not in repr(database)
    finally:
        database.close()
    assert database.health()["state"] == "closed"


@pytest.mark.parametrize(
    ("statement", "verb"),
    [("select 1", "SELECT"), ("  (SELECT 1)", "SELECT"), ("insert into t values (1)", "INSERT"),
     ("WITH x AS (SELECT 1) SELECT * FROM x", "WITH"), ("frobnicate", "OTHER"),
     (text("UPDATE t SET a = 1"), "UPDATE"), ("SELECT'x'", "SELECT"), ("", "OTHER")],
)
def test_the_operation_name_is_a_bounded_sql_verb(statement: Any, verb: str) -> None:
    assert verb_of(statement) == verb


def test_spans_name_the_query_summary_and_never_the_parameters(
    db: ResilientDatabase, telemetry: CapturedTelemetry
) -> None:
    db.execute("INSERT INTO items (id, v) VALUES (:id, :v)", {"id": 5, "v": 424242})
    span = next(s for s in telemetry.spans() if s.name == "INSERT items")
    assert span.attributes["db.system.name"] == "sqlite"
    assert span.attributes["db.operation.name"] == "INSERT"
    assert span.attributes["db.query.summary"] == "INSERT items"
    assert span.attributes["db.query.text"] == "INSERT INTO items (id, v) VALUES (:id, :v)"
    assert "424242" not in repr(dict(span.attributes))


def test_literals_never_reach_the_query_text_and_the_text_can_be_switched_off(
    db: ResilientDatabase, telemetry: CapturedTelemetry, tmp_path: Path
) -> None:
    db.execute("SELECT v FROM items WHERE v = 'hunter2' OR id = 31337")
    [span] = [s for s in telemetry.spans() if s.name == "SELECT items"]
    assert span.attributes["db.query.text"] == "SELECT v FROM items WHERE v = ? OR id = ?"
    quiet = ResilientDatabase(f"sqlite:///{tmp_path / 'quiet.db'}", name="quiet",
                              telemetry=telemetry, query_text=False)
    try:
        quiet.execute("SELECT 1")
    finally:
        quiet.close()
    [select] = [s for s in telemetry.spans() if s.name == "SELECT"]
    assert select.attributes["db.operation.name"] == "SELECT"
    assert "db.query.text" not in select.attributes


def test_an_unknown_statement_has_no_operation_name_and_the_system_as_span_name(
    db: ResilientDatabase, telemetry: CapturedTelemetry
) -> None:
    with pytest.raises(Exception, match="syntax"):
        db.execute("frobnicate the table")
    [span] = [s for s in telemetry.spans() if s.name == "sqlite"]
    assert "db.operation.name" not in span.attributes
    assert span.attributes["error.type"] == "OperationalError"
    assert span.attributes["resilient_client.error.category"] == "unknown"


def test_execute_with_a_list_of_parameters_runs_executemany(db: ResilientDatabase) -> None:
    result = db.execute("INSERT INTO items (id, v) VALUES (:id, :v)",
                        [{"id": 1, "v": 1}, {"id": 2, "v": 2}, {"id": 3, "v": 3}])
    assert result.inserted_primary_key is None
    assert count(db) == 3


def test_from_env_defaults_to_the_sqlite_demo_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    database = ResilientDatabase.from_env(environ={}, telemetry=CapturedTelemetry())
    try:
        assert database.system == "sqlite"
        assert database.policy.max_attempts == 4
        assert (database.policy.initial_delay, database.policy.max_delay) == (1.0, 30.0)
        assert database.execute("SELECT 3").scalar() == 3
    finally:
        database.close()
    assert (tmp_path / "instrumented-clients-demo.db").exists()


@pytest.mark.parametrize(("url", "address"), [
    ("postgresql://app:secret@db:5433/orders", "db:5433"),
    ("postgresql://app@/orders?host=pg-1:5432&host=pg-2:5432&target_session_attrs=read-write",
     "pg-1:5432,pg-2:5432"),
    ("postgresql://app:secret@/orders?host=pg-1,pg-2&port=5432,5433", "pg-1:5432,pg-2:5433"),
])
def test_health_names_every_host_of_a_multi_host_url_without_credentials(
    url: str, address: str
) -> None:
    db = ResilientDatabase(url, name="multi")
    try:
        assert db.health()["address"] == address
        assert "secret" not in repr(db)
    finally:
        db.close()


def test_a_multi_host_url_mixing_its_two_forms_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"url.*host=h1,h2,h3") as caught:
        ResilientDatabase("postgresql://app:secret@/orders?host=a:1&host=b&port=2")
    assert "secret" not in str(caught.value)
