"""What :class:`~instrumented_clients.redis.ResilientRedis` and
:class:`~instrumented_clients.redis.AsyncResilientRedis` share above the driver: one constructor,
``from_env()``, the client shape's properties and the health report.

Each client is ``class X(RedisClientBase, <redis-py's Redis>)``: this base builds the pool and
the :class:`~instrumented_clients.redis.core.RedisCore`, then hands the pool to the driver's
``__init__`` (the next class in the MRO). What differs — ``execute_command`` and the pipeline's
``execute()`` awaited or not, ``close()`` a coroutine or not — stays in the two subclasses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self, cast

from instrumented_clients.client import HealthReport
from instrumented_clients.redis.connection import strict_checkout
from instrumented_clients.redis.core import RedisCore, env_arguments, resolve_pool
from instrumented_clients.redis.guards import idempotent as writes_idempotent
from instrumented_clients.redis.tracking import SYSTEM
from instrumented_clients.resilience import (
    CircuitBreaker,
    ConnectionState,
    ConnectionTracker,
    Guard,
    RetryBudget,
    RetryPolicy,
)
from instrumented_clients.resilience.clock import Clock

if TYPE_CHECKING:
    from instrumented_clients.telemetry import Telemetry

__all__ = ["RedisClientBase", "SyncRedisClientBase"]


class RedisClientBase:
    """The shared part of the Redis clients (see the module docstring); not used on its own."""

    pool_class: ClassVar[type[Any]]
    """The redis-py pool class a client builds from a URL (sync or asyncio)."""

    system = SYSTEM

    def __init__(
        self,
        url: str | None = None,
        *,
        name: str = "redis",
        policy: RetryPolicy | None = None,
        retry: RetryPolicy | Literal[False] | None = None,
        breaker: CircuitBreaker | Literal[False] | None = None,
        budget: RetryBudget | None = None,
        telemetry: Telemetry | None = None,
        retry_writes: bool = False,
        clock: Clock | None = None,
        connection_pool: Any = None,
        health_check_interval: float = 30.0,
        failure_threshold: int = 5,
        recovery_timeout: float = 30.0,
        single_connection_client: bool = False,
        required: bool = True,
        **connection_options: Any,
    ) -> None:
        connection_pool = self._start_driver(
            name, url, connection_pool, health_check_interval, single_connection_client,
            connection_options)
        core = self._core = RedisCore(
            connection_pool, name=name, required=required, policy=policy, retry=retry,
            breaker=breaker, budget=budget, telemetry=telemetry, retry_writes=retry_writes,
            clock=clock, failure_threshold=failure_threshold, recovery_timeout=recovery_timeout,
        )
        self.name = name
        self.required = core.required
        self.context = core.context
        self.policy = core.policy
        self.breaker = core.breaker
        self.budget = budget
        self.address = core.address
        self.db = core.db
        self._tracker = core.tracker
        self._guards = core.guards.by_name

    def _start_driver(self, name: str, url: str | None, connection_pool: Any,
                      health_check_interval: float, single_connection_client: bool,
                      connection_options: dict[str, Any]) -> Any:
        """Check the arguments, start the driver and return the pool the core watches."""
        connection_pool, owns_pool = resolve_pool(
            self.pool_class, name, connection_pool, url, health_check_interval,
            connection_options)
        # The driver's Redis.__init__, next in the MRO of the concrete client.
        cast(Any, super()).__init__(
            connection_pool=connection_pool, single_connection_client=single_connection_client
        )
        self.auto_close_connection_pool = owns_pool
        return connection_pool

    @classmethod
    def from_env(
        cls,
        name: str = "redis",
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Self:
        """Build from ``REDIS_URL``, ``REDIS_RETRY_MAX_ATTEMPTS`` (attempts, the first included),
        ``REDIS_RETRY_BASE_DELAY`` and ``REDIS_RETRY_MAX_DELAY``; ``overrides`` win.

        Raises:
            ConfigError: a variable that does not parse, naming it, its value and what was
                expected.
        """
        return cls(name=name, **env_arguments(environ, overrides))

    @property
    def retry_writes(self) -> bool:
        """Whether writes are retried after ambiguous failures too (for idempotent use)."""
        return self._core.guards.retry_writes

    @property
    def state(self) -> ConnectionState:
        """The connection state (see :mod:`instrumented_clients.redis.tracking`)."""
        return self._tracker.state

    def policy_for(self, *command: Any) -> RetryPolicy:
        """The retry policy a command (as passed to ``execute_command``) runs under here and
        now: it shows the write-retry rule, e.g. ``policy_for("INCR", "k")``."""
        return self._core.guards.for_command(command).policy

    @staticmethod
    @contextlib.contextmanager
    def idempotent() -> Iterator[None]:
        """Within the block (in this thread, or this asyncio task), writes and pipelines are
        retried like reads: use it for writes that are safe to apply twice (``SET`` of a fixed
        value, ``SADD``, ``DEL``)."""
        with writes_idempotent():
            yield

    def health(self) -> HealthReport:
        """A snapshot for health endpoints: no URL, no password (no I/O, so never awaited)."""
        return self._core.health()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, address={self.address!r}, "
                f"db={self.db}, state={self._tracker.state.value})")


class SyncRedisClientBase(RedisClientBase):
    """What the blocking clients (one server, or a cluster) share: the guarded run of anything
    that is not a single command, and ``close()``."""

    def _run(self, guard: Guard, fn: Callable[[], Any]) -> Any:
        """Run anything else that talks to the server (a pipeline's execute) like a command."""
        tracker = self._tracker
        if not tracker.connected:
            tracker.attempt_started()
        token = strict_checkout.set(True)
        try:
            result = guard.call(fn)
        except BaseException as error:
            self._core.call_failed(guard, error)
            raise
        finally:
            strict_checkout.reset(token)
        if not tracker.connected:
            self._core.attempt_succeeded()
        return result

    def _ping_once(self) -> Any:
        """One ``PING`` through the driver, no guard (what ``check()`` runs)."""
        raise NotImplementedError

    def check(self, *, raise_on_error: bool = False) -> bool:
        """One ``PING``, no retry (through the breaker); True when Redis answered.

        Args:
            raise_on_error: raise the failure (classified and recorded all the same) instead of
                returning False.
        """
        try:
            self._run(self._core.guards.check, self._ping_once)
        except Exception:
            if raise_on_error:
                raise
            return False
        return True

    def close(self, timeout: float | None = None) -> None:
        """Release the connections, as the driver's ``close()`` does; idempotent.

        The pool's connections are closed when the client made the pool (or
        ``auto_close_connection_pool`` is set); a pool passed in by the caller stays theirs.
        The client stays usable: the next command connects again, and the state goes from
        CLOSED back to CONNECTED (a closed client is never reported as down).

        Args:
            timeout: accepted for the shape every client shares; closing does not wait.
        """
        driver = cast(Any, super())
        tracker: ConnectionTracker | None = getattr(self, "_tracker", None)
        if tracker is None or tracker.state is ConnectionState.CLOSED:
            driver.close()  # a half-built client, or nothing left to close but the pool
            return
        tracker.closing()
        try:
            driver.close()
        finally:
            self._core.closed()
