"""The in-house retry helpers' Redis names, as thin layers over the real API.

Code written against those helpers ports with an import change::

    from instrumented_clients.compat import RedisConnectionRetry, with_redis_retry

    retry = RedisConnectionRetry(max_retries=3)
    client = retry.connect_with_retry(lambda: redis.Redis(host="localhost"), "redis-cache")
    value = retry.execute_with_retry(lambda: client.get("my_key"), "get my_key")

    @with_redis_retry(max_retries=3, base_delay=0.5)
    def get_cached_value(key): ...

``max_retries`` counts retries, as the in-house helpers did, so ``max_retries=3`` is 4
attempts — the same as ``REDIS_RETRY_MAX_ATTEMPTS=4`` (which counts attempts, the first
included). Delays are 0.5 s doubling to a 10 s cap with ×0.5–1.5 jitter; errors are classified by
:func:`~instrumented_clients.redis.errors.classify` (authentication and programming errors are
raised at once). Differences from :class:`~instrumented_clients.redis.ResilientRedis`, because
the functions wrapped here are opaque:

- ``execute_with_retry`` and ``with_redis_retry`` retry every transient failure, so the function
  must be safe to run twice; the write-retry rule applies only to ``ResilientRedis``.
- ``connect_with_retry`` verifies the client with ``ping()`` and turns redis-py's own retries off
  on a ``redis.Redis`` it returns, so each attempt is counted once instead of ten times.

The ``name`` passed to ``connect_with_retry`` / ``execute_with_retry`` appears in log lines only,
never as a metric label (a name such as ``"get my_key"`` contains a key): metrics carry the
instance's ``name`` (the ``client`` label) and the operations ``connect`` / ``execute``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

from instrumented_clients.redaction import redact_text
from instrumented_clients.redis.client import ResilientRedis
from instrumented_clients.redis.connection import adopt_pool
from instrumented_clients.redis.settings import default_policy
from instrumented_clients.resilience import Clock, Guard, RetryPolicy, retry
from instrumented_clients.resilience.clock import SYSTEM_CLOCK
from instrumented_clients.settings import (
    REDIS_RETRY_BASE_DELAY,
    REDIS_RETRY_MAX_ATTEMPTS,
    REDIS_RETRY_MAX_DELAY,
)
from instrumented_clients.telemetry import Telemetry, get_default_telemetry

__all__ = ["RedisConnectionRetry", "get_redis_connection_retry", "with_redis_retry"]

P = ParamSpec("P")
T = TypeVar("T")

_log = logging.getLogger(__name__)


def _policy(
    max_retries: int, base_delay: float, max_delay: float, exponential_base: float, clock: Clock
) -> RetryPolicy:
    if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
        raise ValueError(f"max_retries must be an int >= 0 (retries after the first attempt), "
                         f"got {max_retries!r}")
    return default_policy(max_retries + 1, base_delay, max_delay, clock=clock).replace(
        exponential_base=exponential_base
    )


class RedisConnectionRetry:
    """The in-house helpers' Redis retry handler: connect and execute with backoff and jitter.

    Args:
        max_retries: retries after the first attempt (default 3, i.e. 4 attempts).
        base_delay: first delay in seconds (0.5).
        max_delay: cap on a delay (10 s).
        exponential_base: growth between delays (2).
        name: the ``client`` label of this handler's metrics.
        telemetry: where metrics and logs go; default the package's.
        clock: time source (tests pass a ``FakeClock``).
        policy: a complete :class:`RetryPolicy` instead of the four numbers.
    """

    def __init__(
        self,
        max_retries: int = 3,
        base_delay: float = 0.5,
        max_delay: float = 10.0,
        exponential_base: float = 2.0,
        *,
        name: str = "redis",
        telemetry: Telemetry | None = None,
        clock: Clock = SYSTEM_CLOCK,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.policy = policy or _policy(max_retries, base_delay, max_delay, exponential_base,
                                        clock)
        self.name = name
        telemetry = telemetry or get_default_telemetry()
        telemetry.prepare("redis", name, ("connect", "execute"))
        self._connect = Guard(self.policy, instrumentation=telemetry, system="redis", client=name,
                              operation="connect", span_name="redis connect")
        self._execute = Guard(self.policy, instrumentation=telemetry, system="redis", client=name,
                              operation="execute", span_name="redis execute")

    @property
    def max_retries(self) -> int:
        return self.policy.max_attempts - 1

    def connect_with_retry(self, connect_fn: Callable[[], T], name: str = "redis") -> T:
        """Call ``connect_fn`` until it returns a client that answers ``ping()``."""

        def attempt() -> T:
            client = connect_fn()
            pool = getattr(client, "connection_pool", None)
            if pool is not None and hasattr(pool, "set_retry"):
                adopt_pool(pool)
            # A ResilientRedis retries its own PING: verify it with one attempt, not 4 x 4.
            ping: Any = (functools.partial(client.check, raise_on_error=True)
                         if isinstance(client, ResilientRedis) else getattr(client, "ping", None))
            if callable(ping):
                try:
                    ping()
                except BaseException:
                    close = getattr(client, "close", None)
                    if callable(close):
                        with contextlib.suppress(Exception):
                            close()
                    raise
            return client

        _log.info("Attempting to connect to %s", name)
        try:
            client = self._connect.call(attempt)
        except Exception as error:
            _log.error("Failed to connect to %s after %d retries: %s", name, self.max_retries,
                       redact_text(str(error)))
            raise
        _log.info("Successfully connected to %s", name)
        return client

    def execute_with_retry(self, fn: Callable[[], T], name: str = "operation") -> T:
        """Call ``fn`` with retries on transient errors; ``fn`` must be safe to run twice."""
        try:
            return self._execute.call(fn)
        except Exception as error:
            _log.error("Operation %s failed: %s", name, redact_text(str(error)))
            raise

    def __repr__(self) -> str:
        return (f"RedisConnectionRetry(max_retries={self.max_retries}, "
                f"base_delay={self.policy.initial_delay}, max_delay={self.policy.max_delay})")


def with_redis_retry(
    max_retries: int = 3,
    base_delay: float = 0.5,
    max_delay: float = 10.0,
    exponential_base: float = 2.0,
    *,
    telemetry: Telemetry | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """The in-house helpers' decorator, sync or async; the function must be safe to rerun.

    The ``client`` label is the function's qualified name and ``operation`` its name.
    """
    policy = _policy(max_retries, base_delay, max_delay, exponential_base, clock)
    return retry(policy, instrumentation=telemetry, system="redis")


def get_redis_connection_retry(
    max_retries: int | None = None,
    base_delay: float | None = None,
    max_delay: float | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    **options: Any,
) -> RedisConnectionRetry:
    """A :class:`RedisConnectionRetry` from arguments, else ``REDIS_RETRY_MAX_ATTEMPTS``
    (attempts, the first included), ``REDIS_RETRY_BASE_DELAY`` and ``REDIS_RETRY_MAX_DELAY``.

    Raises:
        ConfigError: a variable that does not parse, naming it and its value.
    """
    if max_retries is None:
        max_retries = REDIS_RETRY_MAX_ATTEMPTS.read(environ) - 1
    if base_delay is None:
        base_delay = REDIS_RETRY_BASE_DELAY.read(environ)
    if max_delay is None:
        max_delay = REDIS_RETRY_MAX_DELAY.read(environ)
    return RedisConnectionRetry(max_retries, base_delay, max_delay, **options)
