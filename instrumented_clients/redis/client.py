"""``ResilientRedis``: a ``redis.Redis`` whose every command runs through retry, breaker, telemetry.

It *is* a ``redis.Redis`` (every command method works as before) with one change of route:
``execute_command`` — the method every command method ends in — runs each command through a
cached :class:`~instrumented_clients.resilience.Guard` chosen by command name, and
``pipeline()`` returns a pipeline whose ``execute()`` runs the whole batch through one Guard
(operation ``pipeline``, or ``transaction`` for MULTI/EXEC). redis-py's own retries are turned
off (see :mod:`instrumented_clients.redis.connection`), so each attempt is one of ours and is
counted.

When a failed attempt is run again (the write-retry rule)
---------------------------------------------------------
A command whose connection broke *after* it was sent may or may not have been applied; running a
write again could apply it twice (``INCR``, ``LPUSH``, a pipeline of 100 ``INCR``). So, for
transient errors (connection lost, timeout, server busy):

1. **Reads** (``GET``, ``HGETALL``, ``ZRANGE``, ... — :data:`~.commands.READ_COMMANDS`, and
   pipelines made only of them) are always retried.
2. **Writes** (every other command, unknown ones included) are retried only when the failure
   provably happened before the command was sent: the connection could not be opened,
   authenticated or health-checked, or the pooled connection was found dead at check-out
   (:class:`~.errors.StaleConnectionError`); or — for a single command — the server refused it
   without running it (``LOADING``, ``TRYAGAIN``, ``CLUSTERDOWN``, ``MASTERDOWN``).
3. **Opt-in** for idempotent writes: ``ResilientRedis(retry_writes=True)`` for the whole client,
   or ``with client.idempotent(): ...`` for the calls in a block. Writes are then retried like
   reads — a ``SET`` of the same value twice is harmless, an ``INCR`` is not.
4. **Blocking commands** (``BLPOP``, ``BRPOP``, ``BLMOVE``, ``BZPOPMIN``, ``XREAD``/``XREADGROUP``
   with ``BLOCK``, ...) are never retried once sent, opt-in or not: the element they popped is
   gone from the server whether or not the reply arrived.

Permanent errors (authentication, ACL, wrong type, syntax) are never retried. Connection state
follows the calls: CONNECTED after a command (or ``PING``) succeeds, DISCONNECTED/CONNECTING while
attempts fail on the connection, FAILED when a call gave up on a connection error its policy would
have retried (attempts, deadline or budget spent), CONNECTED again on the next success.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

import redis
from redis.connection import ConnectionPool

from instrumented_clients.client import HealthReport
from instrumented_clients.redis.connection import strict_checkout
from instrumented_clients.redis.core import (
    RedisCore,
    counts_against_redis,
    env_arguments,
    resolve_pool,
)
from instrumented_clients.redis.guards import idempotent as writes_idempotent
from instrumented_clients.redis.guards import writes_opted_in
from instrumented_clients.redis.pipeline import ResilientPipeline
from instrumented_clients.redis.settings import sentinel_url
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
from instrumented_clients.telemetry import Telemetry

__all__ = ["ResilientRedis", "counts_against_redis"]


class ResilientRedis(redis.Redis):
    """A ``redis.Redis`` with retries, a circuit breaker, connection state and telemetry.

    Args:
        url: ``redis://``, ``rediss://`` or ``unix://`` URL (default ``redis://localhost:6379/0``);
            checked at construction. Exclusive with ``connection_pool``.
        name: the ``client`` label: a low-cardinality logical name.
        policy: retry policy; default :func:`default_policy`. A policy left with the generic
            classifier gets the Redis one.
        retry: the same as ``policy`` (``False``: one attempt), the name every client shares.
        breaker: circuit breaker shared by every command: None (default) for one that opens
            after ``failure_threshold`` consecutive failures (5; see
            :func:`counts_against_redis`) for ``recovery_timeout`` seconds (30), ``False`` for
            none, or that one.
        budget: optional :class:`RetryBudget` shared by every command.
        telemetry: where metrics, spans and logs go; default the package's.
        retry_writes: retry writes after ambiguous failures too (only for idempotent use).
        clock: time source (tests pass a ``FakeClock``).
        connection_pool: an existing pool; its redis-py retries are turned off.
        health_check_interval: seconds idle after which a connection is PINGed before use
            (ignored with ``connection_pool``).
        failure_threshold, recovery_timeout: the default breaker's settings.
        required: whether the service cannot work without Redis (for a health registry).
        single_connection_client: as in ``redis.Redis``.
        **connection_options: passed to ``ConnectionPool.from_url`` (``socket_timeout``,
            ``decode_responses``, ``max_connections``, ...).

    Raises:
        ConfigError: a malformed URL (before any I/O), naming the argument.
    """

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
        connection_pool: ConnectionPool | None = None,
        health_check_interval: float = 30.0,
        failure_threshold: int = 5,
        recovery_timeout: float = 30.0,
        single_connection_client: bool = False,
        required: bool = True,
        **connection_options: Any,
    ) -> None:
        connection_pool, owns_pool = resolve_pool(
            ConnectionPool, name, connection_pool, url, health_check_interval, connection_options)
        super().__init__(
            connection_pool=connection_pool, single_connection_client=single_connection_client
        )
        self.auto_close_connection_pool = owns_pool
        core = self._core = RedisCore(
            connection_pool, name=name, required=required, policy=policy, retry=retry,
            breaker=breaker, budget=budget, telemetry=telemetry, retry_writes=retry_writes,
            clock=clock, failure_threshold=failure_threshold, recovery_timeout=recovery_timeout,
            owns_pool=owns_pool,
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

    @property
    def retry_writes(self) -> bool:
        """Whether writes are retried after ambiguous failures too (for idempotent use)."""
        return self._core.guards.retry_writes

    # -- construction helpers ---------------------------------------------------------------

    @classmethod
    def from_env(
        cls,
        name: str = "redis",
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> ResilientRedis:
        """Build from ``REDIS_URL``, ``REDIS_RETRY_MAX_ATTEMPTS`` (attempts, the first included),
        ``REDIS_RETRY_BASE_DELAY`` and ``REDIS_RETRY_MAX_DELAY``; ``overrides`` win.

        Raises:
            ConfigError: a variable that does not parse, naming it, its value and what was
                expected.
        """
        return cls(name=name, **env_arguments(environ, overrides))

    @classmethod
    def from_sentinel(
        cls,
        sentinels: Sequence[tuple[str, int]],
        service_name: str,
        *,
        db: int = 0,
        name: str = "redis",
        **kwargs: Any,
    ) -> ResilientRedis:
        """A client of the primary of ``service_name``, found through ``sentinels``
        (``[(host, port), ...]``); the same as the URL
        ``redis+sentinel://host:port,host:port/service_name/db``.

        ``kwargs`` are the constructor's (``password=`` for the data nodes,
        ``sentinel_kwargs=`` for the connections to the Sentinels). After a failover a write
        refused with ``READONLY`` by the demoted primary is retried against the new one (it
        was not applied); see :mod:`instrumented_clients.redis.sentinel`.

        Raises:
            ConfigError: no Sentinel, a malformed address, or an empty service name.
        """
        return cls(sentinel_url(list(sentinels), service_name, db), name=name, **kwargs)

    def policy_for(self, *command: Any) -> RetryPolicy:
        """The retry policy a command (as passed to ``execute_command``) runs under here and
        now: it shows the write-retry rule, e.g. ``policy_for("INCR", "k")``."""
        return self._core.guards.for_command(command).policy

    # -- the hot path -----------------------------------------------------------------------

    def execute_command(self, *args: Any, **options: Any) -> Any:
        """Run one command through its Guard (retry, breaker, metrics, span)."""
        guard = self._guards.get(args[0])
        if guard is None or writes_opted_in.get():
            guard = self._core.guards.for_command(args)
        tracker = self._tracker
        if not tracker.connected:
            tracker.attempt_started()
        token = strict_checkout.set(True)
        try:
            result = guard.call(self._execute_command, *args, **options)
        except BaseException as error:
            self._core.call_failed(guard, error)
            raise
        finally:
            strict_checkout.reset(token)
        if not tracker.connected:
            self._core.attempt_succeeded()
        return result

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

    # -- connection state (slow paths only) -------------------------------------------------

    system = SYSTEM

    @property
    def state(self) -> ConnectionState:
        """The connection state (see :mod:`instrumented_clients.redis.tracking`)."""
        return self._tracker.state

    # -- pipelines --------------------------------------------------------------------------

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> ResilientPipeline:
        """A pipeline whose ``execute()`` runs as one unit under the write-retry rule."""
        return ResilientPipeline(
            self, self.connection_pool, self.response_callbacks, transaction, shard_hint
        )

    def _pipeline_guard(self, transactional: bool, stack: Sequence[Any]) -> Guard:
        return self._core.guards.for_pipeline(transactional, stack)

    # -- opt-in, health ---------------------------------------------------------------------

    @staticmethod
    @contextlib.contextmanager
    def idempotent() -> Iterator[None]:
        """Within the block, writes (and pipelines) are retried like reads: use it for writes
        that are safe to apply twice (``SET`` of a fixed value, ``SADD``, ``DEL``)."""
        with writes_idempotent():
            yield

    def check(self) -> bool:
        """One ``PING``, no retry (through the breaker); True when Redis answered."""
        try:
            self._run_check()
        except Exception:
            return False
        return True

    def _run_check(self) -> Any:
        return self._run(self._core.guards.check, lambda: self._execute_command("PING"))  # type: ignore[no-untyped-call]

    def health(self) -> HealthReport:
        """A snapshot for health endpoints: no URL, no password."""
        return self._core.health()

    def close(self, timeout: float | None = None) -> None:
        """Release the connections, as ``redis.Redis.close()`` does; idempotent.

        The pool's connections are closed when the client made the pool (or
        ``auto_close_connection_pool`` is set); a pool passed in by the caller stays theirs.
        The client stays usable: the next command connects again, and the state goes from
        CLOSED back to CONNECTED (a closed client is never reported as down).

        Args:
            timeout: accepted for the shape every client shares; closing does not wait.
        """
        tracker: ConnectionTracker | None = getattr(self, "_tracker", None)
        if tracker is None or tracker.state is ConnectionState.CLOSED:
            super().close()  # a half-built client, or nothing left to close but the pool
            return
        tracker.closing()
        try:
            super().close()
        finally:
            self._core.closed()

    def __repr__(self) -> str:
        return (f"ResilientRedis(name={self.name!r}, address={self.address!r}, db={self.db}, "
                f"state={self._tracker.state.value})")

