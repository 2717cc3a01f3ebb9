"""Client-side instructions per Redis operation, raw redis-py vs ResilientRedis and
redis.asyncio vs AsyncResilientRedis (callgrind).

Wall-clock throughput on a shared 2-core machine swings by more than the few percent being
measured; instruction counts do not. Each contender runs in its own process under
``valgrind --tool=callgrind`` twice, with N and 3N operations; the difference divided by 2N is the
cost of one operation, start-up and imports cancelled out. This counts the client's CPU work only
(the server's and the network's time are not in it), so the ratio is a lower bound of the
throughput ratio: on loopback a GET's round trip adds at least as much wall time again.

Run: ``python bench/redis_instructions.py [--asyncio]`` (needs valgrind and a Redis on
127.0.0.1:6379). With ``--asyncio`` the asyncio pair is measured, each command awaited in turn on
one event loop.
"""

from __future__ import annotations

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


def instructions(contender: str, count: int, operation: str) -> int:
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, "-c", CHILD, contender, str(count), operation, ASYNC_CHILD],
        capture_output=True, text=True, check=True,
    )
    match = re.search(r"Collected : (\d+)", done.stderr)
    if match is None:
        raise RuntimeError(f"no instruction count from callgrind: {done.stderr[-500:]}")
    return int(match.group(1))


def per_operation(contender: str, operation: str) -> float:
    count = OPERATIONS[operation]
    return (instructions(contender, 3 * count, operation)
            - instructions(contender, count, operation)) / (2 * count)


def main() -> None:
    (raw_mode, raw_name), (our_mode, our_name) = PAIRS[
        "asyncio" if "--asyncio" in sys.argv[1:] else "sync"]
    print(f"| operation | {raw_name} instructions/op | {our_name} instructions/op | added | "
          f"{raw_name} / {our_name} |")
    print("|---|---:|---:|---:|---:|")
    for operation in OPERATIONS:
        raw = per_operation(raw_mode, operation)
        ours = per_operation(our_mode, operation)
        print(f"| {operation} | {raw:,.0f} | {ours:,.0f} | {ours - raw:+,.0f} | "
              f"{raw / ours:.1%} |")


if __name__ == "__main__":
    main()
