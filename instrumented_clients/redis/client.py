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
import contextvars
import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final, Literal

import redis
from opentelemetry.semconv.attributes.db_attributes import DB_OPERATION_NAME
from redis.connection import ConnectionPool

from instrumented_clients.client import HealthReport, resolve_breaker, resolve_retry
from instrumented_clients.config import ConfigError
from instrumented_clients.redaction import redact_text, redact_url
from instrumented_clients.redis import commands
from instrumented_clients.redis.commands import CommandKind
from instrumented_clients.redis.connection import adopt_pool, strict_checkout
from instrumented_clients.redis.errors import (
    StaleConnectionError,
    classify,
    is_refused_by_server,
    was_unsent,
)
from instrumented_clients.redis.pipeline import ResilientPipeline
from instrumented_clients.redis.pool_metrics import (
    bind_pool_count_gauges,
    bind_pool_metrics,
    pool_counts,
    unbind_pool_gauges,
)
from instrumented_clients.redis.settings import (
    DEFAULT_URL,
    URL_EXPECTED,
    default_policy,
    policy_from_env,
    validate_url,
)
from instrumented_clients.redis.tracking import SYSTEM, attempt_failed, call_failed
from instrumented_clients.resilience import (
    SYSTEM_CLOCK,
    CircuitBreaker,
    ClientContext,
    ConnectionState,
    ConnectionTracker,
    ErrorCategory,
    Guard,
    RetryBudget,
    RetryPolicy,
    classify_exception,
)
from instrumented_clients.resilience.clock import Clock
from instrumented_clients.resilience.events import RetryScheduled
from instrumented_clients.settings import REDIS_URL
from instrumented_clients.telemetry import Telemetry, get_default_telemetry

__all__ = ["ResilientRedis", "counts_against_redis"]

_log = logging.getLogger("instrumented_clients.redis")

# What a command name looks like (GET, CLIENT, JSON.GET): anything else is named "redis" so
# that a garbled first argument cannot mint span names.
_COMMAND_NAME: Final = re.compile(r"[A-Z][A-Z0-9_.|-]{0,39}")
_PREPARED_OPERATIONS: Final = ("get", "set", "pipeline", "transaction", "ping", "other")
_MAX_CACHED_NAMES: Final = 512

