"""AsyncResilientDatabase has the sync client's start-up, relabel, query spans, COMMIT outcome
resolution and idle validation, against the real servers; blockbuster throughout."""

from __future__ import annotations

import logging
import threading
from typing import Any

import psycopg
import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from instrumented_clients.db import AsyncResilientDatabase, DatabaseUnavailableError
from instrumented_clients.testing import (
    CapturedTelemetry,
    FakeClock,
    FaultProxy,
    await_until,
    wait_until,
)
from tests.integration.async_helpers import loop_lag, no_blocking

from .conftest import fast_policy
from .test_async_database import PG_URLS, MakeDb, backend_gone, make_db

pytestmark = [pytest.mark.integration, pytest.mark.asyncio,
              pytest.mark.usefixtures("no_blocking", "loop_lag")]
__all__ = ["loop_lag", "make_db", "no_blocking"]  # fixtures

Admin = psycopg.Connection[tuple[Any, ...]]
DRIVERS = sorted(PG_URLS)


def count(admin: Admin, table: str) -> int:
    row = admin.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def before_first_commit(db: AsyncResilientDatabase, action: Any) -> None:
    """Run ``action(connection)`` once, just before the first COMMIT is sent."""
    done: list[bool] = []

    def hook(connection: Connection) -> None:
        if not done:
            done.append(True)
            action(connection)

    event.listen(db.engine.sync_engine, "commit", hook)


def inserting(table: str, runs: list[int]) -> Any:
    async def work(connection: AsyncConnection) -> int:
        runs.append(1)
        await connection.execute(text(f"INSERT INTO {table} (id, v) VALUES (1, 1)"))
        return len(runs)

    return work


async def test_constructed_while_down_then_connects_in_the_background(
    make_db: MakeDb, telemetry: CapturedTelemetry
) -> None:
    with FaultProxy("127.0.0.1", 5432) as proxy:
        proxy.refuse()
        db = make_db(proxy.url(PG_URLS["asyncpg"]), name="apg-later",
                     connect_policy=fast_policy(max_attempts=2))
        assert await db.connect_with_retry(required=False) is False
        assert db.health()["state"] == "failed"
        assert db.reconnecting
        proxy.pass_through()
        await await_until(lambda: db.connected, 20)
        assert (await db.execute("SELECT 1")).scalar() == 1
    assert not db.reconnecting
    assert telemetry.value("reconnect_attempts_total", system="postgresql", client="apg-later",
                           outcome="success") == 1
    assert telemetry.value("connection_state", system="postgresql", client="apg-later",
                           state="connected") == 1


async def test_a_required_start_fails_clearly_and_close_stops_the_background_task(
    make_db: MakeDb,
) -> None:
    with FaultProxy("127.0.0.1", 5432) as proxy:
        proxy.refuse()
        url = proxy.url("postgresql://postgres:pw-secret@127.0.0.1:5432/test")
        db = make_db(url, name="apg-down", connect_policy=fast_policy(max_attempts=2))
        with pytest.raises(DatabaseUnavailableError) as raised:
            await db.connect_with_retry()
        assert "after 2 attempt(s)" in str(raised.value)
        assert "pw-secret" not in str(raised.value)
        assert await db.connect_with_retry(required=False) is False
        await await_until(lambda: db.reconnect_attempts >= 4, 10)  # it keeps trying
        await db.aclose()
        assert not db.reconnecting
        assert db.health()["state"] == "closed"


async def test_a_mysql_url_reaching_mariadb_is_relabelled(
    make_db: MakeDb, telemetry: CapturedTelemetry
) -> None:
    db = make_db("mysql://root@127.0.0.1:3306/test", name="amaria-label")
    assert db.system == "mysql"  # not known before connecting
    assert await db.connect_with_retry()
    assert db.system == "mariadb"
    assert (await db.execute("SELECT 1")).scalar() == 1
    mine = [line for line in telemetry.scrape().splitlines() if 'client="amaria-label"' in line]
    assert any('system="mariadb"' in line for line in mine)
    assert not any('system="mysql"' in line for line in mine)


async def test_spans_are_named_by_query_summary_with_masked_text(
    make_db: MakeDb, pg_table: str, telemetry: CapturedTelemetry
) -> None:
    db = make_db(PG_URLS["psycopg"], name="apg-spans")
    await db.execute(f"INSERT INTO {pg_table} (id, v) VALUES (:id, 987654)", {"id": 1})
    await db.execute(f"SELECT v FROM {pg_table} WHERE id = :id", {"id": 1})
    spans = {span.name: span for span in telemetry.spans()}
    select = spans[f"SELECT {pg_table}"]
    assert select.attributes["db.operation.name"] == "SELECT"
    assert select.attributes["db.query.summary"] == f"SELECT {pg_table}"
    assert select.attributes["db.query.text"] == f"SELECT v FROM {pg_table} WHERE id = :id"
    insert = spans[f"INSERT {pg_table}"]
    assert insert.attributes["db.query.text"] == (
        f"INSERT INTO {pg_table} (id, v) VALUES (:id, ?)")
    assert "987654" not in repr([dict(span.attributes) for span in telemetry.spans()])


