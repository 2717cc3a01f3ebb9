"""``demo --chaos``: each client talks through a :class:`FaultProxy`, and a schedule injects
connection cuts, blackholes, refusals and latency in turn, so that every metric moves."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from instrumented_clients.testing import FaultProxy

__all__ = ["Chaos", "Fault", "default_schedule", "proxy_for"]

_log = logging.getLogger("instrumented_clients.demo.chaos")

# A blackholed SQL connection hangs until TCP gives up (minutes): the database never gets one.
_KINDS_BY_SYSTEM = {
    "rabbitmq": ("cut", "blackhole", "refuse", "latency"),
    "redis": ("cut", "latency", "blackhole", "refuse"),
    "sql": ("cut", "latency", "refuse"),
}


@dataclass(frozen=True, slots=True)
class Fault:
    """One scheduled fault: ``kind`` on ``target`` for ``duration`` seconds (0 for a cut)."""

    target: str
    kind: str
    duration: float


def proxy_for(url: str) -> FaultProxy | None:
    """A started proxy in front of the URL's server, or None for a file database (SQLite)."""
    parts = urlsplit(url)
    if not parts.hostname:
        return None
    default_ports = {"amqp": 5672, "amqps": 5671, "redis": 6379, "rediss": 6379,
                     "postgresql": 5432, "mysql": 3306, "mariadb": 3306}
    port = parts.port or default_ports.get(parts.scheme.split("+", 1)[0], 0)
    if not port:
        return None
    return FaultProxy(parts.hostname, port).start()


def default_schedule(targets: Sequence[tuple[str, str]], interval: float) -> list[Fault]:
    """Round-robin over the targets, each time the next fault kind its system supports.

    Args:
        targets: ``(name, system)`` pairs; ``system`` is ``rabbitmq``, ``redis`` or ``sql``.
        interval: seconds between faults; a fault lasts 60 % of it.
    """
    schedule: list[Fault] = []
    longest = max((len(_KINDS_BY_SYSTEM.get(system, ("cut",))) for _, system in targets),
                  default=0)
    for round_number in range(longest):
        for name, system in targets:
            kinds = _KINDS_BY_SYSTEM.get(system, ("cut",))
            kind = kinds[round_number % len(kinds)]
            schedule.append(Fault(name, kind, 0.0 if kind == "cut" else interval * 0.6))
    return schedule


class Chaos:
    """Applies the schedule to the proxies from a background thread, healing after each fault."""

    def __init__(self, proxies: dict[str, FaultProxy], schedule: Sequence[Fault],
                 interval: float, *, latency: float = 0.25) -> None:
        self.proxies = proxies
        self.schedule = [fault for fault in schedule if fault.target in proxies]
        self.interval = interval
        self.latency = latency
        self.faults_injected = 0
        self._current: tuple[Fault, float] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-chaos", daemon=True)

    def start(self) -> None:
        if self.schedule:
            self._thread.start()

    def current(self) -> str | None:
        """What is being injected now, for the view."""
        current = self._current
        if current is None:
            return "between faults" if self.schedule else None
        fault, until = current
        if fault.kind == "cut":
            return f"cut every connection of {fault.target}"
        left = max(0.0, until - time.monotonic())
        return f"{fault.kind} on {fault.target} ({left:.0f}s left)"

    def _apply(self, fault: Fault) -> None:
        proxy = self.proxies[fault.target]
        _log.warning("chaos: %s on %s%s", fault.kind, fault.target,
                     f" for {fault.duration:.0f}s" if fault.duration else "")
        self.faults_injected += 1
        if fault.kind == "cut":
            proxy.cut()
        elif fault.kind == "blackhole":
            proxy.blackhole()
        elif fault.kind == "refuse":
            proxy.refuse()
        elif fault.kind == "latency":
            proxy.add_latency(self.latency)

    def _run(self) -> None:
        index = 0
        while not self._stop.wait(self.interval * 0.4):
            fault = self.schedule[index % len(self.schedule)]
            index += 1
            self._current = (fault, time.monotonic() + fault.duration)
            self._apply(fault)
            if fault.duration:
                self._stop.wait(fault.duration)
                self.proxies[fault.target].pass_through()
                _log.warning("chaos: %s healed", fault.target)
            else:
                self._stop.wait(1.0)  # let the view show the cut
            self._current = None

    def close(self) -> None:
        """Stop injecting and let traffic pass (the proxies stay up until :meth:`stop_proxies`),
        so that shutdown can flush the buffer."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for proxy in self.proxies.values():
            proxy.pass_through()

    def stop_proxies(self) -> None:
        for proxy in self.proxies.values():
            proxy.stop()
