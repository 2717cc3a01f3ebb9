"""The asyncio clients vs plain redis.asyncio and a plain AsyncEngine: throughput with many tasks.

Contenders run interleaved round by round in one run (drift on a shared machine hits all alike);
the median and the spread of the rounds are reported:

- Redis: ``tasks`` concurrent tasks each awaiting ``ops`` GETs, on ``redis.asyncio.Redis`` vs
  ``AsyncResilientRedis`` (metrics on, tracing not configured);
- SQL: ``tasks`` concurrent tasks each running ``SELECT 1`` in its own committed transaction on
  PostgreSQL through asyncpg: ``create_async_engine(url, pool_pre_ping=True)`` with
  ``async with engine.connect()`` vs ``AsyncResilientDatabase.execute`` (the same pre-ping).

Run: ``.venv/bin/python bench/async_ops.py [--rounds 7]``; prints markdown tables.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import redis.asyncio
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

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
    database = AsyncResilientDatabase(PG_URL, name="bench", telemetry=telemetry)
    select_one = text("SELECT 1")

    async def plain_select() -> object:
        async with engine.connect() as connection:
            value = (await connection.execute(select_one)).scalar()
            await connection.commit()
            return value

    async def ours_select() -> object:
        return (await database.execute("SELECT 1")).scalar()

    redis_results: dict[str, list[float]] = {"redis.asyncio": [], "AsyncResilientRedis": []}
    sql_results: dict[str, list[float]] = {"AsyncEngine + pre-ping": [],
                                           "AsyncResilientDatabase": []}
    contenders = [
        (redis_results["redis.asyncio"], lambda: plain_redis.get("bench:async"), ops),
        (redis_results["AsyncResilientRedis"], lambda: ours_redis.get("bench:async"), ops),
        (sql_results["AsyncEngine + pre-ping"], plain_select, max(1, ops // 4)),
        (sql_results["AsyncResilientDatabase"], ours_select, max(1, ops // 4)),
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
    await plain_redis.aclose()
    await ours_redis.aclose()
    await engine.dispose()
    await database.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--ops", type=int, default=200)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.rounds, arguments.tasks, arguments.ops))
