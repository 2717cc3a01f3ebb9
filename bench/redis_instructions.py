"""Client-side instructions per Redis operation, raw redis-py vs ResilientRedis and
redis.asyncio vs AsyncResilientRedis (callgrind).

Wall-clock throughput on a shared 2-core machine swings by more than the few percent being
measured; instruction counts do not. Each contender runs in its own process under
``valgrind --tool=callgrind`` twice, with N and 3N operations; the difference divided by 2N is the
cost of one operation, start-up and imports cancelled out. This counts the client's CPU work only
(the server's and the network's time are not in it), so the ratio is a lower bound of the
throughput ratio: on loopback a GET's round trip adds at least as much wall time again.

Run: ``python bench/redis_instructions.py [--asyncio] [--source LABEL=DIR ...]`` (needs
valgrind and a Redis on 127.0.0.1:6379). With ``--asyncio`` the asyncio pair is measured, each
command awaited in turn on one event loop. Each ``--source`` measures the client from another
source tree in the same run, so the steps of a change are compared before/after side by side:
``git archive <commit> instrumented_clients | tar -x -C /tmp/step1`` then
``--source step1=/tmp/step1``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

CHILD = r"""
import sys, redis
from prometheus_client import CollectorRegistry
mode, n, op = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if mode == "redis-py":
    client = redis.Redis()
elif mode in ("redis.asyncio", "async-resilient"):
    exec(sys.argv[4])  # the asyncio child below
    sys.exit(0)
else:
    from instrumented_clients.redis import ResilientRedis
    from instrumented_clients.telemetry import Telemetry
    client = ResilientRedis("redis://127.0.0.1:6379/0", name="bench",
                            telemetry=Telemetry(registry=CollectorRegistry()))
def pipeline():
    with client.pipeline() as pipe:
        for i in range(100):
            pipe.set(f"bench:instructions:{i}", "x")
        pipe.execute()
def get():
    client.get("bench:instructions:1")
def set_():
    client.set("bench:instructions:1", "x")
fn = {"GET": get, "SET": set_, "pipeline x100": pipeline}[op]
for _ in range(5):
    fn()
for _ in range(n):
    fn()
"""

ASYNC_CHILD = r"""
import asyncio
async def main():
    if mode == "redis.asyncio":
        import redis.asyncio
        client = redis.asyncio.Redis()
    else:
        from instrumented_clients.redis import AsyncResilientRedis
        from instrumented_clients.telemetry import Telemetry
        client = AsyncResilientRedis("redis://127.0.0.1:6379/0", name="bench",
                                     telemetry=Telemetry(registry=CollectorRegistry()))
    async def pipeline():
        async with client.pipeline() as pipe:
            for i in range(100):
                pipe.set(f"bench:instructions:{i}", "x")
            await pipe.execute()
    async def get():
        await client.get("bench:instructions:1")
    async def set_():
        await client.set("bench:instructions:1", "x")
    fn = {"GET": get, "SET": set_, "pipeline x100": pipeline}[op]
    for _ in range(5):
        await fn()
    for _ in range(n):
        await fn()
    await client.aclose()
asyncio.run(main())
"""

OPERATIONS = {"GET": 200, "SET": 200, "pipeline x100": 20}
PAIRS = {"sync": (("redis-py", "redis-py"), ("resilient", "ResilientRedis")),
         "asyncio": (("redis.asyncio", "redis.asyncio"),
                     ("async-resilient", "AsyncResilientRedis"))}


def instructions(contender: str, count: int, operation: str, source: str | None = None) -> int:
    env = dict(os.environ)
    if source is not None:  # this tree's instrumented_clients comes first on the path
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (source, env.get("PYTHONPATH"))))
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, "-c", CHILD, contender, str(count), operation, ASYNC_CHILD],
        capture_output=True, text=True, check=True, env=env, cwd=os.sep,  # not this tree
    )
    match = re.search(r"Collected : (\d+)", done.stderr)
    if match is None:
        raise RuntimeError(f"no instruction count from callgrind: {done.stderr[-500:]}")
    return int(match.group(1))


def per_operation(contender: str, operation: str, source: str | None = None) -> float:
    count = OPERATIONS[operation]
    return (instructions(contender, 3 * count, operation, source)
            - instructions(contender, count, operation, source)) / (2 * count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--asyncio", action="store_true",
                        help="measure redis.asyncio vs AsyncResilientRedis")
    parser.add_argument(
        "--source", action="append", default=[], metavar="LABEL=DIR",
        help="measure our client from the source tree DIR (e.g. an earlier commit unpacked "
             "with git archive) as column LABEL; repeatable, in the order given. Without it, "
             "the installed package is measured")
    options = parser.parse_args()
    (raw_mode, raw_name), (our_mode, our_name) = PAIRS["asyncio" if options.asyncio else "sync"]
    sources: list[tuple[str, str | None]] = [(our_name, None)]
    if options.source:
        sources = [tuple(item.split("=", 1)) for item in options.source]  # type: ignore[misc]
    header = " | ".join(f"{label} (added, % of {raw_name})" for label, _ in sources)
    print(f"| operation | {raw_name} instructions/op | {header} |")
    print("|---|---:|" + "---:|" * len(sources))
    for operation in OPERATIONS:
        raw = per_operation(raw_mode, operation)
        cells = []
        for _, source in sources:
            ours = per_operation(our_mode, operation, source)
            cells.append(f"{ours:,.0f} ({ours - raw:+,.0f}, {(ours - raw) / raw:+.1%})")
        print(f"| {operation} | {raw:,.0f} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
