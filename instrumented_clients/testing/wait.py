"""Waiting on a condition in live tests, never on a fixed sleep."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["await_until", "wait_until"]

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    *,
    interval: float = 0.02,
    message: str | Callable[[], str] | None = None,
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    Raises:
        TimeoutError: after ``timeout`` seconds, with ``message`` (or the last value seen).
    """
    deadline = time.monotonic() + timeout
    last: T = predicate()
    while not last:
        if time.monotonic() >= deadline:
            raise _not_met(predicate, timeout, message, last)
        time.sleep(interval)
        last = predicate()
    return last


async def await_until(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float = 10.0,
    *,
    interval: float = 0.02,
    message: str | Callable[[], str] | None = None,
) -> T:
    """:func:`wait_until` for asyncio tests: polls without blocking the event loop, and
    ``predicate`` may be a coroutine function.

    Raises:
        TimeoutError: after ``timeout`` seconds, with ``message`` (or the last value seen).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        last: T = await value if inspect.isawaitable(value) else value
        if last:
            return last
        if loop.time() >= deadline:
            raise _not_met(predicate, timeout, message, last)
        await asyncio.sleep(interval)


def _not_met(predicate: object, timeout: float, message: str | Callable[[], str] | None,
             last: object) -> TimeoutError:
    text = message() if callable(message) else message
    return TimeoutError(f"condition not met within {timeout}s: {text or repr(predicate)} "
                        f"(last value {last!r})")
