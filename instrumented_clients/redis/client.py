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

from collections.abc import Sequence
from typing import Any

import redis
from redis.connection import ConnectionPool

from instrumented_clients.redis.base import SyncRedisClientBase
from instrumented_clients.redis.connection import strict_checkout
from instrumented_clients.redis.core import counts_against_redis
from instrumented_clients.redis.guards import writes_opted_in
from instrumented_clients.redis.pipeline import ResilientPipeline
from instrumented_clients.redis.settings import sentinel_url

__all__ = ["ResilientRedis", "counts_against_redis"]


class ResilientRedis(SyncRedisClientBase, redis.Redis):
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

    pool_class = ConnectionPool

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

    # -- pipelines --------------------------------------------------------------------------

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> ResilientPipeline:
        """A pipeline whose ``execute()`` runs as one unit under the write-retry rule."""
        return ResilientPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint,
            guards=self._core.guards, run=self._run,
        )

    # -- the client shape -------------------------------------------------------------------

    def _ping_once(self) -> Any:
        return self._execute_command("PING")  # type: ignore[no-untyped-call]
