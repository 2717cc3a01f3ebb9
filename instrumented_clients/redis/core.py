"""What a Redis client is besides its I/O: settings, Guards, breaker, state and health.

:class:`~instrumented_clients.redis.ResilientRedis` and
:class:`~instrumented_clients.redis.AsyncResilientRedis` differ only in how they talk to the
server (``redis.Redis`` or ``redis.asyncio.Redis`` underneath, ``Guard.call`` or
``Guard.acall``). Everything else — the pool made from a checked URL, the retry policy with the
Redis classifier, the default breaker, the :class:`CommandGuards` of the write-retry rule, the
connection tracker and its bookkeeping, the pool metrics, the health report — is built here once
and held by both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Literal

from instrumented_clients.client import HealthReport, resolve_breaker, resolve_retry
from instrumented_clients.config import ConfigError
from instrumented_clients.redaction import redact_text, redact_url
from instrumented_clients.redis.connection import adopt_pool
from instrumented_clients.redis.errors import StaleConnectionError, classify, was_unsent
from instrumented_clients.redis.guards import CommandGuards
from instrumented_clients.redis.pool_metrics import (
    bind_pool_count_gauges,
    bind_pool_metrics,
    pool_counts,
    unbind_pool_gauges,
)
from instrumented_clients.redis.sentinel import describe_primary, is_sentinel_url, sentinel_pool
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

__all__ = [
    "RedisCore",
    "check_name",
    "counts_against_redis",
    "env_arguments",
    "make_pool",
    "resolve_pool",
]

_log = logging.getLogger("instrumented_clients.redis")
_PREPARED_OPERATIONS = ("get", "set", "pipeline", "transaction", "ping", "other")


def make_pool(pool_class: Any, url: str | None, health_check_interval: float,
              connection_options: dict[str, Any]) -> Any:
    """A pool of ``pool_class`` (sync or asyncio) from a URL checked before any I/O.

    Raises:
        ConfigError: a malformed URL or options redis-py rejects, naming ``url``.
    """
    url = validate_url(DEFAULT_URL if url is None else url)
    connection_options.setdefault("health_check_interval", health_check_interval)
    try:
        if is_sentinel_url(url):
            return sentinel_pool(pool_class, url, connection_options)
        return pool_class.from_url(url, **connection_options)
    except (ValueError, TypeError) as error:
        raise ConfigError(
            "url", redact_url(url), f"{URL_EXPECTED} ({redact_text(str(error))})"
        ) from None


def env_arguments(environ: Mapping[str, str] | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """A client's keyword arguments from ``REDIS_URL``, ``REDIS_RETRY_MAX_ATTEMPTS``,
    ``REDIS_RETRY_BASE_DELAY`` and ``REDIS_RETRY_MAX_DELAY``; ``overrides`` win.

    Raises:
        ConfigError: a variable that does not parse, naming it, its value and what was expected.
    """
    url = validate_url(REDIS_URL.read(environ), REDIS_URL.env)
    if overrides.get("policy") is None:
        overrides["policy"] = policy_from_env(
            environ, clock=overrides.get("clock") or SYSTEM_CLOCK)
    if "connection_pool" not in overrides:
        overrides.setdefault("url", url)
    return overrides


def check_name(name: object) -> None:
    """Raises ValueError unless ``name`` (the ``client`` label) is a non-empty string."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")


def resolve_pool(pool_class: Any, name: object, connection_pool: Any, url: str | None,
                 health_check_interval: float,
                 connection_options: dict[str, Any]) -> tuple[Any, bool]:
    """The client's pool (given, or made from ``url``) adopted, and whether the client owns it.

    Raises:
        ValueError: a bad ``name``, or a pool combined with a URL or connection options.
        ConfigError: a malformed URL.
    """
    check_name(name)
    if connection_pool is not None and (url is not None or connection_options):
        raise ValueError(
            "connection_pool cannot be combined with url or connection options "
            f"({', '.join(sorted(connection_options)) or 'url'}): configure the pool instead"
        )
    owns_pool = connection_pool is None
    if connection_pool is None:
        connection_pool = make_pool(pool_class, url, health_check_interval, connection_options)
    adopt_pool(connection_pool)
    return connection_pool, owns_pool


