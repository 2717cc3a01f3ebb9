"""Idle validation against the real PostgreSQL: a pooled connection's backend is ended with
``pg_terminate_backend`` while it sits idle in the pool, then the client uses the pool again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection

from instrumented_clients.db import ResilientDatabase
from instrumented_clients.testing import CapturedTelemetry, FakeClock, wait_until

from .conftest import fast_policy
from .test_postgres import backend_gone

pytestmark = pytest.mark.integration

MakeDb = Callable[..., ResilientDatabase]
Admin = psycopg.Connection[tuple[Any, ...]]
ONE_CONNECTION = {"pool_size": 1, "max_overflow": 0}
LONG = 3600.0  # a threshold no test waits out: "idle less than the threshold"


def kill_the_idle_connection(db: ResilientDatabase, admin: Admin) -> int:
    pid = int(db.execute("SELECT pg_backend_pid()").scalar())
    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    wait_until(lambda: backend_gone(admin, pid), 10)
    return pid


def value(telemetry: CapturedTelemetry, client: str, metric: str, **labels: str) -> float:
    return telemetry.value(metric, system="postgresql", client=client, **labels) or 0.0


def test_a_write_through_execute_pings_a_connection_idle_past_the_threshold(
    make_db: MakeDb, pg_admin: Admin, pg_table: str, telemetry: CapturedTelemetry,
) -> None:
    db = make_db(name="pg-idle-ping", validate_idle_after=0.0, engine_options=ONE_CONNECTION)
    pid = kill_the_idle_connection(db, pg_admin)
    db.execute(f"INSERT INTO {pg_table} (id, v) VALUES (1, 1)")
    # The ping found it gone: a new connection, no failed attempt, no retry.
    assert int(db.execute("SELECT pg_backend_pid()").scalar()) != pid
    assert value(telemetry, "pg-idle-ping", "retries_total", operation="execute",
                 error_type="connection") == 0
    assert value(telemetry, "pg-idle-ping", "operation_duration_seconds_count", operation="execute",
                 outcome="success_after_retry") == 0
    assert pg_admin.execute(f"SELECT count(*) FROM {pg_table}").fetchone() == (1,)


def test_a_write_through_execute_within_the_threshold_is_not_pinged(
    make_db: MakeDb, pg_admin: Admin, pg_table: str, telemetry: CapturedTelemetry,
) -> None:
    db = make_db(name="pg-idle-fresh", validate_idle_after=LONG, engine_options=ONE_CONNECTION)
    kill_the_idle_connection(db, pg_admin)
    db.execute(f"INSERT INTO {pg_table} (id, v) VALUES (1, 1)")
    # No ping: the INSERT met the dead connection and the Guard retried it (nothing committed).
    assert value(telemetry, "pg-idle-fresh", "retries_total", operation="execute",
                 error_type="connection") == 1
    assert pg_admin.execute(f"SELECT count(*) FROM {pg_table}").fetchone() == (1,)


@pytest.mark.parametrize("resolve", [True, False], ids=["with-resolution", "without"])
@pytest.mark.parametrize("threshold", [0.0, LONG], ids=["idle-longer", "idle-shorter"])
def test_a_transaction_finds_a_dead_connection_at_begin_and_starts_again_at_once(
    make_db: MakeDb, pg_admin: Admin, pg_table: str, telemetry: CapturedTelemetry,
    threshold: float, resolve: bool,
) -> None:
    """The client sends the transaction's BEGIN itself (with the transaction id when COMMIT
    outcome resolution is on), as the first round trip: no ping, whatever the idle time; the
    dead connection fails that BEGIN, before ``fn`` runs, and a new one is used at once — no
    backoff, no failed attempt, one row."""
    clock = FakeClock()  # records any backoff wait instead of sleeping it
    db = make_db(name="pg-idle-txn", validate_idle_after=threshold, engine_options=ONE_CONNECTION,
                 policy=fast_policy(clock=clock), resolve_commit_outcome=resolve)
    kill_the_idle_connection(db, pg_admin)
    runs: list[int] = []

    def work(connection: Connection) -> int:
        runs.append(1)
        connection.execute(text(f"INSERT INTO {pg_table} (id, v) VALUES (1, 42)"))
        return len(runs)

    assert db.transaction(work) == 1
    assert clock.sleeps == []  # no backoff step
    assert value(telemetry, "pg-idle-txn", "retries_total", operation="transaction",
                 error_type="connection") == 0
    assert pg_admin.execute(f"SELECT count(*), sum(v) FROM {pg_table}").fetchone() == (1, 42)
    assert db.health()["state"] == "connected"


def test_a_read_through_execute_finds_a_dead_connection_at_begin_without_a_ping(
    make_db: MakeDb, pg_admin: Admin, telemetry: CapturedTelemetry,
) -> None:
    clock = FakeClock()
    db = make_db(name="pg-idle-read", validate_idle_after=LONG, engine_options=ONE_CONNECTION,
                 policy=fast_policy(clock=clock))
    pid = kill_the_idle_connection(db, pg_admin)
    assert int(db.execute("SELECT pg_backend_pid()").scalar()) != pid
    assert clock.sleeps == []
    assert value(telemetry, "pg-idle-read", "retries_total", operation="execute",
                 error_type="connection") == 0
