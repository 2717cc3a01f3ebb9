"""Client-side instructions per Redis operation, raw redis-py vs ResilientRedis (callgrind).

Wall-clock throughput on a shared 2-core machine swings by more than the few percent being
measured; instruction counts do not. Each contender runs in its own process under
``valgrind --tool=callgrind`` twice, with N and 3N operations; the difference divided by 2N is the
cost of one operation, start-up and imports cancelled out. This counts the client's CPU work only
(the server's and the network's time are not in it), so the ratio is a lower bound of the
throughput ratio: on loopback a GET's round trip adds at least as much wall time again.

Run: ``python bench/redis_instructions.py`` (needs valgrind and a Redis on 127.0.0.1:6379).
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

OPERATIONS = {"GET": 200, "SET": 200, "pipeline x100": 20}


def instructions(contender: str, count: int, operation: str) -> int:
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, "-c", CHILD, contender, str(count), operation],
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
    print("| operation | redis-py instructions/op | ResilientRedis instructions/op | added | "
          "redis-py / ResilientRedis |")
    print("|---|---:|---:|---:|---:|")
    for operation in OPERATIONS:
        raw = per_operation("redis-py", operation)
        ours = per_operation("resilient", operation)
        print(f"| {operation} | {raw:,.0f} | {ours:,.0f} | {ours - raw:+,.0f} | "
              f"{raw / ours:.1%} |")


if __name__ == "__main__":
    main()
