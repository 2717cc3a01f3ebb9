"""Circuit breaker: stop calling a dependency that keeps failing, probe it after a cool-down.

CLOSED counts failures. ``failure_threshold`` consecutive failures (or, when
``failure_rate_threshold`` is set, that share of failures over the last ``window_size`` calls with
at least ``minimum_calls`` of them — resilience4j's count-based window) open the breaker. OPEN fails
every call at once with :class:`CircuitOpenError` for ``recovery_timeout`` seconds, then HALF_OPEN
admits at most ``half_open_max_calls`` probe calls: when all of them succeed the breaker closes, the
first one that fails opens it again.
"""

from __future__ import annotations

import enum
import functools
import inspect
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, overload

from instrumented_clients.resilience.clock import SYSTEM_CLOCK, Clock
from instrumented_clients.resilience.context import ClientContext
from instrumented_clients.resilience.errors import CircuitOpenError, is_transient
from instrumented_clients.resilience.events import (
    BreakerRejected,
    BreakerStateChanged,
    Instrumentation,
    get_default_instrumentation,
)

__all__ = ["BreakerState", "CircuitBreaker"]

P = ParamSpec("P")
T = TypeVar("T")


class BreakerState(str, enum.Enum):
    """The three states of a circuit breaker; values are the ``state`` label."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    def __str__(self) -> str:
        return self.value


def _failure_predicate(
    failure_on: Callable[[BaseException], bool] | tuple[type[BaseException], ...] | None,
) -> Callable[[BaseException], bool]:
    if failure_on is None:
        return is_transient
    if isinstance(failure_on, tuple):
        types = failure_on
        return lambda exc: isinstance(exc, types)
    return failure_on


class CircuitBreaker:
    """A thread-safe circuit breaker.

    Args:
        failure_threshold: consecutive counted failures that open the breaker (default 5).
        recovery_timeout: seconds the breaker stays open before probing (default 30).
        half_open_max_calls: probe calls admitted per half-open period; all must succeed to close.
        failure_rate_threshold: optional share of failures (0 < x <= 1) over the sliding window
            that also opens the breaker.
        window_size: calls in the sliding window (rate mode).
        minimum_calls: calls needed in the window before the rate is judged.
        failure_on: which errors count as failures: exception types or a predicate. Defaults to
            the transient errors — a caller's bad input says nothing about the dependency's health.
        name: the client name reported in metrics and in :class:`CircuitOpenError`.
        system: the ``system`` label.
        clock: time source.
        instrumentation: where state changes and rejections are reported.
        context: the client's labels, clock and instrumentation, in place of ``name``,
            ``system``, ``clock`` and ``instrumentation``.
    """

    def __init__(
        self,
        failure_threshold: int = 5,
        recovery_timeout: float = 30.0,
        half_open_max_calls: int = 1,
        *,
        failure_rate_threshold: float | None = None,
        window_size: int = 100,
        minimum_calls: int = 10,
        failure_on: Callable[[BaseException], bool] | tuple[type[BaseException], ...] | None = None,
        name: str = "default",
        system: str = "custom",
        clock: Clock = SYSTEM_CLOCK,
        instrumentation: Instrumentation | None = None,
        context: ClientContext | None = None,
    ) -> None:
        if context is not None:
            name, system = context.client, context.system
            clock, instrumentation = context.clock, context.instrumentation
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold!r}")
        if recovery_timeout < 0:
            raise ValueError(f"recovery_timeout must be >= 0 seconds, got {recovery_timeout!r}")
        if half_open_max_calls < 1:
            raise ValueError(f"half_open_max_calls must be >= 1, got {half_open_max_calls!r}")
        if failure_rate_threshold is not None and not 0 < failure_rate_threshold <= 1:
            raise ValueError(
                f"failure_rate_threshold must be in (0, 1], got {failure_rate_threshold!r}"
            )
        if window_size < 1 or minimum_calls < 1:
            raise ValueError(
                f"window_size and minimum_calls must be >= 1, got {window_size!r}, "
                f"{minimum_calls!r}"
            )
        self.failure_threshold = failure_threshold
        self.recovery_timeout = recovery_timeout
        self.half_open_max_calls = half_open_max_calls
        self.failure_rate_threshold = failure_rate_threshold
        self.minimum_calls = minimum_calls
        self.name = name
        self.system = system
        self._counts_as_failure = _failure_predicate(failure_on)
        self._clock = clock
        self._instrumentation = instrumentation or get_default_instrumentation()
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._consecutive_failures = 0
        self._window: deque[bool] | None = (
            deque(maxlen=window_size) if failure_rate_threshold is not None else None
        )
        self._opened_at = 0.0
        self._probes_admitted = 0
        self._probes_succeeded = 0
        self.quiet = self._window is None
        """True while closed with no failure counted (and no failure-rate window): a success
        then changes nothing, so callers may skip :meth:`before_call` and :meth:`on_success`.
        Kept by the transitions, read without the lock, like the state itself."""
        self._instrumentation.emit(
            BreakerStateChanged(system, name, None, BreakerState.CLOSED.value)
        )

    # -- introspection -------------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The current state; an open breaker whose cool-down has passed reads as HALF_OPEN."""
        if self._state is BreakerState.OPEN and self.remaining() <= 0:
            return BreakerState.HALF_OPEN
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive_failures

    def remaining(self) -> float:
        """Seconds of cool-down left while open, else 0."""
        if self._state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.recovery_timeout - self._clock.monotonic())

    # -- the protocol the retry loop drives ----------------------------------------------------

    def before_call(self, operation: str = "call") -> None:
        """Admit a call or raise :class:`CircuitOpenError`. Lock-free while closed."""
        if self._state is BreakerState.CLOSED:
            return
        change = None
        with self._lock:
            if self._state is BreakerState.OPEN:
                remaining = self._opened_at + self.recovery_timeout - self._clock.monotonic()
                if remaining > 0:
                    rejected_for = remaining
                else:
                    change = self._set_state(BreakerState.HALF_OPEN, "recovery timeout elapsed")
                    rejected_for = None
            else:
                rejected_for = None
            if rejected_for is None and self._state is BreakerState.HALF_OPEN:
                if self._probes_admitted >= self.half_open_max_calls:
                    rejected_for = 0.0
                else:
                    self._probes_admitted += 1
        if change is not None:
            self._instrumentation.emit(change)
        if rejected_for is not None:
            self._instrumentation.emit(
                BreakerRejected(self.system, self.name, operation, rejected_for)
            )
            raise CircuitOpenError(self.name, rejected_for)

    def on_success(self) -> None:
        """Report that an admitted call succeeded."""
        if (
            self._state is BreakerState.CLOSED
            and self._consecutive_failures == 0
            and self._window is None
        ):
            return
        change = None
        with self._lock:
            self._consecutive_failures = 0
            self._refresh_quiet()
            if self._state is BreakerState.HALF_OPEN:
                self._probes_succeeded += 1
                if self._probes_succeeded >= self.half_open_max_calls:
                    change = self._set_state(BreakerState.CLOSED, "probe calls succeeded")
            elif self._window is not None:
                self._window.append(True)
        if change is not None:
            self._instrumentation.emit(change)

    def on_failure(self, error: BaseException) -> bool:
        """Report that an admitted call failed; returns whether the error counted.

        An interruption (``asyncio.CancelledError``, ``KeyboardInterrupt``: not an ``Exception``)
        says nothing about the dependency and is not counted, except that an interrupted
        half-open probe re-opens the breaker: its probe slot would otherwise stay taken and
        every later call be rejected for good.
        """
        if not isinstance(error, Exception):
            change = None
            with self._lock:
                if self._state is BreakerState.HALF_OPEN:
                    change = self._set_state(BreakerState.OPEN, "probe call interrupted")
            if change is not None:
                self._instrumentation.emit(change)
            return False
        if not self._counts_as_failure(error):
            # The dependency answered; a half-open probe that got an answer counts as alive.
            if self._state is BreakerState.HALF_OPEN:
                self.on_success()
            return False
        change = None
        with self._lock:
            self._consecutive_failures += 1
            self.quiet = False
            if self._state is BreakerState.HALF_OPEN:
                change = self._set_state(BreakerState.OPEN, "probe call failed")
            elif self._state is BreakerState.CLOSED:
                if self._consecutive_failures >= self.failure_threshold:
                    change = self._set_state(
                        BreakerState.OPEN, f"{self._consecutive_failures} consecutive failures"
                    )
                elif self._window is not None:
                    self._window.append(False)
                    change = self._check_rate()
        if change is not None:
            self._instrumentation.emit(change)
        return True

    def reset(self) -> None:
        """Close the breaker and forget every failure."""
        with self._lock:
            change = self._set_state(BreakerState.CLOSED, "reset")
            self._consecutive_failures = 0
            self._refresh_quiet()
        if change is not None:
            self._instrumentation.emit(change)

    def _check_rate(self) -> BreakerStateChanged | None:
        window = self._window
        assert window is not None
        assert self.failure_rate_threshold is not None
        if len(window) < self.minimum_calls:
            return None
        failures = len(window) - sum(window)
        rate = failures / len(window)
        if rate >= self.failure_rate_threshold:
            return self._set_state(BreakerState.OPEN, f"failure rate {rate:.0%}")
        return None

    def _refresh_quiet(self) -> None:
        self.quiet = (self._state is BreakerState.CLOSED and self._consecutive_failures == 0
                      and self._window is None)

    def _set_state(self, to_state: BreakerState, reason: str) -> BreakerStateChanged | None:
        """Change state under the lock; the caller emits the returned event after releasing it."""
        from_state = self._state
        if from_state is to_state:
            return None
        self._state = to_state
        if to_state is BreakerState.OPEN:
            self._opened_at = self._clock.monotonic()
        if self._window is not None:
            self._window.clear()
        self._probes_admitted = 0
        self._probes_succeeded = 0
        self._refresh_quiet()
        return BreakerStateChanged(self.system, self.name, from_state.value, to_state.value, reason)

    # -- convenience ----------------------------------------------------------------------------

    def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``fn`` through the breaker."""
        self.before_call()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self.on_failure(exc)
            raise
        self.on_success()
        return result

    async def acall(
        self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Await ``fn`` through the breaker."""
        self.before_call()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self.on_failure(exc)
            raise
        self.on_success()
        return result

    @overload
    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]: ...
    @overload
    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]: ...
    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Use the breaker as a decorator on a sync or async function."""
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                return await self.acall(fn, *args, **kwargs)

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            return self.call(fn, *args, **kwargs)

        return wrapper

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(name={self.name!r}, state={self.state.value}, "
            f"failure_threshold={self.failure_threshold}, "
            f"recovery_timeout={self.recovery_timeout})"
        )
