"""What the demo shows: one row per client, read from ``health()`` and from the metrics.

The numbers come from the Prometheus registry the clients report to (the same series
``/metrics`` serves), so the view works unchanged with any client that follows the catalog.
:func:`render` draws the rich live view; :func:`plain_line` is the ``--no-tui`` log line.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from instrumented_clients.health import HealthRegistry

__all__ = ["ClientRow", "DemoView", "Frame", "RecentLog", "metric_total", "plain_line", "render"]

_COUNTED = {
    "operation_duration_seconds_count": "operations",
    "retries_total": "retries",
    "circuit_breaker_rejections_total": "rejections",
    "buffer_dropped_events_total": "drops",
    "buffer_events": "buffer",
    "consumed_messages_total": "consumed",
}


@dataclass(frozen=True, slots=True)
class ClientRow:
    """One client's line in the view."""

    name: str
    system: str
    required: bool
    state: str
    healthy: bool
    operations: float
    ops_per_second: float
    retries: float
    reconnect_failures: int
    breaker: str
    buffer: int | None
    capacity: int | None
    drops: float
    last_error: str | None


@dataclass(frozen=True, slots=True)
class Frame:
    """Everything one refresh shows."""

    status: str
    issues: list[str]
    rows: list[ClientRow]
    uptime: float
    orders: Mapping[str, int]
    chaos: str | None
    url: str | None
    recent: list[str] = field(default_factory=list)


class RecentLog(logging.Handler):
    """Keeps the last log lines, one line each, for the view's "recent events" panel: log lines
    printed above a live view would push it off the screen during an outage."""

    def __init__(self, size: int = 8, width: int = 150) -> None:
        super().__init__()
        self.width = width
        self._lines: deque[str] = deque(maxlen=size)
        self._lines_lock = threading.Lock()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s",
                                            "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = " ".join(self.format(record).split())
        except Exception:  # a log line must never break the demo
            return
        if len(line) > self.width:
            line = line[: self.width - 1] + "…"
        with self._lines_lock:
            self._lines.append(line)

    def lines(self) -> list[str]:
        with self._lines_lock:
            return list(self._lines)


def metric_total(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    total = 0.0
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(key) == value
                                           for key, value in labels.items()):
                total += sample.value
    return total


_RATE_WINDOW = 2.0


