"""Retry policies and the loop that runs an operation through retry, breaker and budget.

:class:`RetryPolicy` is a value object (like redis-py's backoff classes): it says *how often* and
*how long to wait*. :class:`Guard` runs one kind of operation under a policy, an optional
:class:`~instrumented_clients.resilience.breaker.CircuitBreaker` and
:class:`~instrumented_clients.resilience.budget.RetryBudget`, and reports to an
:class:`~instrumented_clients.resilience.events.Instrumentation`. Every client is built on Guards.
"""

from __future__ import annotations

import enum
import functools
import inspect
import logging
import random
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ParamSpec, TypeVar, cast, overload

from instrumented_clients.resilience.breaker import CircuitBreaker
from instrumented_clients.resilience.budget import RetryBudget
from instrumented_clients.resilience.clock import SYSTEM_CLOCK, Clock
from instrumented_clients.resilience.context import ClientContext
from instrumented_clients.resilience.errors import (
    CircuitOpenError,
    Classifier,
    ErrorCategory,
    classify_exception,
)
from instrumented_clients.resilience.events import (
    Instrumentation,
    Outcome,
    RetriesExhausted,
    RetryBudgetDenied,
    RetryScheduled,
    SpanKindName,
    get_default_instrumentation,
)

__all__ = ["Guard", "JitterMode", "RetryPolicy", "retry"]

P = ParamSpec("P")
T = TypeVar("T")
_log = logging.getLogger(__name__)

RetryOn = Callable[[BaseException], bool] | type[BaseException] | tuple[type[BaseException], ...]


