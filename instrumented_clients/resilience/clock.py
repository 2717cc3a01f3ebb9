"""Time, injected: every component that waits or reads the clock takes a :class:`Clock`.

Unit tests pass :class:`instrumented_clients.testing.FakeClock`, so backoff schedules, breaker
cool-downs and buffer expiry run instantly and deterministically.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol, runtime_checkable

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """Monotonic time plus the two ways of waiting."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary, fixed origin; never goes backwards."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for ``seconds``."""
        ...

    async def asleep(self, seconds: float) -> None:
        """Suspend the calling task for ``seconds``."""
        ...


class SystemClock:
    """The real clock: :func:`time.monotonic`, :func:`time.sleep`, :func:`asyncio.sleep`."""

    __slots__ = ()

    # Bound straight to the C functions: the success path reads the clock twice per call.
    monotonic = staticmethod(time.monotonic)
    sleep = staticmethod(time.sleep)

    async def asleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()