class RedisCore:
    """The I/O-free parts of one Redis client (see the module docstring)."""

    def __init__(
        self,
        pool: Any,
        *,
        name: str,
        required: bool,
        policy: RetryPolicy | None,
        retry: RetryPolicy | Literal[False] | None,
        breaker: CircuitBreaker | Literal[False] | None,
        budget: RetryBudget | None,
        telemetry: Telemetry | None,
        retry_writes: bool,
        clock: Clock | None,
        failure_threshold: int,
        recovery_timeout: float,
    ) -> None:
        self.name = name
        self.required = bool(required)
        self.pool = pool
        self.telemetry = telemetry or get_default_telemetry()
        self.telemetry.prepare(SYSTEM, name, _PREPARED_OPERATIONS)
        kwargs = pool.connection_kwargs
        host, port = kwargs.get("host"), kwargs.get("port")
        self.address = f"{host}:{port}" if host else str(kwargs.get("path", ""))
        self.db = int(kwargs.get("db", 0) or 0)
        span_base: dict[str, Any] = {"db.system.name": SYSTEM, "db.namespace": str(self.db)}
        if host:
            span_base.update({"server.address": str(host), "server.port": int(port or 6379)})

        given = retry if isinstance(retry, RetryPolicy) else policy
        self.clock = clock or (given.clock if given is not None else SYSTEM_CLOCK)
        self.context = ClientContext(SYSTEM, name, self.clock, self.telemetry)
        base = resolve_retry(retry, policy, lambda: default_policy(clock=self.clock))
        changes: dict[str, Any] = {}
        if base.classifier is classify_exception:
            changes["classifier"] = classify  # the generic one knows nothing of redis-py
        if clock is not None and base.clock is not clock:
            changes["clock"] = clock
        self.policy = base.replace(**changes) if changes else base
        self.breaker = resolve_breaker(breaker, lambda: CircuitBreaker(
            failure_threshold, recovery_timeout, failure_on=counts_against_redis,
            context=self.context,
        ))
        self.budget = budget
        self.tracker = ConnectionTracker(self.context)
        self.guards = CommandGuards(
            self.policy, breaker=self.breaker, budget=budget, context=self.context,
            span_attributes=span_base, retry_writes=bool(retry_writes), on_retry=self.on_retry,
        )
        bind_pool_metrics(self.telemetry, SYSTEM, name, pool)
        self.pool_gauges_bound = True
        self.after_change: Callable[[], None] | None = None
        """Called after a failure and after the success that ends one (a topology's log)."""

    # -- connection state (slow paths only) -------------------------------------------------

    def on_retry(self, event: RetryScheduled) -> None:
        """An attempt failed and another follows (the policies' ``on_retry`` hook)."""
        try:
            attempt_failed(self.tracker, self.pool, event.error)
            self.tracker.attempt_started()
        except Exception:  # bookkeeping must never change the outcome of a call
            _log.exception("redis client %r: connection state bookkeeping failed", self.name)

    def attempt_succeeded(self) -> None:
        try:
            if self.tracker.succeeded("command succeeded") and not self.pool_gauges_bound:
                # Used again after close(): the pool gauges follow it again.
                bind_pool_count_gauges(self.telemetry, SYSTEM, self.name, self.pool)
                self.pool_gauges_bound = True
            if self.after_change is not None:
                self.after_change()
        except Exception:  # a successful call must not fail on bookkeeping
            _log.exception("redis client %r: connection state bookkeeping failed", self.name)

    def call_failed(self, guard: Guard, error: BaseException) -> None:
        try:
            call_failed(self.tracker, self.pool, guard, error)
            if self.after_change is not None:
                self.after_change()
        except Exception:  # the caller must see the original error, not a bookkeeping one
            _log.exception("redis client %r: connection state bookkeeping failed", self.name)

    def closed(self) -> None:
        """The pool was closed by ``close()``: the gauges stop following it until the next use."""
        unbind_pool_gauges(self.telemetry, SYSTEM, self.name)
        self.pool_gauges_bound = False
        self.tracker.closed_now("close() called", reusable=True)

    def health(self, **details: Any) -> HealthReport:
        """A snapshot for health endpoints: no URL, no password; ``details`` are added (a
        topology's primaries)."""
        counts = pool_counts(self.pool)  # what the pool gauges read, too
        primary: dict[str, Any] = describe_primary(self.pool)  # behind Sentinel
        return HealthReport.build(
            SYSTEM, self.name, self.tracker, self.breaker,
            address=primary.get("primary") or self.address, db=self.db,
            retry_writes=self.guards.retry_writes,
            pool={"in_use": int(counts["in_use"]), "idle": int(counts["idle"]),
                  "max": int(counts["max"])},
            **primary, **details,
        )


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
