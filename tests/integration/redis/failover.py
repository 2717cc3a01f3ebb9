"""A workload for failover tests: unique-id writes (``SADD`` of a fresh id per write) and reads,
in threads, while a primary is failed over or killed; and what it shows afterwards.

Two writers run side by side on the same client during the same fault, one acknowledging a
write when ``SADD`` returns, the other only once ``WAIT 1`` confirmed that a replica has it, so
both figures come from one failover. A write is:

- *acknowledged* when ``SADD`` replied; *applied twice* when it replied 0 for an id never sent
  before (a retry re-ran a write the server had already applied);
- *lost* when acknowledged (and, for the ``WAIT`` writer, confirmed) but missing from the set on
  the primary after the failover — Redis replicates asynchronously and does not promise
  otherwise;
- *failed* when the client raised (an ambiguous write is never retried: it may or may not be
  there).

*Time to recover*: the longest stretch, from the last write kept before the fault on, without an
acknowledged write that was kept — for a kill, from the kill to the first write the new primary
took; for ``SENTINEL FAILOVER``, while the client still wrote to the demoted primary.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis import exceptions as rx

from instrumented_clients import CircuitOpenError
from instrumented_clients.resilience.events import RetryScheduled

Key = Callable[[int], str]


@dataclass
class Writer:
    """One writing thread's record."""

    label: str
    key_for: Key
    confirm: Callable[[str], int] | None = None  # WAIT 1 on the key's primary: replicas reached
    acked: list[tuple[str, str, float]] = field(default_factory=list)  # (id, key, when)
    twice: list[str] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (id, key, error type)
    unconfirmed: set[str] = field(default_factory=set)

    def run(self, client: Any, stop: threading.Event) -> None:
        index = 0
        while not stop.is_set():
            uid, key = f"{self.label}-{index:07d}", self.key_for(index)
            index += 1
            try:
                added = client.sadd(key, uid)
            except (rx.RedisError, CircuitOpenError) as error:
                self.failed.append((uid, key, type(error).__name__))
                continue
            if added == 0:
                self.twice.append(uid)
            self.acked.append((uid, key, time.monotonic()))
            if self.confirm is not None:
                try:
                    if self.confirm(key) < 1:
                        self.unconfirmed.add(uid)
                except (rx.RedisError, CircuitOpenError):
                    self.unconfirmed.add(uid)

    def kept(self) -> list[tuple[str, str, float]]:
        """The acknowledged writes that count: for the WAIT writer, the confirmed ones."""
        return [entry for entry in self.acked if entry[0] not in self.unconfirmed]


@dataclass
class Reader:
    key: str
    ok: list[float] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)

    def run(self, client: Any, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                client.scard(self.key)
                self.ok.append(time.monotonic())
            except (rx.RedisError, CircuitOpenError) as error:
                self.errors.append((time.monotonic(), type(error).__name__))


class RetryLog:
    """An ``on_retry`` callback for the client's policy: the errors its retries followed."""

    def __init__(self) -> None:
        self.errors: list[BaseException] = []

    def __call__(self, event: RetryScheduled) -> None:
        self.errors.append(event.error)


class Workload:
    """The writers and the reader, started and stopped together; each has its client (``WAIT``
    must follow the write on the same connection: a client of its own, one connection per
    server, guarantees it)."""

    def __init__(self, writers: list[tuple[Writer, Any]], reader: tuple[Reader, Any]) -> None:
        self.writers = [writer for writer, _ in writers]
        self.reader = reader[0]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=worker.run, args=(client, self._stop),
                                          daemon=True) for worker, client in (*writers, reader)]

    def __enter__(self) -> Workload:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
            assert not thread.is_alive(), "a workload thread did not stop"

    def acked_since(self, moment: float) -> int:
        return min(sum(1 for _, _, when in writer.acked if when > moment)
                   for writer in self.writers)


@dataclass(frozen=True)
class Figures:
    """What one writer's run shows (see the module docstring)."""

    acknowledged: int
    lost: int
    applied_twice: int
    failed: int
    unconfirmed: int
    recovery_seconds: float

    def line(self, label: str) -> str:
        return (f"{label}: acknowledged {self.acknowledged}, lost {self.lost}, applied twice "
                f"{self.applied_twice}, failed {self.failed}, unconfirmed by WAIT "
                f"{self.unconfirmed}, recovered in {self.recovery_seconds:.2f} s")


def figures(writer: Writer, present: Callable[[str], set[str]], fault_at: float) -> Figures:
    """``writer``'s figures; ``present(key)``: the ids in that set on its primary now."""
    members: dict[str, set[str]] = {}
    for _, key, _ in writer.acked:
        if key not in members:
            members[key] = present(key)
    kept = writer.kept()
    lost = [uid for uid, key, _ in kept if uid not in members[key]]
    survivors = sorted(when for uid, key, when in writer.acked if uid in members[key])
    before = [when for when in survivors if when <= fault_at]
    after = [when for when in survivors if when > fault_at]
    if not after:
        recovery = float("inf")
    else:
        stretch = ([before[-1]] if before else [fault_at]) + after
        recovery = max(b - a for a, b in itertools.pairwise(stretch))
    return Figures(acknowledged=len(kept), lost=len(lost), applied_twice=len(writer.twice),
                   failed=len(writer.failed), unconfirmed=len(writer.unconfirmed),
                   recovery_seconds=recovery)