class JitterMode(str, enum.Enum):
    """How a delay is randomised (see AWS's "Exponential Backoff And Jitter").

    - ``proportional``: ``delay × uniform(1 - jitter, 1 + jitter)`` (±10 %
      by default; ×0.5–1.5 for SQL and Redis).
    - ``full``: ``uniform(0, delay)``.
    - ``equal``: ``delay / 2 + uniform(0, delay / 2)``.
    - ``decorrelated``: ``uniform(initial_delay, previous × 3)``, capped.
    - ``none``: the schedule as it is.
    """

    PROPORTIONAL = "proportional"
    FULL = "full"
    EQUAL = "equal"
    DECORRELATED = "decorrelated"
    NONE = "none"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts, how long between them, and which errors deserve another.

    Args:
        max_attempts: attempts in all, the first included (``1`` never retries).
        initial_delay: seconds before the first retry.
        max_delay: cap on any single delay.
        exponential_base: growth factor between consecutive delays.
        jitter: randomisation factor for ``proportional`` jitter (0.1 = ±10 %).
        jitter_mode: see :class:`JitterMode`.
        deadline: optional overall budget in seconds, from the first attempt; a retry whose delay
            would end past it is not made.
        retry_on: exception types, or a predicate, that are retried. Defaults to the classifier's
            transient categories.
        classifier: maps an exception to an :class:`ErrorCategory` (the ``error_type`` label and
            the default retry decision). Clients pass their driver's classifier.
        on_retry: callbacks (or one callback) receiving each :class:`RetryScheduled` before the
            wait; one that raises is logged and skipped, the retry goes on.
        clock: time source; :class:`~instrumented_clients.testing.FakeClock` in tests.
        rng: random source for jitter (``random.Random(7)`` for reproducible schedules).
    """

    max_attempts: int = 3
    initial_delay: float = 1.0
    max_delay: float = 60.0
    exponential_base: float = 2.0
    jitter: float = 0.1
    jitter_mode: JitterMode = JitterMode.PROPORTIONAL
    deadline: float | None = None
    retry_on: RetryOn | None = None
    classifier: Classifier = classify_exception
    on_retry: (
        Sequence[Callable[[RetryScheduled], object]] | Callable[[RetryScheduled], object]
    ) = ()
    clock: Clock = field(default=SYSTEM_CLOCK, compare=False)
    rng: random.Random | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "jitter_mode", JitterMode(self.jitter_mode))
        except ValueError:
            choices = ", ".join(mode.value for mode in JitterMode)
            raise ValueError(
                f"jitter_mode must be one of {choices}, got {self.jitter_mode!r}"
            ) from None
        if not isinstance(self.max_attempts, int) or isinstance(self.max_attempts, bool):
            raise TypeError(f"max_attempts must be an int, got {self.max_attempts!r}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1 (the first try counts), got "
                             f"{self.max_attempts!r}")
        for name in ("initial_delay", "max_delay", "exponential_base", "jitter"):
            value = getattr(self, name)
            if not _is_number(value) or value != value or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if self.exponential_base < 1:
            raise ValueError(f"exponential_base must be >= 1, got {self.exponential_base!r}")
        if self.jitter_mode is JitterMode.PROPORTIONAL and self.jitter > 1:
            raise ValueError(f"jitter must be between 0 and 1 for proportional jitter, got "
                             f"{self.jitter!r}")
        if self.deadline is not None and (
            not _is_number(self.deadline) or not self.deadline > 0  # `not >` also rejects NaN
        ):
            raise ValueError(f"deadline must be a number of seconds > 0, got {self.deadline!r}")
        retry_on = self.retry_on
        if not (
            retry_on is None
            or (isinstance(retry_on, type) and issubclass(retry_on, BaseException))
            or (
                isinstance(retry_on, tuple)
                and all(isinstance(t, type) and issubclass(t, BaseException) for t in retry_on)
            )
            or (callable(retry_on) and not isinstance(retry_on, type))
        ):
            raise TypeError(
                "retry_on must be an exception type, a tuple of exception types or a predicate "
                f"taking the exception, got {retry_on!r}"
            )
        if not callable(self.classifier):
            raise TypeError(f"classifier must be callable, got {self.classifier!r}")
        callbacks = (self.on_retry,) if callable(self.on_retry) else tuple(self.on_retry)
        for callback in callbacks:
            if not callable(callback):
                raise TypeError(f"on_retry must hold callables, got {callback!r}")
        object.__setattr__(self, "on_retry", callbacks)

    @property
    def retry_callbacks(self) -> tuple[Callable[[RetryScheduled], object], ...]:
        """``on_retry`` as the tuple it is normalised to at construction."""
        return cast("tuple[Callable[[RetryScheduled], object], ...]", self.on_retry)

    # -- the schedule ---------------------------------------------------------------------------

    def base_delay(self, retry_number: int) -> float:
        """The un-jittered wait before retry ``retry_number`` (1 = the first retry)."""
        if retry_number < 1:
            raise ValueError(f"retry_number starts at 1, got {retry_number!r}")
        try:
            delay = self.initial_delay * self.exponential_base ** (retry_number - 1)
        except OverflowError:
            return float(self.max_delay)
        return float(min(self.max_delay, delay))

    def delays(self) -> Iterator[float]:
        """The ``max_attempts - 1`` waits of the schedule, before jitter."""
        for retry_number in range(1, self.max_attempts):
            yield self.base_delay(retry_number)

    def backoff(self, retry_number: int, previous: float | None = None) -> float:
        """The jittered wait before retry ``retry_number``, within ``[0, max_delay]``."""
        delay = self.base_delay(retry_number)
        rng = self.rng or random
        mode = self.jitter_mode
        if mode is JitterMode.PROPORTIONAL:
            if self.jitter:
                delay *= rng.uniform(1.0 - self.jitter, 1.0 + self.jitter)
        elif mode is JitterMode.FULL:
            delay = rng.uniform(0.0, delay)
        elif mode is JitterMode.EQUAL:
            delay = delay / 2 + rng.uniform(0.0, delay / 2)
        elif mode is JitterMode.DECORRELATED:
            low = self.initial_delay
            high = max(low, (previous if previous is not None else low) * 3)
            delay = rng.uniform(low, high)
        return max(0.0, min(self.max_delay, delay))

    # -- the decision ---------------------------------------------------------------------------

    def should_retry(self, error: BaseException, category: ErrorCategory | None = None) -> bool:
        """Whether ``error`` deserves another attempt (attempt counts aside)."""
        if not isinstance(error, Exception) or isinstance(error, CircuitOpenError):
            return False
        retry_on = self.retry_on
        if retry_on is None:
            return (category or self.classifier(error)).is_transient
        if isinstance(retry_on, (type, tuple)):
            return isinstance(error, retry_on)
        return bool(retry_on(error))

    def replace(self, **changes: Any) -> RetryPolicy:
        """A copy with some fields changed."""
        return replace(self, **changes)

    # -- running --------------------------------------------------------------------------------

    @functools.cached_property
    def _guard(self) -> Guard:
        return Guard(self, instrumentation=get_default_instrumentation(), operation="call")

    def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``fn`` and retry it under this policy."""
        return self._guard.call(fn, *args, **kwargs)

    async def acall(
        self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Await ``fn`` and retry it under this policy, sleeping without blocking the loop."""
        return await self._guard.acall(fn, *args, **kwargs)


def _qualified_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def _target_name(fn: Callable[..., Any]) -> str:
    """The name in log lines, as the in-house helpers print it: ``create_worker``."""
    return getattr(fn, "__name__", None) or _qualified_name(fn)


class Guard:
    """Runs one kind of operation through retry, breaker, budget and instrumentation.

    Created once per (client, operation) and reused, so that the labelled metric children and the
    observer are resolved at construction and the success path does nothing else: two clock
    reads, the breaker's ``quiet`` flag, the tracing check and one observation.

    Args:
        policy: the retry policy.
        breaker: optional circuit breaker shared by the client's operations.
        budget: optional retry budget shared by the client's operations.
        instrumentation: where events go; the package default when omitted.
        system: ``system`` label (``rabbitmq``, ``redis``, ``postgresql``, ...).
        client: ``client`` label, the user's low-cardinality name.
        operation: ``operation`` label.
        span_name: the span's name when tracing is configured (default: the operation).
        span_attributes: attributes set on every span of this operation.
        span_kind: the span's kind: ``client`` (default), ``producer``, ``consumer``.
        describe_error: span attributes for a failure (default: ``error.type`` = the class).
        target: what log lines name as failing (default: the called function's name), for
            callers whose function is an internal one, e.g. ``"redis/cache GET"``.
        context: the client's labels and instrumentation, in place of ``system``, ``client``
            and ``instrumentation`` (the clock is the policy's).
    """

    __slots__ = ("_breaker", "_budget", "_clock", "_instrumentation", "_monotonic", "_observer",
                 "_record_success", "client", "operation", "policy", "system", "target")

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        breaker: CircuitBreaker | None = None,
        budget: RetryBudget | None = None,
        instrumentation: Instrumentation | None = None,
        system: str = "custom",
        client: str = "default",
        operation: str = "call",
        span_name: str | None = None,
        span_attributes: dict[str, Any] | None = None,
        target: str | None = None,
        context: ClientContext | None = None,
        span_kind: SpanKindName = "client",
        describe_error: Callable[[BaseException], Mapping[str, Any]] | None = None,
    ) -> None:
        if context is not None:
            system, client, instrumentation = (context.system, context.client,
                                               context.instrumentation)
        self.policy = policy
        self.target = target
        self.system = system
        self.client = client
        self.operation = operation
        self._breaker = breaker
        self._budget = budget
        self._clock = policy.clock
        self._monotonic = policy.clock.monotonic
        self._instrumentation = instrumentation or get_default_instrumentation()
        self._observer = self._instrumentation.observe_operation(
            system, client, operation, span_name=span_name, span_attributes=span_attributes,
            span_kind=span_kind, describe_error=describe_error,
        )
        self._record_success = self._observer.record_success

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` with retries; the last error is raised unchanged."""
        monotonic = self._monotonic
        started = monotonic()
        observer = self._observer
        scope = observer.begin() if observer.tracing else None
        breaker = self._breaker
        if self._budget is not None:
            self._budget.record_call()
        attempt = 1
        previous_delay: float | None = None
        while True:
            try:
                if breaker is not None and not breaker.quiet:
                    breaker.before_call(self.operation)
                result = fn(*args, **kwargs)
            except BaseException as error:
                delay = self._after_failure(error, attempt, started, previous_delay, scope, fn)
                if delay is None:
                    raise
                try:
                    self._clock.sleep(delay)
                except BaseException as interrupt:
                    self._interrupted(interrupt, attempt, started, scope)
                    raise
                previous_delay = delay
                attempt += 1
                continue
            if breaker is not None and not breaker.quiet:
                breaker.on_success()
            if attempt == 1 and scope is None:
                self._record_success(monotonic() - started)
            else:
                observer.finish("success" if attempt == 1 else "success_after_retry",
                                monotonic() - started, attempt, scope)
            return result

    async def acall(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        """Await ``fn(*args, **kwargs)`` with retries, waiting with the clock's ``asleep``."""
        monotonic = self._monotonic
        started = monotonic()
        observer = self._observer
        scope = observer.begin() if observer.tracing else None
        breaker = self._breaker
        if self._budget is not None:
            self._budget.record_call()
        attempt = 1
        previous_delay: float | None = None
        while True:
            try:
                if breaker is not None and not breaker.quiet:
                    breaker.before_call(self.operation)
                result = await fn(*args, **kwargs)
            except BaseException as error:
                delay = self._after_failure(error, attempt, started, previous_delay, scope, fn)
                if delay is None:
                    raise
                try:
                    await self._clock.asleep(delay)
                except BaseException as interrupt:  # cancelled while backing off
                    self._interrupted(interrupt, attempt, started, scope)
                    raise
                previous_delay = delay
                attempt += 1
                continue
            if breaker is not None and not breaker.quiet:
                breaker.on_success()
            if attempt == 1 and scope is None:
                self._record_success(monotonic() - started)
            else:
                observer.finish("success" if attempt == 1 else "success_after_retry",
                                monotonic() - started, attempt, scope)
            return result

    def _interrupted(
        self, interrupt: BaseException, attempt: int, started: float, scope: Any
    ) -> None:
        """The wait before a retry was interrupted (task cancelled, KeyboardInterrupt): the
        operation ends here as a failure, and its span must still be closed."""
        self._observer.finish(
            "failure" if attempt == 1 else "failure_after_retry",
            self._monotonic() - started,
            attempt,
            scope,
            interrupt,
        )

    def _classify(self, error: BaseException) -> ErrorCategory:
        try:
            return self.policy.classifier(error)
        except Exception:  # a broken classifier must not replace the caller's error
            _log.exception("classifier %r failed on %r", self.policy.classifier, error)
            return classify_exception(error)

    def _after_failure(
        self,
        error: BaseException,
        attempt: int,
        started: float,
        previous_delay: float | None,
        scope: Any,
        fn: Callable[..., Any],
    ) -> float | None:
        """Decide what follows a failed attempt: the delay before the next, or None to give up.

        Everything is reported here, so the sync and async loops stay identical and short.
        """
        policy = self.policy
        outcome: Outcome = "failure" if attempt == 1 else "failure_after_retry"
        if isinstance(error, CircuitOpenError):
            self._observer.finish("rejected", self._monotonic() - started, attempt, scope, error)
            return None
        category = self._classify(error)
        if self._breaker is not None:
            self._breaker.on_failure(error)
        if not policy.should_retry(error, category):
            self._observer.finish(outcome, self._monotonic() - started, attempt, scope, error)
            return None
        emit = self._instrumentation.emit
        delay = None
        if attempt < policy.max_attempts:
            delay = policy.backoff(attempt, previous_delay)
            if (
                policy.deadline is not None
                and self._monotonic() + delay - started > policy.deadline
            ):
                delay = None
        if delay is None:
            if attempt > 1 or policy.max_attempts > 1:
                emit(RetriesExhausted(self.system, self.client, self.operation, attempt,
                                      category.value, error, self.target or _target_name(fn)))
            self._observer.finish(outcome, self._monotonic() - started, attempt, scope, error)
            return None
        if self._budget is not None and not self._budget.try_acquire():
            emit(RetryBudgetDenied(self.system, self.client, self.operation, category.value))
            self._observer.finish(outcome, self._monotonic() - started, attempt, scope, error)
            return None
        event = RetryScheduled(self.system, self.client, self.operation, attempt,
                               policy.max_attempts, delay, category.value, error,
                               self.target or _target_name(fn))
        emit(event)
        for callback in policy.retry_callbacks:
            try:
                callback(event)
            except Exception:  # a user's callback must not turn a retry into a failure
                _log.exception("on_retry callback %r failed", callback)
        return delay


@overload
def retry(policy: Callable[P, T], /) -> Callable[P, T]: ...
@overload
def retry(
    policy: RetryPolicy | None = None,
    /,
    *,
    breaker: CircuitBreaker | None = None,
    budget: RetryBudget | None = None,
    instrumentation: Instrumentation | None = None,
    system: str = "custom",
    client: str | None = None,
    operation: str | None = None,
) -> Callable[[Callable[P, T]], Callable[P, T]]: ...
def retry(
    policy: RetryPolicy | Callable[..., Any] | None = None,
    /,
    *,
    breaker: CircuitBreaker | None = None,
    budget: RetryBudget | None = None,
    instrumentation: Instrumentation | None = None,
    system: str = "custom",
    client: str | None = None,
    operation: str | None = None,
) -> Any:
    """Decorate a sync or async function so that it is retried under ``policy``.

    ``@retry`` alone uses the default policy. The ``client`` label defaults to the function's
    qualified name and ``operation`` to its name: both are bounded by the code, never by data.
    """
    if policy is not None and not isinstance(policy, RetryPolicy):
        to_policy = getattr(policy, "to_policy", None)  # instrumented_clients.compat.RetryConfig
        if to_policy is not None:
            policy = to_policy()
        elif callable(policy):
            return retry()(policy)
        else:
            raise TypeError(f"retry() takes a RetryPolicy or RetryConfig, got {policy!r}")
    chosen = policy if isinstance(policy, RetryPolicy) else RetryPolicy()

    def decorate(fn: Callable[P, Any]) -> Callable[P, Any]:
        guard = Guard(
            chosen,
            breaker=breaker,
            budget=budget,
            instrumentation=instrumentation,
            system=system,
            client=client or _qualified_name(fn),
            operation=operation or str(getattr(fn, "__name__", "call")),
        )
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                return await guard.acall(fn, *args, **kwargs)

            async_wrapper.guard = guard  # type: ignore[attr-defined]
            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            return guard.call(fn, *args, **kwargs)

        wrapper.guard = guard  # type: ignore[attr-defined]
        return wrapper

    return decorate
