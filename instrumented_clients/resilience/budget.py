"""A retry budget: retries allowed as a share of recent calls (Finagle's ``RetryBudget``).

Per-attempt limits cap one call; a budget caps the fleet. When a dependency is down every
call fails, and without a budget each of them multiplies into ``max_attempts`` requests exactly
when the dependency can least take them. With ``ratio=0.2`` retries add at most 20 % load on top
of the calls, plus a small floor (``min_per_second``) so that a quiet client can still retry.
"""

from __future__ import annotations

import math
import threading

from instrumented_clients.resilience.clock import SYSTEM_CLOCK, Clock

__all__ = ["RetryBudget"]


class RetryBudget:
    """Allows ``min_per_second * window + ratio * calls_in_window`` retries per sliding window.

    Args:
        ratio: retries allowed per call made in the window (0.2 = 20 %).
        min_per_second: retries always allowed per second, whatever the traffic.
        window: the sliding window in seconds, counted in one-second slots.
        clock: time source.
    """

    __slots__ = ("_calls", "_clock", "_lock", "_retries", "_stamps", "min_per_second", "ratio",
                 "window")

    def __init__(
        self,
        ratio: float = 0.2,
        min_per_second: float = 10.0,
        window: float = 10.0,
        *,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if not 0.0 <= ratio <= 1000.0:
            raise ValueError(f"ratio must be between 0 and 1000, got {ratio!r}")
        if min_per_second < 0:
            raise ValueError(f"min_per_second must be >= 0, got {min_per_second!r}")
        if window < 1:
            raise ValueError(f"window must be at least 1 second, got {window!r}")
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.window = window
        self._clock = clock
        slots = math.ceil(window)
        self._calls = [0] * slots
        self._retries = [0] * slots
        self._stamps = [-1] * slots
        self._lock = threading.Lock()

    def _slot(self, now: float) -> int:
        second = int(now)
        slot = second % len(self._stamps)
        if self._stamps[slot] != second:
            self._stamps[slot] = second
            self._calls[slot] = 0
            self._retries[slot] = 0
        return slot

    def record_call(self) -> None:
        """Count one logical call (a deposit of ``ratio`` retries)."""
        with self._lock:
            self._calls[self._slot(self._clock.monotonic())] += 1

    def try_acquire(self) -> bool:
        """Take one retry from the budget; False when it is spent."""
        with self._lock:
            now = self._clock.monotonic()
            slot = self._slot(now)
            oldest = int(now) - len(self._stamps) + 1
            calls = retries = 0
            for index, stamp in enumerate(self._stamps):
                if stamp >= oldest:
                    calls += self._calls[index]
                    retries += self._retries[index]
            if retries >= self.min_per_second * self.window + self.ratio * calls:
                return False
            self._retries[slot] += 1
            return True

    def __repr__(self) -> str:
        return (
            f"RetryBudget(ratio={self.ratio}, min_per_second={self.min_per_second}, "
            f"window={self.window})"
        )
