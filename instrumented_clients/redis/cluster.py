"""``ResilientRedisCluster``: a ``redis.cluster.RedisCluster`` under ResilientRedis's rules.

It *is* a ``RedisCluster`` (every command method works as before; MOVED and ASK redirections and
the slot map stay redis-py's job) with the route every command takes changed, as in
:class:`~instrumented_clients.redis.ResilientRedis`: ``execute_command`` runs through the
client's :class:`~instrumented_clients.redis.guards.CommandGuards` (retry policy, breaker, budget,
metrics, span), and a pipeline's ``execute()`` runs as one guarded unit. The write-retry rule is
the same, stated once in :mod:`instrumented_clients.redis.client`.

What changes from redis-py's defaults, and why:

- ``RedisCluster`` retries a command that failed with ``ConnectionError``/``TimeoutError`` after
  it was sent, up to ``cluster_error_retry_attempts`` (10) times: a write could be applied twice.
  Its retries are set to 0 (and so are its pipelines'), so every attempt is one of ours, counted,
  and a write is retried only when it provably did not run.
- ``CLUSTERDOWN`` (no primary for a slot, e.g. while a replica is being promoted) and
  ``TRYAGAIN`` refuse a command without running it: retried for writes too. redis-py itself
  re-sends a ``TRYAGAIN`` command within one attempt (its redirection loop); a ``CLUSTERDOWN``
  reaches the guard, which waits by the policy's backoff and tries again on the refreshed map.
- Every node's pool is adopted like a single server's (connection errors before sending marked
  unsent, a dead pooled connection seen at check-out).

Health reports the primaries of the slot map (``primaries``), as redis-py last learnt it (no
I/O), and the log names them when the client is built and when they change (a failover); the
pool gauges add up the nodes' pools. Labels stay the same bounded set: no node address.

Construction does no I/O, so a service starts while the cluster is down: the driver's own
``__init__`` (which asks a startup node for the slot map) runs on the first call, inside that
call's guarded attempt, and again on the calls that follow until a node answers. Until then a
call fails with a ``ConnectionError`` marked as not sent (a write is retried), or with the
node's ``AuthenticationError`` for a wrong password.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from redis.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.connection import ConnectionPool
from redis.exceptions import (
    AskError,
    ConnectionError,
    MovedError,
    RedisClusterException,
    RedisError,
    TimeoutError,
)

from instrumented_clients.client import HealthReport
from instrumented_clients.config import ConfigError
from instrumented_clients.redaction import redact_text, redact_url
from instrumented_clients.redis.base import SyncRedisClientBase
from instrumented_clients.redis.connection import adopt_pool, no_retry
from instrumented_clients.redis.core import check_name
from instrumented_clients.redis.errors import classify, is_refused_by_server, mark_unsent
from instrumented_clients.redis.guards import writes_opted_in
from instrumented_clients.redis.pipeline import report_partial
from instrumented_clients.redis.settings import validate_url
from instrumented_clients.resilience import ErrorCategory

__all__ = ["ClusterNodePools", "ResilientClusterPipeline", "ResilientRedisCluster"]

DEFAULT_CLUSTER_URL = "redis://localhost:6379/0"
_log = logging.getLogger("instrumented_clients.redis")


class _AdoptedNodePool(ConnectionPool):
    """The pool redis-py makes for each node, adopted as a single server's pool is.

    ``health_check_interval`` is set here: ``RedisCluster`` drops it from the options it passes
    on to the nodes, and the idle-connection PING is what lets a write on a silently dead link
    be retried (nothing of it was sent).
    """

    def __init__(self, *args: Any, health_check_interval: float = 0, **kwargs: Any) -> None:
        super().__init__(*args, health_check_interval=health_check_interval, **kwargs)
        adopt_pool(self)


class ClusterNodePools:
    """The pools of every node a cluster client knows, seen as one (pool gauges, health)."""

    def __init__(self, cluster: ResilientRedisCluster, host: str, port: int) -> None:
        self._cluster = cluster
        self.connection_kwargs: dict[str, Any] = {"host": host, "port": port, "db": 0}

    def member_pools(self) -> list[Any]:
        if not self._cluster.slot_map_loaded:  # no node known yet (and no I/O here)
            return []
        return [node.redis_connection.connection_pool for node in self._cluster.get_nodes()  # type: ignore[no-untyped-call]
                if node.redis_connection is not None]

    def get_connection_count(self) -> list[tuple[int, dict[str, Any]]]:
        """(idle, in use) summed over the nodes' pools, in the shape of redis-py's pools."""
        idle = in_use = 0
        for pool in self.member_pools():
            (node_idle, _), (node_in_use, _) = pool.get_connection_count()
            idle += node_idle
            in_use += node_in_use
        return [(idle, {}), (in_use, {})]

    @property
    def max_connections(self) -> int:
        return sum(int(pool.max_connections or 0) for pool in self.member_pools())

    def disconnect(self, inuse_connections: bool = True) -> None:
        for pool in self.member_pools():
            pool.disconnect(inuse_connections=inuse_connections)


class ResilientRedisCluster(SyncRedisClientBase, RedisCluster):
    """A ``RedisCluster`` with retries, a circuit breaker, connection state and telemetry.

    Args:
        url: ``redis://`` or ``rediss://`` URL of any node (db 0); the others are discovered.
        startup_nodes: ``[(host, port), ...]`` to try in turn instead of ``url``.
        name, policy, retry, breaker, budget, telemetry, retry_writes, clock,
        failure_threshold, recovery_timeout, required, health_check_interval: as for
            :class:`~instrumented_clients.redis.ResilientRedis`.
        **cluster_options: passed to ``RedisCluster`` (``socket_timeout``,
            ``read_from_replicas``, ``require_full_coverage``, ...); ``retry`` is ours.

    Raises:
        ConfigError: a malformed URL or startup node (before any I/O).
        ValueError: ``connection_pool`` or ``single_connection_client`` (a cluster has a pool
            per node), or both ``url`` and ``startup_nodes``.
    """

    pool_class = ConnectionPool

    def __init__(self, url: str | None = None, *, name: str = "redis-cluster",
                 **options: Any) -> None:
        super().__init__(url, name=name, **options)
        self._core.after_change = self._log_primaries  # a failover shows in the log

    def _start_driver(self, name: str, url: str | None, connection_pool: Any,
                      health_check_interval: float, single_connection_client: bool,
                      connection_options: dict[str, Any]) -> Any:
        check_name(name)
        if connection_pool is not None or single_connection_client:
            raise ValueError("connection_pool and single_connection_client do not apply to a "
                             "cluster (one pool per node): give url or startup_nodes")
        nodes = _startup_nodes(url, connection_options.pop("startup_nodes", None))
        self._driver_options: dict[str, Any] = {
            "connection_pool_class": functools.partial(
                _AdoptedNodePool, health_check_interval=health_check_interval),
            **connection_options,
            "retry": no_retry(),  # every attempt is one of ours (see the module docstring)
        }
        if url is not None:
            self._driver_options["url"] = url
        else:
            self._driver_options["startup_nodes"] = [ClusterNode(h, p) for h, p in nodes]  # type: ignore[no-untyped-call]
        self._started = False
        self._starting = False
        self._start_lock = threading.RLock()
        self._primaries: list[str] = []
        host, port = nodes[0]
        self.node_pools = ClusterNodePools(self, host, port)
        return self.node_pools

    def _start(self) -> None:
        """Run the driver's ``__init__``: the slot map (and COMMAND) from a startup node."""
        with self._start_lock:
            if self._started or self._starting:  # done, or the driver's own COMMAND call
                return
            self._starting = True
            try:
                RedisCluster.__init__(self, **self._driver_options)
            except RedisClusterException as error:
                cause = error.__cause__
                if cause is not None and classify(cause) is ErrorCategory.AUTH:
                    raise cause from None  # a wrong password: the server's own answer
                raise mark_unsent(ConnectionError(
                    "no Redis Cluster node answered for the slot map "
                    f"({redact_text(str(error))})")) from None
            finally:
                self._starting = False
            self._started = True
        self._log_primaries()

    @property
    def slot_map_loaded(self) -> bool:
        """Whether the driver has started: a node answered with the slot map."""
        return bool(self.__dict__.get("_started"))

    def __getattr__(self, name: str) -> Any:
        # Only reached for an attribute not set: before the first call, the driver's. Reading a
        # public one (encoder, nodes_manager, ...) loads the slot map, as a call would; a
        # private one does not, so close() and the driver's __del__ (its _lock) stay I/O-free.
        state = self.__dict__
        if name.startswith("_") or state.get("_started", True) or state.get("_starting"):
            raise AttributeError(name)
        self._run(self._core.guards.for_command(("CLUSTER", "SLOTS")), self._start)
        return object.__getattribute__(self, name)

    # -- the hot path -----------------------------------------------------------------------

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        """Run one command through its Guard; redis-py routes it to its node."""
        guard = self._guards.get(args[0])
        if guard is None or writes_opted_in.get():
            guard = self._core.guards.for_command(args)
        return self._run(guard, functools.partial(self._send, *args, **kwargs))

    def _send(self, *args: Any, **kwargs: Any) -> Any:
        if not self._started:
            self._start()
        return RedisCluster.execute_command(self, *args, **kwargs)  # type: ignore[no-untyped-call]

    def _ping_once(self) -> Any:
        return self._send("PING")

    def _log_primaries(self) -> None:
        """Log the slot map's primaries when they changed (slow paths only: after a failure,
        and on the first success that follows)."""
        primaries = self.primaries()
        if primaries and primaries != self._primaries:
            level = logging.INFO if not self._primaries else logging.WARNING
            _log.log(level, "redis cluster client %r: primaries are %s%s", self.name,
                     ", ".join(primaries),
                     f" (were {', '.join(self._primaries)})" if self._primaries else "")
            self._primaries = primaries

    def primaries(self) -> list[str]:
        """The primaries (``host:port``) of the slot map as last loaded; none before the first
        load (no I/O)."""
        if not self._started:
            return []
        return sorted(node.name for node in self.get_primaries())  # type: ignore[no-untyped-call]

    # -- pipelines --------------------------------------------------------------------------

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> ResilientClusterPipeline:
        """A cluster pipeline whose ``execute()`` runs as one unit under the write-retry rule."""
        if shard_hint:
            raise RedisClusterException("shard_hint is deprecated in cluster mode")
        if not self._started:  # the pipeline is built on the slot map: load it, as a call would
            self._run(self._core.guards.for_command(("CLUSTER", "SLOTS")), self._start)
        # The arguments RedisCluster.pipeline() passes, the lock included: it is the client's
        # own (inherited) attribute, and redis-py offers no public accessor for it.
        return ResilientClusterPipeline(
            self, transaction=bool(transaction), nodes_manager=self.nodes_manager,
            commands_parser=self.commands_parser,
            startup_nodes=self.nodes_manager.startup_nodes,
            result_callbacks=self.result_callbacks,
            cluster_response_callbacks=self.cluster_response_callbacks,
            read_from_replicas=self.read_from_replicas,
            load_balancing_strategy=self.load_balancing_strategy,
            reinitialize_steps=self.reinitialize_steps, retry=self.retry, lock=self._lock,
        )

    def resend_failed(self, error: Exception, args: tuple[Any, ...],
                      options: dict[str, Any]) -> Any:
        """The reply of one command of a batch that failed with ``error``: the command again,
        through its Guard, when that cannot apply it twice (redirected or refused by the node:
        not run; or a read, or a write the caller made retryable), else ``error`` itself."""
        not_run = isinstance(error, (MovedError, AskError)) or is_refused_by_server(error)
        lost = isinstance(error, (ConnectionError, TimeoutError))
        if not (not_run or (lost and self._core.guards.retried_after_sending(args))):
            return error
        try:
            return self.execute_command(*args, **options)
        except RedisError as again:
            return again

    def run_batch(self, transactional: bool, queued: Sequence[tuple[Any, Any]],
                  attempt: Callable[[], list[Any]]) -> list[Any]:
        """Run a pipeline's ``attempt`` under the Guard its ``queued`` commands choose."""
        guard = self._core.guards.for_pipeline(transactional, queued)
        result: list[Any] = self._run(guard, attempt)
        return result

    def health(self) -> HealthReport:
        """A snapshot for health endpoints: the primaries of the slot map; no URL, no password."""
        return self._core.health(primaries=self.primaries())

    def __repr__(self) -> str:
        return (f"ResilientRedisCluster(name={self.name!r}, address={self.address!r}, "
                f"state={self._tracker.state.value})")