class DemoView:
    """Builds frames from the health registry and the metric registry; ops/s from the change
    in ``operation_duration_seconds_count`` over the last two seconds or so."""

    def __init__(self, health: HealthRegistry, registry: CollectorRegistry, *,
                 namespace: str = "resilient_client",
                 orders: Callable[[], Mapping[str, int]] = dict,
                 chaos: Callable[[], str | None] = lambda: None, url: str | None = None,
                 recent: RecentLog | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.health = health
        self.registry = registry
        self.namespace = namespace
        self._orders = orders
        self._chaos = chaos
        self.url = url
        self.recent = recent
        self._clock = clock
        self._started = clock()
        # (time, operations per client) of recent frames: ops/s is taken over about
        # _RATE_WINDOW seconds, not between two redraws a quarter second apart.
        self._history: deque[tuple[float, dict[str, float]]] = deque()

    def totals(self) -> dict[tuple[str, str], dict[str, float]]:
        """Per (system, client): the summed samples of the metrics the view shows."""
        wanted = {f"{self.namespace}_{name}": key for name, key in _COUNTED.items()}
        totals: dict[tuple[str, str], dict[str, float]] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                key = wanted.get(sample.name)
                if key is None:
                    continue
                labels = sample.labels
                bucket = totals.setdefault((labels.get("system", ""), labels.get("client", "")),
                                           {})
                bucket[key] = bucket.get(key, 0.0) + sample.value
        return totals

    def frame(self) -> Frame:
        report = self.health.check()
        totals = self.totals()
        now = self._clock()
        while len(self._history) > 1 and now - self._history[1][0] >= _RATE_WINDOW:
            self._history.popleft()
        previous_time, previous_ops = self._history[0] if self._history else (now, {})
        elapsed = now - previous_time
        current_ops: dict[str, float] = {}
        rows = []
        for name, dependency in report["dependencies"].items():
            system = str(dependency.get("system", "?"))
            numbers = totals.get((system, str(dependency.get("client", name))), {})
            # A consumer counts each message as a ``process`` operation and as consumed: once.
            operations = max(numbers.get("operations", 0.0), numbers.get("consumed", 0.0))
            current_ops[name] = operations
            rate = (operations - previous_ops.get(name, operations)) / elapsed if elapsed else 0.0
            pending = dependency.get("pending_events")
            capacity = dependency.get("buffer_capacity")
            rows.append(ClientRow(
                name=name, system=system, required=bool(dependency.get("required")),
                state=str(dependency.get("state", "unknown")),
                healthy=bool(dependency.get("healthy")), operations=operations,
                ops_per_second=max(0.0, rate), retries=numbers.get("retries", 0.0),
                reconnect_failures=int(dependency.get("reconnect_attempts") or 0),
                breaker=str(dependency.get("circuit_breaker", "-")),
                buffer=pending if isinstance(pending, int) else None,
                capacity=capacity if isinstance(capacity, int) else None,
                drops=numbers.get("drops", 0.0),
                last_error=dependency.get("last_error") or dependency.get("error"),
            ))
        self._history.append((now, current_ops))
        return Frame(status=report["status"], issues=list(report["issues"]), rows=rows,
                     uptime=now - self._started, orders=dict(self._orders()),
                     chaos=self._chaos(), url=self.url,
                     recent=self.recent.lines() if self.recent is not None else [])


def _orders_text(orders: Mapping[str, int]) -> str:
    keys = ("created", "stored", "cached", "published", "consumed", "outstanding", "duplicates")
    return "  ".join(f"{key} {orders[key]}" for key in keys if key in orders)


def plain_line(frame: Frame) -> str:
    """One log line: status, each client's state and counters, the order books."""
    parts = [f"status={frame.status}"]
    for row in frame.rows:
        buffer = f" buffer={row.buffer}" if row.buffer is not None else ""
        parts.append(f"{row.name}={row.state}(ops/s={row.ops_per_second:.1f} "
                     f"retries={row.retries:.0f} breaker={row.breaker}{buffer} "
                     f"drops={row.drops:.0f})")
    if frame.orders:
        parts.append("orders: " + _orders_text(frame.orders).replace("  ", " "))
    if frame.chaos:
        parts.append(f"chaos: {frame.chaos}")
    return " ".join(parts)


_STATE_STYLE = {"connected": "bold green", "connecting": "yellow", "disconnected": "bold yellow",
                "failed": "bold red", "closing": "dim", "closed": "dim", "unknown": "red"}
_STATUS_STYLE = {"healthy": "bold white on green", "degraded": "bold black on yellow",
                 "unhealthy": "bold white on red"}


_WIDE = 130


def render(frame: Frame, width: int | None = None) -> Any:
    """The rich renderable of one frame (imported lazily: rich is the ``cli`` extra).

    Below 130 columns the "last error" column is left out (the issues lines still carry it), so
    that the numbers stay readable.
    """
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    header = Text.assemble(
        ("instrumented-clients demo  ", "bold"),
        (f" {frame.status.upper()} ", _STATUS_STYLE.get(frame.status, "bold")),
        f"  up {frame.uptime:5.0f}s",
        (f"   {frame.url}/metrics  {frame.url}/health" if frame.url else "", "cyan"),
    )
    wide = width is None or width >= _WIDE
    table = Table(expand=True, header_style="bold")
    columns = [("client", "left"), ("system", "left"), ("state", "left"), ("ops/s", "right"),
               ("ops", "right"), ("retries", "right"), ("reconnects", "right"),
               ("breaker", "left"), ("buffer", "right"), ("drops", "right")]
    if wide:
        columns.append(("last error", "left"))
    for column, justify in columns:
        table.add_column(column, justify=justify,  # type: ignore[arg-type]
                         no_wrap=True, overflow="ellipsis",
                         ratio=1 if column == "last error" else None)
    for row in frame.rows:
        buffer = "-" if row.buffer is None else (
            f"{row.buffer}/{row.capacity}" if row.capacity else str(row.buffer))
        cells: list[str | Text] = [
            row.name + ("" if row.required else " (optional)"), row.system,
            Text(row.state, style=_STATE_STYLE.get(row.state, "")),
            f"{row.ops_per_second:.1f}", f"{row.operations:.0f}", f"{row.retries:.0f}",
            str(row.reconnect_failures),
            Text(row.breaker, style="bold red" if row.breaker == "open" else
                 "yellow" if row.breaker == "half_open" else "green"),
            Text(buffer, style="bold yellow" if row.buffer else ""),
            Text(f"{row.drops:.0f}", style="bold red" if row.drops else ""),
        ]
        if wide:
            cells.append(Text(row.last_error or "", style="dim"))
        table.add_row(*cells)
    parts: list[Any] = [header, table, Text("orders  " + _orders_text(frame.orders))]
    if frame.chaos:
        parts.append(Text(f"chaos   {frame.chaos}", style="magenta"))
    for issue in frame.issues[:4]:
        parts.append(Text(f"issue   {issue}", style="yellow", overflow="ellipsis", no_wrap=True))
    if frame.recent:
        parts.append(Text("recent events", style="bold"))
        for line in frame.recent:
            style = "red" if " ERROR " in line else "yellow" if " WARNING " in line else "dim"
            parts.append(Text(f"  {line}", style=style, overflow="ellipsis", no_wrap=True))
    parts.append(Text("Ctrl-C or SIGTERM stops the demo cleanly (buffer flushed, summary "
                      "printed).", style="dim"))
    return Group(*parts)
