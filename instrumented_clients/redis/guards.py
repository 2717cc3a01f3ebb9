"""The write-retry rule as a table of Guards: which Guard runs a command or a pipeline.

Sans-I/O: nothing here talks to Redis, so :class:`~instrumented_clients.redis.ResilientRedis`
and :class:`~instrumented_clients.redis.AsyncResilientRedis` choose their Guards with the same
code and keep the same rule (stated in :mod:`instrumented_clients.redis.client`). The Guards run
sync calls with ``Guard.call`` and coroutines with ``Guard.acall``; both share one failure path.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

from opentelemetry.semconv.attributes.db_attributes import DB_OPERATION_NAME

from instrumented_clients.redis import commands
from instrumented_clients.redis.commands import CommandKind
from instrumented_clients.redis.errors import is_refused_by_server, was_unsent
from instrumented_clients.redis.tracking import SYSTEM
from instrumented_clients.resilience import (
    CircuitBreaker,
    ClientContext,
    Guard,
    RetryBudget,
    RetryPolicy,
)
from instrumented_clients.resilience.events import RetryScheduled

__all__ = ["CommandGuards", "idempotent", "writes_opted_in"]

MAX_CACHED_NAMES: Final = 512
# What a command name looks like (GET, CLIENT, JSON.GET): anything else is named "redis" so
# that a garbled first argument cannot mint span names.
_COMMAND_NAME: Final = re.compile(r"[A-Z][A-Z0-9_.|-]{0,39}")

writes_opted_in: Final[contextvars.ContextVar[bool]] = contextvars.ContextVar(
    "instrumented_clients_redis_retry_writes", default=False
)
"""True inside :func:`idempotent`: writes are retried like reads. A context variable, so it
follows the current thread and, under asyncio, the current task."""


@contextlib.contextmanager
def idempotent() -> Iterator[None]:
    """Within the block, writes (and pipelines) are retried like reads: use it for writes that
    are safe to apply twice (``SET`` of a fixed value, ``SADD``, ``DEL``)."""
    token = writes_opted_in.set(True)
    try:
        yield
    finally:
        writes_opted_in.reset(token)


class CommandGuards:
    """The Guards of one Redis client, by command name and by retry mode.

    Args:
        policy: the client's retry policy (with the Redis classifier).
        breaker, budget: shared by every command.
        context: the client's labels, clock and instrumentation.
        span_attributes: attributes every span of the client carries.
        retry_writes: retry writes after ambiguous failures too.
        on_retry: called with each scheduled retry (the client's connection bookkeeping).
    """

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        breaker: CircuitBreaker | None,
        budget: RetryBudget | None,
        context: ClientContext,
        span_attributes: dict[str, Any],
        retry_writes: bool,
        on_retry: Callable[[RetryScheduled], object],
    ) -> None:
        self.breaker = breaker
        self.budget = budget
        self.context = context
        self.retry_writes = retry_writes
        self._span_attributes = span_attributes
        self._policies = self._make_policies(policy, on_retry)
        self.by_name: dict[Any, Guard] = {}
        """Command name (as passed) → Guard: the hot path's one dictionary look-up."""
        self._by_mode: dict[tuple[str, str, str], Guard] = {}
        self.check = self._make_guard(
            "ping", "PING", self._policies["read"].replace(max_attempts=1)
        )

    @staticmethod
    def _make_policies(base: RetryPolicy,
                       on_retry: Callable[[RetryScheduled], object]) -> dict[str, RetryPolicy]:
        def unapplied(error: BaseException) -> bool:
            return (was_unsent(error) or is_refused_by_server(error)) and base.should_retry(error)

        def unsent(error: BaseException) -> bool:
            return was_unsent(error) and base.should_retry(error)

        hooks = (*base.retry_callbacks, on_retry)
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
        attributes = dict(self._span_attributes)
        if span_name != SYSTEM:
            attributes[DB_OPERATION_NAME] = span_name
        return Guard(
            policy, breaker=self.breaker, budget=self.budget, context=self.context,
            operation=operation, span_name=span_name,
            span_attributes=attributes,
            target=f"{SYSTEM}/{self.context.client} {span_name}",
        )

    def _mode_guard(self, label: str, span_name: str, mode: str) -> Guard:
        key = (label, span_name, mode)
        guard = self._by_mode.get(key)
        if guard is None:
            guard = self._by_mode[key] = self._make_guard(label, span_name, self._policies[mode])
        return guard

    def _command_mode(self, name: str, args: Sequence[Any]) -> str:
        kind = commands.command_kind(name, args)
        if kind is CommandKind.READ or (kind is CommandKind.WRITE and self.retry_writes):
            return "read"
        if kind is CommandKind.WRITE:
            return "read" if writes_opted_in.get() else "write"
        return "blocking"

    def retried_after_sending(self, args: Sequence[Any]) -> bool:
        """Whether the command may run again after a failure once it was sent (a read, or a
        write the caller made retryable) — the rule, for a command re-sent on its own."""
        return self._command_mode(commands.normalise(args[0]), args) == "read"

    def for_command(self, args: Sequence[Any]) -> Guard:
        """The Guard of one command (slow path: the first call of a name, or opted-in writes)."""
        name = commands.normalise(args[0])
        label = commands.command_label(name)
        opted_in = writes_opted_in.get()
        mode = self._command_mode(name, args)
        guard = self._mode_guard(label, name if _COMMAND_NAME.fullmatch(name) else SYSTEM, mode)
        # XREAD's kind depends on its arguments; an opted-in call must not fill the shared cache.
        cacheable = name not in ("XREAD", "XREADGROUP") and not opted_in
        if cacheable and len(self.by_name) < MAX_CACHED_NAMES:
            # An unhashable command name is resolved on every call.
            with contextlib.suppress(TypeError):
                self.by_name[args[0]] = guard
        return guard

    def for_pipeline(self, transactional: bool, stack: Sequence[Any]) -> Guard:
        """The Guard of a pipeline's ``execute()``: ``stack`` holds ``(args, options)`` pairs."""
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
        elif CommandKind.WRITE not in kinds or self.retry_writes or writes_opted_in.get():
            mode = "read"
        else:
            mode = "batch"
        if transactional:
            return self._mode_guard("transaction", "MULTI", mode)
        return self._mode_guard("pipeline", "PIPELINE", mode)