@pytest.mark.parametrize("driver", DRIVERS)
async def test_session_killed_before_commit_is_found_aborted_and_rerun_once(
    driver: str, make_db: MakeDb, pg_admin: Admin, pg_table: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    db = make_db(PG_URLS[driver], name=f"apg-resolve-kill-{driver}")
    runs: list[int] = []
    pids: list[int] = []

    async def remember_pid(connection: AsyncConnection) -> int:
        pids.append(int((await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()))
        return int(await inserting(pg_table, runs)(connection))

    def kill_own_session(connection: Connection) -> None:
        pg_admin.execute("SELECT pg_terminate_backend(%s)", (pids[0],))
        wait_until(lambda: backend_gone(pg_admin, pids[0]), 10)

    before_first_commit(db, kill_own_session)
    with caplog.at_level(logging.INFO, logger="instrumented_clients.db"):
        assert await db.transaction(remember_pid) == 2
    assert "the server says it did not commit: rerun" in caplog.text
    assert count(pg_admin, pg_table) == 1


@pytest.mark.parametrize("driver", DRIVERS)
async def test_commit_reply_dropped_after_the_server_committed_is_not_rerun(
    driver: str, make_db: MakeDb, pg_admin: Admin, pg_table: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    base = PG_URLS[driver]
    with FaultProxy("127.0.0.1", 5432) as proxy:
        db = make_db(proxy.url(base), name=f"apg-resolve-reply-{driver}")
        runs: list[int] = []
        watcher_errors: list[BaseException] = []

        def cut_once_committed() -> None:
            try:
                wait_until(lambda: count(pg_admin, pg_table) == 1, 10)
                proxy.pass_through()  # the reply is lost; new connections work again
            except BaseException as error:  # reported by the test
                watcher_errors.append(error)
                proxy.pass_through()

        def drop_the_reply(connection: Connection) -> None:
            proxy.drop_replies()
            threading.Thread(target=cut_once_committed, daemon=True).start()

        before_first_commit(db, drop_the_reply)
        with caplog.at_level(logging.INFO, logger="instrumented_clients.db"):
            assert await db.transaction(inserting(pg_table, runs)) == 1
        assert watcher_errors == []
        assert runs == [1]
        assert "the server says it committed: not rerun" in caplog.text
    assert count(pg_admin, pg_table) == 1


@pytest.mark.parametrize("driver", DRIVERS)
async def test_a_transaction_pings_a_connection_idle_past_the_threshold(
    driver: str, make_db: MakeDb, pg_admin: Admin, pg_table: str, telemetry: CapturedTelemetry,
) -> None:
    clock = FakeClock()  # records a backoff wait instead of sleeping it
    name = f"apg-idle-{driver}"
    db = make_db(PG_URLS[driver], name=name, policy=fast_policy(clock=clock),
                 validate_idle_after=0.0,
                 engine_options={"pool_size": 1, "max_overflow": 0})
    pid = int((await db.execute("SELECT pg_backend_pid()")).scalar())
    pg_admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    await await_until(lambda: backend_gone(pg_admin, pid), 10)
    runs: list[int] = []
    assert await db.transaction(inserting(pg_table, runs)) == 1  # replaced before fn ran
    assert clock.sleeps == []
    assert (telemetry.value("retries_total", system="postgresql", client=name,
                            operation="transaction", error_type="connection") or 0) == 0
    assert count(pg_admin, pg_table) == 1


@pytest.mark.parametrize("driver", DRIVERS)
async def test_a_write_through_execute_pings_a_connection_idle_past_the_threshold(
    driver: str, make_db: MakeDb, pg_admin: Admin, pg_table: str, telemetry: CapturedTelemetry,
) -> None:
    clock = FakeClock()
    name = f"apg-ping-{driver}"
    db = make_db(PG_URLS[driver], name=name, policy=fast_policy(clock=clock),
                 validate_idle_after=0.0,
                 engine_options={"pool_size": 1, "max_overflow": 0})
    pid = int((await db.execute("SELECT pg_backend_pid()")).scalar())
    pg_admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    await await_until(lambda: backend_gone(pg_admin, pid), 10)
    await db.execute(f"INSERT INTO {pg_table} (id, v) VALUES (1, 1)")
    # The ping at checkout found it gone and the pool made a new one: no failed attempt.
    assert clock.sleeps == []
    assert int((await db.execute("SELECT pg_backend_pid()")).scalar()) != pid
    assert (telemetry.value("retries_total", system="postgresql", client=name,
                            operation="execute", error_type="connection") or 0) == 0
    assert count(pg_admin, pg_table) == 1
