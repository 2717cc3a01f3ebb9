"""A clock that only moves when told to, for deterministic tests."""

from __future__ import annotations

import asyncio
import threading

__all__ = ["FakeClock"]


class FakeClock:
    """Implements :class:`~instrumented_clients.resilience.Clock`; ``sleep`` advances time at once.

    Every wait is recorded in :attr:`sleeps`, so a test can assert the exact backoff schedule.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward without recording a sleep."""
        if seconds < 0:
            raise ValueError(f"time does not go backwards: advance({seconds!r})")
        with self._lock:
            self._now += seconds

    def sleep(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"sleep length must be >= 0, got {seconds!r}")
        with self._lock:
            self.sleeps.append(seconds)
            self._now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)
        await asyncio.sleep(0)  # still a suspension point, as a real sleep is

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now})"
