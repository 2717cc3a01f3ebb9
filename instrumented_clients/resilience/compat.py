"""The in-house retry helpers' names, as thin layers over the real API.

Code written against those helpers ports with an import change::

    from instrumented_clients.compat import RetryConfig, retry, retry_async, is_transient_http_error

    @retry(RetryConfig(max_attempts=5, exception_filter=is_transient_http_error))
    def create_worker(): ...

:class:`RetryConfig` keeps the helpers' field names (``jitter`` is a switch, ``jitter_factor`` its
size, ``exception_filter`` a predicate, ``on_retry(exception, attempt, delay)`` a callback) and
converts to a :class:`~instrumented_clients.resilience.retry.RetryPolicy`; nothing else differs.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from instrumented_clients.resilience.events import RetryScheduled
from instrumented_clients.resilience.retry import RetryPolicy, retry

__all__ = ["RetryConfig", "retry_async"]

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class RetryConfig:
    """The in-house helpers' configuration object. Prefer :class:`RetryPolicy` in new code."""

    max_attempts: int = 3
    initial_delay: float = 1.0
    max_delay: float = 60.0
    exponential_base: float = 2.0
    jitter: bool = True
    jitter_factor: float = 0.1
    exception_filter: Callable[[BaseException], bool] | None = None
    on_retry: Callable[..., object] | None = None
    """Called as ``on_retry(exception, attempt, delay)``, or ``on_retry(exception,
    attempt)`` when it takes two arguments."""

    def to_policy(self) -> RetryPolicy:
        """The equivalent :class:`RetryPolicy`."""
        callbacks: tuple[Callable[[RetryScheduled], object], ...] = ()
        if self.on_retry is not None:
            on_retry = self.on_retry
            if _accepts_three(on_retry):
                callbacks = (lambda event: on_retry(event.error, event.attempt, event.delay),)
            else:
                callbacks = (lambda event: on_retry(event.error, event.attempt),)
        return RetryPolicy(
            max_attempts=self.max_attempts,
            initial_delay=self.initial_delay,
            max_delay=self.max_delay,
            exponential_base=self.exponential_base,
            jitter=self.jitter_factor if self.jitter else 0.0,
            retry_on=self.exception_filter,
            on_retry=callbacks,
        )


def _accepts_three(callback: Callable[..., object]) -> bool:
    """Whether ``callback`` can take (exception, attempt, delay), as the in-house helpers passed."""
    try:
        signature = inspect.signature(callback)
    except (TypeError, ValueError):  # builtins without a signature: pass all three
        return True
    try:
        signature.bind(None, 0, 0.0)
    except TypeError:
        return False
    return True


def retry_async(
    config: RetryConfig | RetryPolicy | None = None, **options: Any
) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """The in-house helpers' async decorator: :func:`retry` handles coroutines the same way."""
    policy = config.to_policy() if isinstance(config, RetryConfig) else config
    return retry(policy, **options)


def as_policy(config: RetryConfig | RetryPolicy | None) -> RetryPolicy | None:
    """Accept either configuration form where a policy is expected."""
    return config.to_policy() if isinstance(config, RetryConfig) else config
