"""``ResilientPipeline``: a redis-py pipeline executed as one guarded unit.

``execute()`` runs the queued batch through one Guard (operation ``transaction`` for MULTI/EXEC,
``pipeline`` otherwise). redis-py's ``Pipeline.execute`` empties the queue in a ``finally``; the
batch is restored before each further attempt, so a retry re-sends exactly what was queued. A
batch with a write is retried only when nothing of it was sent (see the rule in
:mod:`instrumented_clients.redis.client`); a read-only batch is always retried. Commands issued
after ``WATCH`` (immediate mode) go straight to the connection: a connection lost there ends in
redis-py's ``WatchError``, which ``Redis.transaction()`` answers by re-running the caller's
function, and which is never retried here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.semconv.attributes.db_attributes import DB_OPERATION_BATCH_SIZE
from redis.client import Pipeline
from redis.connection import ConnectionPool

from instrumented_clients.redis.errors import was_unsent
from instrumented_clients.redis.guards import CommandGuards
from instrumented_clients.resilience import Guard

__all__ = ["ResilientPipeline", "replayer", "report_partial"]


def report_partial(error: BaseException, size: int) -> None:
    """Say on ``error`` that a non-transactional batch failed part-way, unless provably nothing
    of it was sent: its commands run one by one, so some may have been applied, and it was not
    run again (a transaction is all or nothing and needs no such note)."""
    if was_unsent(error) or not isinstance(error, Exception):
        return
    error.add_note(f"pipeline of {size} commands failed part-way: the commands before the "
                   "failure may have been applied; it was not run again")


def replayer(pipe: Any) -> Callable[[], None]:
    """A function to call before each attempt of ``pipe.execute()``: from the second attempt on,
    it puts back the batch the previous attempt's ``reset()`` emptied (sync or asyncio). The first
    attempt gives the guard's span, when one records, the batch size."""
    queued = list(pipe.command_stack)
    scripts = set(pipe.scripts)
    explicit = pipe.explicit_transaction
    first = True

    def before_attempt() -> None:
        nonlocal first
        if first and len(queued) > 1:
            span = trace.get_current_span()
            if span.is_recording():
                span.set_attribute(DB_OPERATION_BATCH_SIZE, len(queued))
        if not first:
            pipe.command_stack = list(queued)
            pipe.scripts = set(scripts)
            pipe.explicit_transaction = explicit
        first = False

    return before_attempt


class ResilientPipeline(Pipeline):
    """Returned by :meth:`ResilientRedis.pipeline`; use it as a redis-py ``Pipeline``."""

    def __init__(
        self,
        connection_pool: ConnectionPool,
        response_callbacks: Any,
        transaction: bool,
        shard_hint: Any,
        *,
        guards: CommandGuards,
        run: Callable[[Guard, Callable[[], Any]], Any],
    ) -> None:
        super().__init__(connection_pool, response_callbacks, transaction, shard_hint)
        self._command_guards = guards
        self._run_guarded = run

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Send the queued commands (in MULTI/EXEC when transactional) and return the replies."""
        stack = self.command_stack
        if not stack and not self.watching:
            return []
        # ``transaction`` is an instance flag here, shadowing Redis.transaction() (hence vars()).
        transactional = bool(vars(self)["transaction"]) or self.explicit_transaction
        guard = self._command_guards.for_pipeline(transactional, stack)
        before_attempt = replayer(self)

        def attempt() -> list[Any]:
            before_attempt()
            result: list[Any] = super(ResilientPipeline, self).execute(raise_on_error)
            return result

        try:
            result: list[Any] = self._run_guarded(guard, attempt)
        except BaseException as error:
            if not transactional:
                report_partial(error, len(stack))
            raise
        return result