class ResilientClusterPipeline(ClusterPipeline):
    """Returned by :meth:`ResilientRedisCluster.pipeline`; use it as redis-py's."""

    def __init__(self, owner: ResilientRedisCluster, *, transaction: bool,
                 **pipeline_options: Any) -> None:
        super().__init__(transaction=transaction, **pipeline_options)
        self._owner = owner
        self._transactional = transaction
        # What was queued, as (args, options): ClusterPipeline keeps its queue inside its
        # execution strategy and empties it after every execute(), with no public way to read
        # it back, so the batch is recorded here to choose the Guard and to replay a retry.
        self._queued: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def pipeline_execute_command(self, *args: Any, **options: Any) -> Any:
        self._queued.append((args, options))
        return super().pipeline_execute_command(*args, **options)  # type: ignore[no-untyped-call]

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if args and str(args[0]).upper() not in self.IMMEDIATE_EXECUTE_COMMANDS:
            self._queued.append((args, kwargs))
        return super().execute_command(*args, **kwargs)  # type: ignore[no-untyped-call]

    def reset(self) -> None:  # type: ignore[override]  # the pipeline's, not the RESET command
        super().reset()  # type: ignore[no-untyped-call]
        self._queued = []

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Send the queued commands (to their nodes) and return the replies in order."""
        queued = list(self._queued)
        if not queued:
            return []
        first = True

        def attempt() -> list[Any]:
            nonlocal first
            if not first:  # the previous attempt's reset() emptied the queue: put it back
                for args, options in queued:
                    super(ResilientClusterPipeline, self).execute_command(*args, **options)  # type: ignore[no-untyped-call]
            first = False
            if self._transactional:  # one slot, one node, MULTI/EXEC: all or nothing
                replies: list[Any] = ClusterPipeline.execute(self, raise_on_error)
                return replies
            return self._send_without_resending(queued, raise_on_error)

        try:
            result = self._owner.run_batch(self._transactional, queued, attempt)
        except BaseException as error:
            if not self._transactional:
                report_partial(error, len(queued))
            raise
        finally:
            self._queued = []
        return result

    def _send_without_resending(self, queued: Sequence[tuple[tuple[Any, ...], dict[str, Any]]],
                                raise_on_error: bool) -> list[Any]:
        # redis-py re-sends, one by one, every command of a batch whose reply was an error it
        # may retry — a lost connection after sending included, which could apply a write
        # twice. Its redirections are therefore turned off here, and the failed commands are
        # settled by the client's own rule (resend_failed). The queued PipelineCommand objects
        # live in the pipeline's own (inherited) execution strategy, which send_cluster_commands
        # takes as they are; redis-py has no public accessor for them.
        try:
            replies: list[Any] = self.send_cluster_commands(  # type: ignore[no-untyped-call]
                self._execution_strategy.command_queue, raise_on_error=False,
                allow_redirections=False)
        finally:
            self.reset()
        for position, reply in enumerate(replies):
            if isinstance(reply, Exception):
                args, options = queued[position]
                replies[position] = self._owner.resend_failed(reply, args, options)
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        return replies


def _startup_nodes(url: str | None,
                   startup_nodes: Sequence[tuple[str, int]] | None) -> list[tuple[str, int]]:
    """The startup nodes checked before any I/O (from ``url`` or given)."""
    if startup_nodes is not None:
        if url is not None:
            raise ValueError("url and startup_nodes are exclusive: give one")
        checked = []
        for node in startup_nodes:
            if (not isinstance(node, tuple) or len(node) != 2 or not isinstance(node[0], str)
                    or not isinstance(node[1], int) or not 0 < node[1] < 65536):
                raise ConfigError("startup_nodes", repr(list(startup_nodes)),
                                  "a non-empty list of (host, port) pairs")
            checked.append(node)
        if not checked:
            raise ConfigError("startup_nodes", "[]", "a non-empty list of (host, port) pairs")
        return checked
    url = validate_url(DEFAULT_CLUSTER_URL if url is None else url)
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or parts.path.strip("/") not in ("", "0"):
        raise ConfigError("url", redact_url(url), "a redis:// or rediss:// URL of a cluster "
                          "node, with db 0 or none (a cluster has no other db)")
    return [(parts.hostname or "localhost", parts.port or 6379)]
