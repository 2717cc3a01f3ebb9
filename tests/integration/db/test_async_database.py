"""AsyncResilientDatabase against the real PostgreSQL (asyncpg and psycopg) and MariaDB
(aiomysql): reruns, SERIALIZABLE, deadlocks, cancellation, passwords; blockbuster throughout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
import pymysql
import pytest
import pytest_asyncio
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from instrumented_clients import AsyncResilientDatabase, ConfigError
from instrumented_clients.resilience import JitterMode, RetryPolicy
from instrumented_clients.testing import CapturedTelemetry, FakeClock, await_until
from tests.integration.async_helpers import loop_lag, no_blocking

from .conftest import fast_policy
from .test_mariadb import maria_user, query

pytestmark = [pytest.mark.integration, pytest.mark.asyncio,
              pytest.mark.usefixtures("no_blocking", "loop_lag")]
__all__ = ["loop_lag", "maria_user", "no_blocking"]  # fixtures

PG_URLS = {"asyncpg": "postgresql://postgres@127.0.0.1:5432/test",
           "psycopg": "postgresql+psycopg://postgres@127.0.0.1:5432/test"}
MARIADB_URL = "mariadb://root@127.0.0.1:3306/test"
MakeDb = Callable[..., AsyncResilientDatabase]


@pytest_asyncio.fixture
async def make_db(telemetry: CapturedTelemetry) -> AsyncIterator[MakeDb]:
    made: list[AsyncResilientDatabase] = []

    def make(url: str, **options: Any) -> AsyncResilientDatabase:
        options.setdefault("telemetry", telemetry)
        options.setdefault("policy", fast_policy())
        database = AsyncResilientDatabase(url, **options)
        made.append(database)
        return database

    yield make
    for database in made:
        await database.aclose()


def backend_gone(admin: psycopg.Connection[tuple[Any, ...]], pid: int) -> bool:
    row = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return row is not None and row[0] == 0


@pytest.mark.parametrize("driver", sorted(PG_URLS))
async def test_terminated_backend_inside_transaction_reruns_it_and_writes_once(
    driver: str, make_db: MakeDb, pg_admin: psycopg.Connection[tuple[Any, ...]],
    pg_table: str, telemetry: CapturedTelemetry,
) -> None:
    db = make_db(PG_URLS[driver], name=f"apg-kill-{driver}")
    runs: list[int] = []

    async def work(connection: AsyncConnection) -> int:
        runs.append(1)
        await connection.execute(text(f"INSERT INTO {pg_table} (id, v) VALUES (1, 42)"))
        if len(runs) == 1:
            pid = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            pg_admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            await await_until(lambda: backend_gone(pg_admin, pid), 10)
        # On the first run the session is gone: this statement fails before COMMIT is sent.
        count = await connection.execute(text(f"SELECT count(*) FROM {pg_table}"))
        return int(count.scalar_one())

    assert await db.transaction(work) == 1
    assert len(runs) == 2
    assert pg_admin.execute(f"SELECT count(*), sum(v) FROM {pg_table}").fetchone() == (1, 42)
    assert telemetry.value("retries_total", system="postgresql", client=f"apg-kill-{driver}",
                           operation="transaction", error_type="connection") == 1
    assert telemetry.value("operation_duration_seconds_count", system="postgresql",
                           client=f"apg-kill-{driver}", operation="transaction",
                           outcome="success_after_retry") == 1
    assert db.health()["state"] == "connected"


async def test_two_serializable_tasks_reach_exactly_400(
    make_db: MakeDb, pg_admin: psycopg.Connection[tuple[Any, ...]], pg_table: str,
    telemetry: CapturedTelemetry,
) -> None:
    pg_admin.execute(f"INSERT INTO {pg_table} (id, v) VALUES (1, 0)")
    policy = RetryPolicy(max_attempts=50, initial_delay=0.001, max_delay=0.05,
                         jitter_mode=JitterMode.FULL)
    db = make_db(PG_URLS["asyncpg"], name="apg-serial", policy=policy)

    async def increment(connection: AsyncConnection) -> None:
        value = (await connection.execute(
            text(f"SELECT v FROM {pg_table} WHERE id = 1"))).scalar_one()
        await connection.execute(text(f"UPDATE {pg_table} SET v = :v WHERE id = 1"),
                                 {"v": value + 1})

    async def writer() -> None:
        for _ in range(200):
            await db.transaction(increment, isolation_level="SERIALIZABLE")

    await asyncio.wait_for(asyncio.gather(writer(), writer()), 90)
    assert pg_admin.execute(f"SELECT v FROM {pg_table} WHERE id = 1").fetchone() == (400,)
    retries = telemetry.value("retries_total", system="postgresql", client="apg-serial",
                              operation="transaction", error_type="serialization")
    assert retries is not None
    assert retries > 0


async def test_mariadb_deadlock_is_retried_and_both_transactions_commit(
    make_db: MakeDb, maria_admin: pymysql.connections.Connection, maria_table: str,
    telemetry: CapturedTelemetry,
) -> None:
    query(maria_admin, f"INSERT INTO {maria_table} (id, v) VALUES (1, 0), (2, 0)")
    db = make_db(MARIADB_URL, name="amaria-deadlock")
    both_hold_a_lock = asyncio.Barrier(2)
    runs = {"a": 0, "b": 0}

    def crossing(me: str, first: int,
                 second: int) -> Callable[[AsyncConnection], Awaitable[None]]:
        async def work(connection: AsyncConnection) -> None:
            runs[me] += 1
            await connection.execute(
                text(f"UPDATE {maria_table} SET v = v + 1 WHERE id = {first}"))
            if runs[me] == 1:
                await asyncio.wait_for(both_hold_a_lock.wait(), 20)
            await connection.execute(
                text(f"UPDATE {maria_table} SET v = v + 1 WHERE id = {second}"))

        return work

    await asyncio.wait_for(asyncio.gather(db.transaction(crossing("a", 1, 2)),
                                          db.transaction(crossing("b", 2, 1))), 60)
    assert sorted(runs.values()) == [1, 2]  # the victim ran again, the winner once
    assert query(maria_admin, f"SELECT sum(v), min(v) FROM {maria_table}") == (4, 2)
    assert telemetry.value("retries_total", system="mariadb", client="amaria-deadlock",
                           operation="transaction", error_type="deadlock") == 1


@pytest.mark.parametrize("driver", sorted(PG_URLS))
async def test_cancelled_mid_transaction_leaves_nothing_behind(
    driver: str, make_db: MakeDb, pg_admin: psycopg.Connection[tuple[Any, ...]],
    pg_table: str,
) -> None:
    db = make_db(PG_URLS[driver], name=f"apg-cancel-{driver}",
                 engine_options={"pool_size": 1, "max_overflow": 0})
    started = asyncio.Event()

    async def slow(connection: AsyncConnection) -> None:
        await connection.execute(text(f"INSERT INTO {pg_table} (id, v) VALUES (1, 1)"))
        started.set()
        await connection.execute(text("SELECT pg_sleep(30)"))

    task = asyncio.ensure_future(db.transaction(slow))
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The one pooled connection was discarded, not handed back mid-transaction.
    assert (await db.execute(f"SELECT count(*) FROM {pg_table}")).scalar() == 0

    async def insert(connection: AsyncConnection) -> int:
        await connection.execute(text(f"INSERT INTO {pg_table} (id, v) VALUES (2, 2)"))
        return int((await connection.execute(text("SELECT 7"))).scalar_one())

    assert await db.transaction(insert) == 7
    assert pg_admin.execute(f"SELECT id, v FROM {pg_table}").fetchall() == [(2, 2)]
    assert db.state.value == "connected"


async def test_wrong_password_one_attempt_clear_error_no_password(
    make_db: MakeDb, maria_user: tuple[str, str], telemetry: CapturedTelemetry
) -> None:
    user, password = maria_user
    right = make_db(f"mariadb://{user}:{password}@127.0.0.1:3306/test", name="amaria-ok")
    assert (await right.execute("SELECT 1")).scalar() == 1
    clock = FakeClock()
    wrong = "wrong-" + password
    db = make_db(f"mariadb://{user}:{wrong}@127.0.0.1:3306/test", name="amaria-auth",
                 policy=RetryPolicy(max_attempts=4, clock=clock))
    with pytest.raises(sa_exc.OperationalError, match="Access denied") as raised:
        await db.execute("SELECT 1")
    assert clock.sleeps == []
    assert await db.check() is False
    for text_out in (str(raised.value), repr(db.health()), telemetry.scrape()):
        assert wrong not in text_out
        assert password not in text_out
    assert telemetry.value("operation_duration_seconds_count",
                           system="mariadb", client="amaria-auth",
                           operation="execute", outcome="failure") == 1


async def test_sqlite_default_pool_gauges_health_and_malformed_urls(
    telemetry: CapturedTelemetry, tmp_path: Any,
) -> None:
    db = AsyncResilientDatabase(f"sqlite:///{tmp_path}/a.db", name="alite", telemetry=telemetry)
    await db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    inserted = await db.execute("INSERT INTO t (v) VALUES (:v)", {"v": "x"})
    assert inserted.rowcount == 1
    assert (await db.execute("SELECT v FROM t")).scalar() == "x"
    assert await db.check() is True
    assert db.health()["driver"] == "aiosqlite"
    # One task, never a full pool: no checkout could wait, none was timed.
    assert (telemetry.value("pool_wait_seconds_count", system="sqlite", client="alite")
            or 0) == 0
    await db.close()
    assert db.state.value == "closed"
    for url in ("nonsense", "postgresql://host:notaport/db", "postgresql://host:70000/db"):
        with pytest.raises(ConfigError, match="url"):
            AsyncResilientDatabase(url)
    with pytest.raises(ConfigError, match="DB_RETRY_MAX_ATTEMPTS"):
        AsyncResilientDatabase.from_env(environ={"DB_RETRY_MAX_ATTEMPTS": "x"})