_writes_opted_in: Final[contextvars.ContextVar[bool]] = contextvars.ContextVar(
    "instrumented_clients_redis_retry_writes", default=False
)


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
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        if connection_pool is not None and (url is not None or connection_options):
            raise ValueError(
                "connection_pool cannot be combined with url or connection options "
                f"({', '.join(sorted(connection_options)) or 'url'}): configure the pool instead"
            )
        owns_pool = connection_pool is None
        if connection_pool is None:
            url = validate_url(DEFAULT_URL if url is None else url)
            connection_options.setdefault("health_check_interval", health_check_interval)
            try:
                connection_pool = ConnectionPool.from_url(url, **connection_options)
            except (ValueError, TypeError) as error:
                raise ConfigError(
                    "url", redact_url(url), f"{URL_EXPECTED} ({redact_text(str(error))})"
                ) from None
        adopt_pool(connection_pool)
        super().__init__(
            connection_pool=connection_pool, single_connection_client=single_connection_client
        )
        self.auto_close_connection_pool = owns_pool

        self.name = name
        self.required = bool(required)
        self.retry_writes = bool(retry_writes)
        self._telemetry = telemetry or get_default_telemetry()
        self._telemetry.prepare(SYSTEM, name, _PREPARED_OPERATIONS)
        kwargs = connection_pool.connection_kwargs
        host, port = kwargs.get("host"), kwargs.get("port")
        self.address = f"{host}:{port}" if host else str(kwargs.get("path", ""))
        self.db = int(kwargs.get("db", 0) or 0)
        self._span_base: dict[str, Any] = {"db.system.name": SYSTEM, "db.namespace": str(self.db)}
        if host:
            self._span_base.update({"server.address": str(host), "server.port": int(port or 6379)})

        given = retry if isinstance(retry, RetryPolicy) else policy
        self._clock = clock or (given.clock if given is not None else SYSTEM_CLOCK)
        self.context = ClientContext(SYSTEM, name, self._clock, self._telemetry)
        base = resolve_retry(retry, policy, lambda: default_policy(clock=self._clock))
        changes: dict[str, Any] = {}
        if base.classifier is classify_exception:
            changes["classifier"] = classify  # the generic one knows nothing of redis-py
        if clock is not None and base.clock is not clock:
            changes["clock"] = clock
        self.policy = base.replace(**changes) if changes else base
        self._policies = self._make_policies(self.policy)
        self.breaker = resolve_breaker(breaker, lambda: CircuitBreaker(
            failure_threshold, recovery_timeout, failure_on=counts_against_redis,
            context=self.context,
        ))
        self.budget = budget

        self._tracker = ConnectionTracker(self.context)
        bind_pool_metrics(self._telemetry, SYSTEM, name, connection_pool, owned=owns_pool)
        self._pool_gauges_bound = True
        self._guards: dict[Any, Guard] = {}
        self._guards_by_mode: dict[tuple[str, str, str], Guard] = {}
        self._check_guard = self._make_guard(
            "ping", "PING", self._policies["read"].replace(max_attempts=1)
        )

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
        url = validate_url(REDIS_URL.read(environ), REDIS_URL.env)
        if overrides.get("policy") is None:
            overrides["policy"] = policy_from_env(
                environ, clock=overrides.get("clock") or SYSTEM_CLOCK)
        if "connection_pool" not in overrides:
            overrides.setdefault("url", url)
        return cls(name=name, **overrides)

    def _make_policies(self, base: RetryPolicy) -> dict[str, RetryPolicy]:
        def unapplied(error: BaseException) -> bool:
            return (was_unsent(error) or is_refused_by_server(error)) and base.should_retry(error)

        def unsent(error: BaseException) -> bool:
            return was_unsent(error) and base.should_retry(error)

        hooks = (*base.retry_callbacks, self._on_retry)
        return {
            "read": base.replace(on_retry=hooks),
            "write": base.replace(retry_on=unapplied, on_retry=hooks),  # a single command
            # A pipeline: a refusal by the server may cover only part of it.
            "batch": base.replace(retry_on=unsent, on_retry=hooks),
            "blocking": base.replace(retry_on=unsent, on_retry=hooks),
        }

    def _make_guard(self, operation: str, span_name: str, policy: RetryPolicy) -> Guard:
        # The command is the span's name and db.operation.name, labelled or not: Redis's
        # commands are a bounded set (the metric label keeps its smaller allow-list).
        attributes = dict(self._span_base)
        if span_name != SYSTEM:
            attributes[DB_OPERATION_NAME] = span_name
        return Guard(
            policy, breaker=self.breaker, budget=self.budget, context=self.context,
            operation=operation, span_name=span_name,
            span_attributes=attributes, target=f"{SYSTEM}/{self.name} {span_name}",
        )

    def _mode_guard(self, label: str, span_name: str, mode: str) -> Guard:
        key = (label, span_name, mode)
        guard = self._guards_by_mode.get(key)
        if guard is None:
            guard = self._guards_by_mode[key] = self._make_guard(
                label, span_name, self._policies[mode]
            )
        return guard

    def _guard_for(self, args: Sequence[Any]) -> Guard:
        """The Guard of one command (slow path: the first call of a name, or opted-in writes)."""
        name = commands.normalise(args[0])
        label = commands.command_label(name)
        kind = commands.command_kind(name, args)
        opted_in = _writes_opted_in.get()
        if kind is CommandKind.READ or (kind is CommandKind.WRITE and self.retry_writes):
            mode = "read"
        elif kind is CommandKind.WRITE:
            mode = "read" if opted_in else "write"
        else:
            mode = "blocking"
        guard = self._mode_guard(label, name if _COMMAND_NAME.fullmatch(name) else SYSTEM, mode)
        # XREAD's kind depends on its arguments; an opted-in call must not fill the shared cache.
        cacheable = name not in ("XREAD", "XREADGROUP") and not opted_in
        if cacheable and len(self._guards) < _MAX_CACHED_NAMES:
            # An unhashable command name is resolved on every call.
            with contextlib.suppress(TypeError):
                self._guards[args[0]] = guard
        return guard

    def policy_for(self, *command: Any) -> RetryPolicy:
        """The retry policy a command (as passed to ``execute_command``) runs under here and
        now: it shows the write-retry rule, e.g. ``policy_for("INCR", "k")``."""
        return self._guard_for(command).policy

    # -- the hot path -----------------------------------------------------------------------

    def execute_command(self, *args: Any, **options: Any) -> Any:
        """Run one command through its Guard (retry, breaker, metrics, span)."""
        guard = self._guards.get(args[0])
        if guard is None or _writes_opted_in.get():
            guard = self._guard_for(args)
        tracker = self._tracker
        if not tracker.connected:
            tracker.attempt_started()
        token = strict_checkout.set(True)
        try:
            result = guard.call(self._execute_command, *args, **options)
        except BaseException as error:
            self._call_failed(guard, error)
            raise
        finally:
            strict_checkout.reset(token)
        if not tracker.connected:
            self._attempt_succeeded()
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
            self._call_failed(guard, error)
            raise
        finally:
            strict_checkout.reset(token)
        if not tracker.connected:
            self._attempt_succeeded()
        return result

    # -- connection state (slow paths only) -------------------------------------------------

    system = SYSTEM

    @property
    def state(self) -> ConnectionState:
        """The connection state (see :mod:`instrumented_clients.redis.tracking`)."""
        return self._tracker.state

    def _on_retry(self, event: RetryScheduled) -> None:
        """An attempt failed and another follows (the policies' ``on_retry`` hook)."""
        try:
            attempt_failed(self._tracker, self.connection_pool, event.error)
            self._tracker.attempt_started()
        except Exception:  # bookkeeping must never change the outcome of a call
            _log.exception("redis client %r: connection state bookkeeping failed", self.name)

    def _attempt_succeeded(self) -> None:
        try:
            if self._tracker.succeeded("command succeeded") and not self._pool_gauges_bound:
                # Used again after close(): the pool gauges follow it again.
                bind_pool_count_gauges(self._telemetry, SYSTEM, self.name, self.connection_pool)
                self._pool_gauges_bound = True
        except Exception:  # a successful call must not fail on bookkeeping
            _log.exception("redis client %r: connection state bookkeeping failed", self.name)

    def _call_failed(self, guard: Guard, error: BaseException) -> None:
        try:
            call_failed(self._tracker, self.connection_pool, guard, error)
        except Exception:  # the caller must see the original error, not a bookkeeping one
            _log.exception("redis client %r: connection state bookkeeping failed", self.name)

    # -- pipelines --------------------------------------------------------------------------

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> ResilientPipeline:
        """A pipeline whose ``execute()`` runs as one unit under the write-retry rule."""
        return ResilientPipeline(
            self, self.connection_pool, self.response_callbacks, transaction, shard_hint
        )

    def _pipeline_guard(self, transactional: bool, stack: Sequence[Any]) -> Guard:
        kinds: set[CommandKind] = set()
        for name in {args[0] for args, _ in stack}:  # a 100-command batch has few distinct names
            normalised = commands.normalise(name)
            if normalised in ("XREAD", "XREADGROUP"):  # the kind depends on the arguments
                kinds.update(commands.command_kind(normalised, args)
                             for args, _ in stack if args[0] == name)
            else:
                kinds.add(commands.command_kind(normalised))
        if CommandKind.BLOCKING in kinds:
            mode = "blocking"
        elif CommandKind.WRITE not in kinds or self.retry_writes or _writes_opted_in.get():
            mode = "read"
        else:
            mode = "batch"
        if transactional:
            return self._mode_guard("transaction", "MULTI", mode)
        return self._mode_guard("pipeline", "PIPELINE", mode)

    # -- opt-in, health ---------------------------------------------------------------------

    @staticmethod
    @contextlib.contextmanager
    def idempotent() -> Iterator[None]:
        """Within the block, writes (and pipelines) are retried like reads: use it for writes
        that are safe to apply twice (``SET`` of a fixed value, ``SADD``, ``DEL``)."""
        token = _writes_opted_in.set(True)
        try:
            yield
        finally:
            _writes_opted_in.reset(token)

    def check(self) -> bool:
        """One ``PING``, no retry (through the breaker); True when Redis answered."""
        try:
            self._run_check()
        except Exception:
            return False
        return True

    def _run_check(self) -> Any:
        return self._run(self._check_guard, lambda: self._execute_command("PING"))  # type: ignore[no-untyped-call]

    def health(self) -> HealthReport:
        """A snapshot for health endpoints: no URL, no password."""
        counts = pool_counts(self.connection_pool)  # what the pool gauges read, too
        return HealthReport.build(
            SYSTEM, self.name, self._tracker, self.breaker, address=self.address, db=self.db,
            retry_writes=self.retry_writes,
            pool={"in_use": int(counts["in_use"]), "idle": int(counts["idle"]),
                  "max": int(counts["max"])},
        )

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
            unbind_pool_gauges(self._telemetry, SYSTEM, self.name)
            self._pool_gauges_bound = False
            tracker.closed_now("close() called", reusable=True)

    def __repr__(self) -> str:
        return (f"ResilientRedis(name={self.name!r}, address={self.address!r}, db={self.db}, "
                f"state={self._tracker.state.value})")


def counts_against_redis(error: BaseException) -> bool:
    """Whether a failure counts toward the default circuit breaker.

    Counted: what shows Redis unreachable or unresponsive — failures to connect (refused,
    connect timeout, handshake), timeouts, and the server's own "busy" refusals. Not counted by
    itself: an established connection that drops under a command, or a pooled connection found
    dead (a network blip, a server restart, ``CLIENT KILL``). One such event fails every command
    in flight at once, which would open the breaker on a single blip; the reconnection that
    follows is what is counted.
    """
    category = classify(error)
    if not category.is_transient or isinstance(error, StaleConnectionError):
        return False
    return category is not ErrorCategory.CONNECTION or was_unsent(error)
