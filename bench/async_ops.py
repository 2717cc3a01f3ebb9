"""The asyncio clients vs plain redis.asyncio and a plain AsyncEngine: throughput with many tasks.

Contenders run interleaved round by round in one run (drift on a shared machine hits all alike);
the median and the spread of the rounds are reported:

- Redis: ``tasks`` concurrent tasks each awaiting ``ops`` GETs, on ``redis.asyncio.Redis`` vs
  ``AsyncResilientRedis`` (metrics on, tracing not configured);
- SQL: ``tasks`` concurrent tasks each running ``SELECT 1`` in its own committed transaction on
  PostgreSQL through asyncpg: ``create_async_engine(url)`` without and with ``pool_pre_ping``,
  with ``async with engine.connect()``, vs ``AsyncResilientDatabase.execute`` (a read: no ping,
  a connection found dead is replaced and the read rerun at once);
- SQL short transaction (INSERT + UPDATE): ``async with engine.begin()`` vs
  ``AsyncResilientDatabase.transaction`` with and without COMMIT outcome resolution (which reads
  the transaction id before COMMIT in the asyncio client: one round trip).

Run: ``.venv/bin/python bench/async_ops.py [--rounds 7]``; prints markdown tables.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import redis.asyncio
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from instrumented_clients import AsyncResilientDatabase, AsyncResilientRedis
from instrumented_clients.telemetry import Telemetry

REDIS_URL = "redis://127.0.0.1:6379/0"
PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


async def throughput(tasks: int, ops: int, operation: Callable[[], Awaitable[object]]) -> float:
    async def worker() -> None:
        for _ in range(ops):
            await operation()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return tasks * ops / (time.perf_counter() - started)


def table(title: str, results: dict[str, list[float]], baseline: str) -> str:
    base = statistics.median(results[baseline])
    lines = [f"| {title} | median ops/s | min–max | vs {baseline} |", "|---|---:|---:|---:|"]
    for name, values in results.items():
        median = statistics.median(values)
        lines.append(f"| {name} | {median:,.0f} | {min(values):,.0f}–{max(values):,.0f} | "
                     f"{median / base:.1%} |")
    return "\n".join(lines)


async def main(rounds: int, tasks: int, ops: int) -> None:
    telemetry = Telemetry(registry=CollectorRegistry())
    plain_redis = redis.asyncio.Redis.from_url(REDIS_URL)
    ours_redis = AsyncResilientRedis(REDIS_URL, name="bench", telemetry=telemetry)
    await plain_redis.set("bench:async", "x")
    engine = create_async_engine(PG_URL, pool_pre_ping=True, hide_parameters=True)
    unpinged = create_async_engine(PG_URL, hide_parameters=True)
    database = AsyncResilientDatabase(PG_URL, name="bench", telemetry=telemetry)
    unresolved = AsyncResilientDatabase(PG_URL, name="bench-unresolved", telemetry=telemetry,
                                        resolve_commit_outcome=False)
    select_one = text("SELECT 1")
    table_name = f"bench_{uuid.uuid4().hex[:10]}"
    insert = text(f"INSERT INTO {table_name} (id, v) VALUES (:id, 0)")
    update = text(f"UPDATE {table_name} SET v = v + 1 WHERE id = :id")
    ids = itertools.count(1)
    async with unpinged.begin() as connection:
        await connection.execute(text(f"CREATE TABLE {table_name} (id bigint PRIMARY KEY, v int)"))

    def plain_select(on: AsyncEngine) -> Callable[[], Awaitable[object]]:
        async def run() -> object:
            async with on.connect() as connection:
                value = (await connection.execute(select_one)).scalar()
                await connection.commit()
                return value

        return run

    async def ours_select() -> object:
        return (await database.execute("SELECT 1")).scalar()

    async def work(connection: AsyncConnection) -> None:
        row_id = next(ids)
        await connection.execute(insert, {"id": row_id})
        await connection.execute(update, {"id": row_id})

    async def plain_txn() -> object:
        async with unpinged.begin() as connection:
            await work(connection)
        return None

    def ours_txn(on: AsyncResilientDatabase) -> Callable[[], Awaitable[object]]:
        return lambda: on.transaction(work)

    redis_results: dict[str, list[float]] = {"redis.asyncio": [], "AsyncResilientRedis": []}
    sql_results: dict[str, list[float]] = {"AsyncEngine": [], "AsyncEngine + pre-ping": [],
                                           "AsyncResilientDatabase": []}
    txn_results: dict[str, list[float]] = {
        "AsyncEngine": [], "AsyncResilientDatabase": [],
        "AsyncResilientDatabase, no COMMIT resolution": []}
    contenders = [
        (redis_results["redis.asyncio"], lambda: plain_redis.get("bench:async"), ops),
        (redis_results["AsyncResilientRedis"], lambda: ours_redis.get("bench:async"), ops),
        (sql_results["AsyncEngine"], plain_select(unpinged), max(1, ops // 4)),
        (sql_results["AsyncEngine + pre-ping"], plain_select(engine), max(1, ops // 4)),
        (sql_results["AsyncResilientDatabase"], ours_select, max(1, ops // 4)),
        (txn_results["AsyncEngine"], plain_txn, max(1, ops // 8)),
        (txn_results["AsyncResilientDatabase"], ours_txn(database), max(1, ops // 8)),
        (txn_results["AsyncResilientDatabase, no COMMIT resolution"], ours_txn(unresolved),
         max(1, ops // 8)),
    ]
    for _ in contenders:  # warm-up: pools filled, statements cached
        await throughput(tasks, 5, _[1])
    for round_number in range(rounds):
        order = contenders if round_number % 2 == 0 else list(reversed(contenders))
        for results, operation, count in order:
            results.append(await throughput(tasks, count, operation))
    print(f"{rounds} rounds, {tasks} concurrent tasks, interleaved; Redis GET × {ops} per task, "
          f"SQL SELECT 1 × {max(1, ops // 4)} per task (PostgreSQL, asyncpg, pool of 5 + 10)\n")
    print(table("Redis GET", redis_results, "redis.asyncio"))
    print()
    print(table("SQL SELECT 1", sql_results, "AsyncEngine + pre-ping"))
    print()
    print(table("SQL SELECT 1", sql_results, "AsyncEngine"))
    print()
    print(f"Short transaction (INSERT + UPDATE) × {max(1, ops // 8)} per task:\n")
    print(table("SQL transaction", txn_results, "AsyncEngine"))
    async with unpinged.begin() as connection:
        await connection.execute(text(f"DROP TABLE IF EXISTS {table_name}"))
    await plain_redis.aclose()
    await ours_redis.aclose()
    await engine.dispose()
    await unpinged.dispose()
    await database.aclose()
    await unresolved.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--ops", type=int, default=200)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.rounds, arguments.tasks, arguments.ops))
