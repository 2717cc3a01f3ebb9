"""Success-path cost per call: a bare call against tenacity, stamina, backoff, pybreaker and ours.

Run with ``python bench/hot_path.py`` (``--write`` also updates ``docs/benchmarks.md``). Every
contender wraps the same trivial function; each round runs every contender once, in a rotated
order, so that drift in machine load (two cores, other work running) spreads over all of them
instead of biasing one. Figures are ns per call: the median over the rounds and the spread
(min–max).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import backoff
import pybreaker
import stamina
import tenacity
from prometheus_client import CollectorRegistry

from instrumented_clients import CircuitBreaker, Guard, RetryPolicy, Telemetry, retry

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
HEADING = "## Success-path overhead (bench/hot_path.py)"


def work() -> int:
    return 1


def contenders() -> dict[str, Callable[[], object]]:
    """name -> a zero-argument callable that performs one guarded call of ``work``."""
    tenacity_work = tenacity.retry(
        stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_exponential_jitter()
    )(work)
    stamina_work = stamina.retry(on=Exception, attempts=3)(work)
    backoff_work = backoff.on_exception(backoff.expo, Exception, max_tries=3)(work)
    pybreaker_work = pybreaker.CircuitBreaker()(work)

    # Ours: retry + breaker + operation metrics on a fresh registry; no tracer provider is
    # configured, so the OpenTelemetry sink must cost nothing beyond its enabled check.
    telemetry = Telemetry(registry=CollectorRegistry())
    breaker = CircuitBreaker(instrumentation=telemetry, name="bench", system="custom")
    guard = Guard(RetryPolicy(), breaker=breaker, instrumentation=telemetry, system="custom",
                  client="bench", operation="work")
    guard_call = guard.call
    decorated = retry(RetryPolicy(), breaker=CircuitBreaker(instrumentation=telemetry),
                      instrumentation=telemetry, client="bench", operation="decorated")(work)

    return {
        "bare call": work,
        "tenacity": tenacity_work,
        "stamina": stamina_work,
        "backoff": backoff_work,
        "pybreaker": pybreaker_work,
        "ours: guard.call(fn)": lambda: guard_call(work),
        "ours: @retry decorator": decorated,
    }


def time_per_call(fn: Callable[[], object], calls: int) -> float:
    """ns per call of ``fn`` over ``calls`` calls, loop overhead included (same for all)."""
    loop = range(calls)
    started = time.perf_counter_ns()
    for _ in loop:
        fn()
    return (time.perf_counter_ns() - started) / calls


def calibrate(fn: Callable[[], object], target_seconds: float) -> int:
    calls = 1000
    while True:
        elapsed = time_per_call(fn, calls) * calls / 1e9
        if elapsed >= target_seconds / 4:
            return max(1000, int(calls * target_seconds / elapsed))
        calls *= 4


def run(rounds: int, target_seconds: float) -> dict[str, list[float]]:
    funcs = contenders()
    for fn in funcs.values():  # warm up and prove each contender works
        assert fn() == 1
    sizes = {name: calibrate(fn, target_seconds) for name, fn in funcs.items()}
    names = list(funcs)
    results: dict[str, list[float]] = {name: [] for name in names}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for round_number in range(rounds):
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                results[name].append(time_per_call(funcs[name], sizes[name]))
            print(f"round {round_number + 1}/{rounds} done", file=sys.stderr)
    finally:
        if gc_was_enabled:
            gc.enable()
    return results


def render(results: dict[str, list[float]], rounds: int, command: str) -> str:
    bare = statistics.median(results["bare call"])
    ten = statistics.median(results["tenacity"])
    lines = [
        HEADING,
        "",
        "Per-call cost on the success path (the wrapped function returns at once), ns/call: "
        f"median over {rounds} interleaved rounds and the spread (min–max). *Overhead* is the "
        "median minus the bare call's.",
        "",
        "| contender | median ns/call | spread (min–max) | overhead ns | × bare call | "
        "× tenacity | overhead × tenacity's |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, samples in results.items():
        median = statistics.median(samples)
        overhead = median - bare
        lines.append(
            f"| {name} | {median:,.0f} | {min(samples):,.0f}–{max(samples):,.0f} | "
            f"{overhead:,.0f} | {median / bare:.1f} | {median / ten:.2f} | "
            f"{overhead / (ten - bare):.2f} |"
        )
    ours = statistics.median(results["ours: guard.call(fn)"])
    pybreaker_alone = statistics.median(results["pybreaker"])
    lines += [
        "",
        f"- Ours (retry + circuit breaker + the operation histogram on a fresh "
        f"`CollectorRegistry`, tracing not configured) costs **{ours / pybreaker_alone:.2f}×** "
        "pybreaker alone (which has no retry and no metrics; the goal is at most 1×) and "
        f"**{ours / ten:.2f}×** tenacity's decorator per call "
        f"({(ours - bare) / (ten - bare):.2f}× its overhead).",
        "- tenacity: `tenacity.retry(stop=stop_after_attempt(3), wait=wait_exponential_jitter())`."
        " stamina: `stamina.retry(on=Exception, attempts=3)`, measured as users get it by "
        "default: its instrumentation hooks (Prometheus/structlog/logging, whichever is "
        "installed) are active, but they run only when a retry is scheduled; its success-path "
        "cost is the tenacity `Retrying` object it builds per call. backoff: "
        "`backoff.on_exception(backoff.expo, Exception, max_tries=3)`. pybreaker: "
        "`pybreaker.CircuitBreaker()` as a decorator (no retry, no metrics).",
        "- What ours does per successful call: two clock reads, the breaker's `quiet` flag "
        "read on each side of the call (a closed breaker with no failure counted has nothing "
        "to update), the tracing check, and one observation of the operation histogram: a "
        "bucket found by `bisect` and two updates of this thread's own list of values, no "
        "lock (the lists are summed at scrape). No event object is allocated.",
        f"- Machine: {os.cpu_count()} CPUs (`nproc`), Python {platform.python_version()} "
        f"({platform.python_implementation()}), {platform.machine()}; other work was running "
        "at the same time, so read differences of a few percent as noise.",
        f"- Command: `{command}`; date: {datetime.date.today().isoformat()}.",
        "",
    ]
    return "\n".join(lines)


def write_section(section: str) -> None:
    """Replace this benchmark's own section of docs/benchmarks.md, leaving the others alone."""
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n\n"
    pattern = re.compile(rf"^{re.escape(HEADING)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text).rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DOCS.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=0.15,
                        help="target time per contender per round")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    options = parser.parse_args()
    if options.rounds < 7:
        parser.error("--rounds must be at least 7")
    results = run(options.rounds, options.seconds)
    command = "python bench/hot_path.py" + (" --write" if options.write else "")
    section = render(results, options.rounds, command)
    print(section)
    if options.write:
        write_section(section)
        print(f"wrote {DOCS.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
