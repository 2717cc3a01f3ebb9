"""Plain SQLAlchemy vs ResilientDatabase on the local PostgreSQL: throughput of the success path.

Contenders, interleaved round by round in one run (so drift on a shared machine hits all alike):

- ``sqlalchemy``: ``create_engine(url)`` as most code has it (no pre-ping);
- ``sqlalchemy+pre_ping``: the same engine options ResilientDatabase uses (``pool_pre_ping``,
  ``hide_parameters``), i.e. the cost of *our* layer alone;
- ``resilient``: ``ResilientDatabase`` (metrics on, tracing not configured), with PostgreSQL's
  COMMIT outcome resolution (the default: the transaction id taken in the ``BEGIN`` round trip)
  and idle validation (no ping for reads and ``transaction(fn)``, whose own BEGIN finds a dead
  pooled connection; the default threshold for writes through ``execute``);
- ``resilient+pre_ping``: the same with ``pool_pre_ping=True`` in ``engine_options``, i.e. a
  ping on every checkout: the client as it was before idle validation;
- ``resilient-no-resolution``: the same with ``resolve_commit_outcome=False``, so the pair shows
  what resolution costs (reads ask nothing: the SELECT rows should match).

Workloads: ``SELECT 1`` (``execute`` vs ``with engine.connect(): ...scalar()``) and a short
transaction (INSERT + UPDATE; ``transaction(fn)`` vs ``with engine.begin(): ...``).

Run: ``.venv/bin/python bench/db_ops.py [--rounds 7] [--ops 1500] [--no-write]``. Writes the
``## SQL (bench/db_ops.py)`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import platform
import re
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine

from instrumented_clients.db import ResilientDatabase
from instrumented_clients.telemetry import Telemetry

URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADING = "## SQL (bench/db_ops.py)"


def select_plain(engine: Engine) -> Callable[[], object]:
    statement = text("SELECT 1")

    def run() -> object:
        with engine.connect() as connection:
            return connection.execute(statement).scalar()

    return run


def select_resilient(db: ResilientDatabase) -> Callable[[], object]:
    return lambda: db.execute("SELECT 1").scalar()


def txn_statements(table: str, ids: itertools.count[int]) -> Callable[[Connection], None]:
    insert = text(f"INSERT INTO {table} (id, v) VALUES (:id, 0)")
    update = text(f"UPDATE {table} SET v = v + 1 WHERE id = :id")

    def work(connection: Connection) -> None:
        row_id = next(ids)
        connection.execute(insert, {"id": row_id})
        connection.execute(update, {"id": row_id})

    return work


def txn_plain(engine: Engine, work: Callable[[Connection], None]) -> Callable[[], object]:
    def run() -> object:
        with engine.begin() as connection:
            work(connection)
        return None

    return run


def txn_resilient(
    db: ResilientDatabase, work: Callable[[Connection], None]
) -> Callable[[], object]:
    return lambda: db.transaction(work)


def measure(fn: Callable[[], object], ops: int) -> tuple[float, float]:
    """Throughput (ops/s, wall clock) and the client thread's CPU time per operation (µs),
    which other processes on the machine disturb far less than wall-clock time."""
    cpu = time.thread_time()
    started = time.perf_counter()
    for _ in range(ops):
        fn()
    elapsed = time.perf_counter() - started
    return ops / elapsed, (time.thread_time() - cpu) / ops * 1e6


def calls_per_op(fn: Callable[[], object], ops: int = 300) -> float:
    """Python function calls per operation: deterministic, so it shows the layer's added work
    even when the machine is too busy for timings to separate the contenders."""
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(ops):
        fn()
    profile.disable()
    return sum(entry.callcount for entry in profile.getstats()) / ops


def op_by_op_latency(contenders: dict[str, Callable[[], object]], ops: int) -> dict[str, float]:
    """Median latency (µs) with the contenders alternating operation by operation: a burst of
    load from another process then hits every contender alike."""
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    order = list(contenders.items())
    for index in range(ops):
        for name, fn in order if index % 2 else reversed(order):
            started = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - started) * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--ops", type=int, default=1500, help="operations per contender per round")
    parser.add_argument("--latency-ops", type=int, default=3000,
                        help="operations per contender in the op-by-op latency pass")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument("--synchronous-commit", choices=("off", "on"), default="off",
                        help="on: every COMMIT waits for its WAL flush, as by default in "
                             "PostgreSQL (then the figures are not written to the docs)")
    args = parser.parse_args()

    table = f"bench_{uuid.uuid4().hex[:10]}"
    # No fsync wait at COMMIT (same for all): the disk's jitter would drown the client's cost.
    session = {"connect_args": {"options": f"-c synchronous_commit={args.synchronous_commit}"}}
    plain = create_engine(URL, **session)
    pinged = create_engine(URL, pool_pre_ping=True, hide_parameters=True, **session)
    db = ResilientDatabase(URL, name="bench", engine_options=session,
                           telemetry=Telemetry(registry=CollectorRegistry(), logs=False))
    pinging = ResilientDatabase(URL, name="bench-pinging",
                                engine_options={**session, "pool_pre_ping": True},
                                telemetry=Telemetry(registry=CollectorRegistry(), logs=False))
    unresolved = ResilientDatabase(URL, name="bench-unresolved", engine_options=session,
                                   resolve_commit_outcome=False,
                                   telemetry=Telemetry(registry=CollectorRegistry(), logs=False))
    ids = itertools.count(1)
    with plain.begin() as connection:
        connection.execute(text(f"CREATE TABLE {table} (id bigint PRIMARY KEY, v int)"))
    try:
        workloads: dict[str, dict[str, Callable[[], object]]] = {
            "SELECT 1": {
                "sqlalchemy": select_plain(plain),
                "sqlalchemy+pre_ping": select_plain(pinged),
                "resilient": select_resilient(db),
                "resilient+pre_ping": select_resilient(pinging),
                "resilient-no-resolution": select_resilient(unresolved),
            },
            "transaction (INSERT+UPDATE)": {
                "sqlalchemy": txn_plain(plain, txn_statements(table, ids)),
                "sqlalchemy+pre_ping": txn_plain(pinged, txn_statements(table, ids)),
                "resilient": txn_resilient(db, txn_statements(table, ids)),
                "resilient+pre_ping": txn_resilient(pinging, txn_statements(table, ids)),
                "resilient-no-resolution": txn_resilient(unresolved, txn_statements(table, ids)),
            },
        }
        for contenders in workloads.values():  # warm pools, statement caches, server buffers
            for fn in contenders.values():
                measure(fn, 200)
        results: dict[str, dict[str, list[tuple[float, float]]]] = {
            name: {contender: [] for contender in contenders}
            for name, contenders in workloads.items()
        }
        for round_number in range(args.rounds):
            for name, contenders in workloads.items():
                order = list(contenders.items())
                if round_number % 2:
                    order.reverse()  # no contender always runs first
                for contender, fn in order:
                    results[name][contender].append(measure(fn, args.ops))
            print(f"round {round_number + 1}/{args.rounds} done", flush=True)
        calls = {name: {contender: calls_per_op(fn) for contender, fn in contenders.items()}
                 for name, contenders in workloads.items()}
        latency = {name: op_by_op_latency(contenders, args.latency_ops)
                   for name, contenders in workloads.items()}
    finally:
        db.close()
        pinging.close()
        unresolved.close()
        with plain.begin() as connection:
            connection.execute(text(f"DROP TABLE IF EXISTS {table}"))
        plain.dispose()
        pinged.dispose()

    section = render(results, calls, latency, args.rounds, args.ops, args.latency_ops)
    print(section)
    if not args.no_write and args.synchronous_commit == "off":
        write_section(section)


def render(results: dict[str, dict[str, list[tuple[float, float]]]],
           calls: dict[str, dict[str, float]], latency: dict[str, dict[str, float]],
           rounds: int, ops: int, latency_ops: int) -> str:
    lines = [
        HEADING,
        "",
        f"`.venv/bin/python bench/db_ops.py --rounds {rounds} --ops {ops} --latency-ops "
        f"{latency_ops}`, {time.strftime('%Y-%m-%d', time.gmtime())}, under the shared test "
        "lock (no other live test running; other processes share the CPU).",
        "",
        f"PostgreSQL 127.0.0.1 (loopback), psycopg 3, one thread, {rounds} interleaved rounds of "
        f"{ops} operations per contender; Python {platform.python_version()}, "
        f"{platform.machine()}, 2 shared cores. Tracing not configured; metrics on; "
        "`synchronous_commit=off` for every contender so disk flushes do not drown the "
        "client-side cost. "
        "Throughput in operations/s: median (min–max over rounds); ratio = median / median of "
        "the baseline named.",
        "",
        "| workload | contender | ops/s median | min–max | vs sqlalchemy | vs sqlalchemy+pre_ping "
        "| client CPU µs/op median | CPU vs sqlalchemy+pre_ping | Python calls/op |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, contenders in results.items():
        medians = {c: statistics.median(v[0] for v in values) for c, values in contenders.items()}
        cpu = {c: statistics.median(v[1] for v in values) for c, values in contenders.items()}
        for contender, values in contenders.items():
            rates = [v[0] for v in values]
            lines.append(
                f"| {name} | {contender} | {medians[contender]:,.0f} | "
                f"{min(rates):,.0f}–{max(rates):,.0f} | "
                f"{medians[contender] / medians['sqlalchemy']:.1%} | "
                f"{medians[contender] / medians['sqlalchemy+pre_ping']:.1%} | "
                f"{cpu[contender]:.0f} | "
                f"{cpu[contender] - cpu['sqlalchemy+pre_ping']:+.0f} µs | "
                f"{calls[name][contender]:.0f} |"
            )
    lines += [
        "",
        f"Op-by-op latency, contenders alternating every operation ({latency_ops} each), "
        "median µs:",
        "",
        "| workload | " + " | ".join(next(iter(latency.values()))) + " | resilient vs "
        "sqlalchemy+pre_ping |",
        "|---|" + "---:|" * (len(next(iter(latency.values()))) + 1),
    ]
    for name, medians in latency.items():
        lines.append(
            f"| {name} | " + " | ".join(f"{value:,.0f}" for value in medians.values())
            + f" | {medians['resilient'] - medians['sqlalchemy+pre_ping']:+.0f} µs |"
        )
    lines += ["", "Reading of this run (resilient vs plain SQLAlchemy without pre-ping; before = "
              "resilient+pre_ping, a ping on every checkout):", ""]
    for name, contenders in results.items():
        rates = {c: statistics.median(v[0] for v in values) for c, values in contenders.items()}
        cpu = {c: statistics.median(v[1] for v in values) for c, values in contenders.items()}
        ratio = rates["resilient"] / rates["sqlalchemy"]
        before = rates["resilient+pre_ping"] / rates["sqlalchemy"]
        lines.append(
            f"- {name}: {ratio:.0%} of plain SQLAlchemy's throughput, before {before:.0%} "
            f"({'meets' if ratio >= 0.95 else 'below'} the 95 % goal in this run); "
            f"{calls[name]['resilient'] - calls[name]['sqlalchemy']:+.0f} Python calls "
            f"and {cpu['resilient'] - cpu['sqlalchemy']:+.0f} µs of client CPU per operation "
            "vs plain SQLAlchemy."
        )
    lines += ["", "COMMIT outcome resolution (resilient vs resilient-no-resolution, same run):", ""]
    for name, contenders in results.items():
        rates = {c: statistics.median(v[0] for v in values) for c, values in contenders.items()}
        cost = 1 - rates["resilient"] / rates["resilient-no-resolution"]
        extra = latency[name]["resilient"] - latency[name]["resilient-no-resolution"]
        lines.append(
            f"- {name}: {cost:+.1%} of the throughput, {extra:+.0f} µs op-by-op median "
            f"({'within' if cost <= 0.05 else 'above'} the 5 % goal in this run)."
        )
    lines += [
        "",
        "`transaction(fn)` takes its transaction id in the round trip that opens it "
        "(`BEGIN ...; SELECT pg_current_xact_id()` where psycopg sends `BEGIN` alone), so "
        "resolution adds no round trip there: what remains is assigning the id at BEGIN "
        "(which a writing transaction does anyway) and a few µs of client CPU. Once per pooled "
        "connection it reads the backend pid and timeline; a write through `execute()` pays "
        "one `pg_current_xact_id_if_assigned()` round trip before COMMIT; `read_only=True` and "
        "`idempotent=True` work ask nothing. An earlier design that read the id before COMMIT "
        "in every transaction cost 11–19 % here: that round trip was the whole difference.",
        "",
        "Without resolution the wire traffic is identical (checked through a counting proxy: "
        "the same statements and the same bytes per operation), so what the layer adds is "
        "client CPU: the guard (retry loop, breaker check and operation metrics: ~3 µs, see "
        "bench/hot_path.py), two histogram observations (~2 µs each), the breaker check and "
        "result buffering.",
        "",
        "`resilient` pings no connection in these workloads: reads and `transaction(fn)` send "
        "their BEGIN themselves as the first round trip (psycopg would send the same BEGIN "
        "with the first statement), so a pooled connection that died (failover, "
        "`pg_terminate_backend`) fails there, before any work, and is replaced at once; a "
        "write through `execute()` pings a connection idle longer than "
        "`DB_VALIDATE_IDLE_AFTER` (1 s). `resilient+pre_ping` pings on every checkout, one "
        "extra round trip (psycopg sends an empty query), as the client did before. On a "
        "shared, loaded machine single rounds vary several-fold; compare medians only when "
        "they differ by more than the min–max spread suggests.",
        "",
    ]
    return "\n".join(lines)


def write_section(section: str) -> None:
    existing = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n\n"
    pattern = re.compile(rf"^{re.escape(HEADING)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(existing):
        updated = pattern.sub(lambda _: section + "\n", existing)
    else:
        updated = existing.rstrip("\n") + "\n\n" + section + "\n"
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    DOCS.write_text(updated)


if __name__ == "__main__":
    main()
