"""Idle validation on SQLite with a FakeClock (no network).

A pooled connection is "killed" by closing its sqlite3 connection while it sits in the pool:
SQLAlchemy's SQLite dialect then reports a disconnect, as a server-side kill does elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.engine import Connection

from instrumented_clients.config import ConfigError
from instrumented_clients.db import ResilientDatabase, default_db_policy
from instrumented_clients.db._validation import IdleValidation
from instrumented_clients.testing import CapturedTelemetry, FakeClock

THRESHOLD = 5.0


@pytest.fixture
def db(
    tmp_path: Path, clock: FakeClock, telemetry: CapturedTelemetry
) -> Iterator[ResilientDatabase]:
    database = ResilientDatabase(
        f"sqlite:///{tmp_path / 'idle.db'}", name="idle", telemetry=telemetry,
        policy=default_db_policy(clock=clock), validate_idle_after=THRESHOLD,
        engine_options={"pool_size": 1, "max_overflow": 0},
    )
    database.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, v INTEGER)")
    yield database
    database.close()


def kill_the_pooled_connection(database: ResilientDatabase) -> None:
    """Close the pool's only connection underneath SQLAlchemy, once it is back in the pool."""
    with database.engine.connect() as connection:
        raw: Any = connection.connection.dbapi_connection
    raw.close()


def rows(database: ResilientDatabase) -> int:
    return int(database.execute("SELECT count(*) FROM items").scalar())


def outcome(telemetry: CapturedTelemetry, operation: str, value: str) -> float | None:
    return telemetry.value("operation_duration_seconds_count", system="sqlite", client="idle",
                           operation=operation, outcome=value)


def test_a_write_after_the_threshold_pings_and_gets_a_new_connection_without_a_retry(
    db: ResilientDatabase, clock: FakeClock, telemetry: CapturedTelemetry
) -> None:
    kill_the_pooled_connection(db)
    clock.advance(THRESHOLD)
    db.execute("INSERT INTO items (id, v) VALUES (1, 1)")
    assert clock.sleeps == []
    assert outcome(telemetry, "execute", "success_after_retry") in (None, 0)
    assert rows(db) == 1


def test_a_write_within_the_threshold_is_not_pinged_and_fails_into_the_retry(
    db: ResilientDatabase, clock: FakeClock, telemetry: CapturedTelemetry
) -> None:
    kill_the_pooled_connection(db)
    clock.advance(THRESHOLD - 0.5)
    db.execute("INSERT INTO items (id, v) VALUES (1, 1)")
    # No ping: the statement met the dead connection, and the Guard retried after a backoff.
    assert len(clock.sleeps) == 1
    assert outcome(telemetry, "execute", "success_after_retry") == 1
    assert rows(db) == 1


@pytest.mark.parametrize(("idle", "runs_expected", "waits"),
                         [(THRESHOLD * 10, 1, 0), (0.0, 2, 1)], ids=["pinged", "not-pinged"])
def test_a_transaction_is_pinged_past_the_threshold_else_retried(
    db: ResilientDatabase, clock: FakeClock, telemetry: CapturedTelemetry, idle: float,
    runs_expected: int, waits: int,
) -> None:
    """Without an id-taking BEGIN of its own (SQLite), ``transaction`` follows the threshold."""
    runs: list[int] = []

    def work(connection: Connection) -> int:
        runs.append(1)
        connection.execute(text("INSERT INTO items (id, v) VALUES (:id, 1)"), {"id": 7})
        return len(runs)

    kill_the_pooled_connection(db)
    clock.advance(idle)
    assert db.transaction(work) == runs_expected
    assert len(clock.sleeps) == waits
    assert rows(db) == 1
    assert db.state.value == "connected"


def test_a_read_past_the_threshold_is_pinged_too(db: ResilientDatabase, clock: FakeClock) -> None:
    kill_the_pooled_connection(db)
    clock.advance(THRESHOLD * 10)
    assert rows(db) == 0
    assert clock.sleeps == []


def test_idle_time_counts_from_the_last_checkin(
    db: ResilientDatabase, clock: FakeClock
) -> None:
    clock.advance(THRESHOLD - 1)
    db.execute("INSERT INTO items (id, v) VALUES (1, 1)")  # used again: idle time restarts
    kill_the_pooled_connection(db)
    clock.advance(THRESHOLD - 1)
    db.execute("INSERT INTO items (id, v) VALUES (2, 1)")
    assert len(clock.sleeps) == 1  # not pinged: idle 4 s of 5


@given(idle_after=st.floats(0, 1e6), idle=st.floats(0, 1e6))
def test_due_exactly_when_idle_at_least_the_threshold(idle_after: float, idle: float) -> None:
    clock = FakeClock()
    validation = IdleValidation(idle_after, clock)
    since = clock.monotonic()
    clock.advance(idle)
    assert validation.due(since) is (clock.monotonic() - since >= idle_after)
    assert validation.due(None) is False  # a connection just made is never pinged


@pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), "1", True])
def test_a_bad_threshold_is_a_clear_error(value: object, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"validate_idle_after must be a number of seconds >= 0"):
        ResilientDatabase(f"sqlite:///{tmp_path / 'x.db'}",
                          validate_idle_after=value)  # type: ignore[arg-type]


def test_from_env_reads_the_threshold_and_names_a_bad_value(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"
    database = ResilientDatabase.from_env(environ={"DATABASE_URL": url,
                                                   "DB_VALIDATE_IDLE_AFTER": "0.25"})
    assert database.validate_idle_after == 0.25
    database.close()
    with pytest.raises(ConfigError, match="DB_VALIDATE_IDLE_AFTER") as raised:
        ResilientDatabase.from_env(environ={"DATABASE_URL": url, "DB_VALIDATE_IDLE_AFTER": "-2"})
    assert "-2" in str(raised.value)
