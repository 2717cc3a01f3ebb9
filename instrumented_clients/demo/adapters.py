"""Thin adapters over the raw drivers and the resilience core, one per dependency of the demo.

Each adapter has the shape of the library's clients (``name``, ``required``, ``health()``,
``close()``) plus ``step(order)``, the workload's one call into it. They stand in for
``ResilientDatabase`` and ``ResilientRedis`` (this module) and ``ResilientPublisher`` and
``ResilientConsumer`` (:mod:`instrumented_clients.demo.amqp`) until those are wired in; the
workload and the terminal view only use that shape, and read the rest from the metrics.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from instrumented_clients.demo.probes import (
    classify_driver_error,
    database_connect_args,
    database_system,
    describe_error,
    display_address,
    redis_client,
)
from instrumented_clients.demo.settings import Settings
from instrumented_clients.resilience import (
    CircuitBreaker,
    CircuitOpenError,
    ConnectionState,
    ConnectionStateMachine,
    Guard,
    RetryPolicy,
)
from instrumented_clients.resilience import events as ev
from instrumented_clients.telemetry import Telemetry

__all__ = ["DemoDatabase", "DemoRedis", "Dependency", "InterruptibleClock", "legible"]

Order = dict[str, Any]
_DOWN_STATES = (ConnectionState.DISCONNECTED, ConnectionState.CONNECTING, ConnectionState.FAILED)


class InterruptibleClock:
    """The system clock, except that every wait ends as soon as ``event`` is set.

    Given to the demo's retry policies so that a shutdown does not sit out a backoff schedule
    (``docker stop`` kills after 10 s): the remaining attempts run at once and fail fast.
    """

    def __init__(self, event: threading.Event) -> None:
        self._event = event

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        self._event.wait(seconds)

    async def asleep(self, seconds: float) -> None:
        import asyncio

        await asyncio.sleep(0 if self._event.is_set() else seconds)


def legible(error: BaseException) -> BaseException:
    """pika's connection errors print as nothing; log sinks get one that says what happened."""
    if str(error).strip():
        return error
    legible = ConnectionError(describe_error(error))
    legible.__cause__ = error
    return legible


class Dependency:
    """State, breaker and the ``health()`` contract shared by every adapter."""

    def __init__(self, name: str, system: str, address: str, *, required: bool,
                 telemetry: Telemetry, breaker_cooldown: float, operations: tuple[str, ...]):
        self.name = name
        self.system = system
        self.address = address
        self.required = required
        self.telemetry = telemetry
        telemetry.prepare(system, name, operations)
        self.state_machine = ConnectionStateMachine(system, name, instrumentation=telemetry)
        self.breaker = CircuitBreaker(5, breaker_cooldown, name=name, system=system,
                                      failure_on=lambda exc: classify_driver_error(exc)
                                      .is_transient, instrumentation=telemetry)
        self.last_error: str | None = None
        self.consecutive_failures = 0
        self.reconnect_attempts = 0
        self._down_since: float | None = time.monotonic()
        self._ever_connected = False

    @property
    def state(self) -> ConnectionState:
        return self.state_machine.state

    def _move(self, to_state: ConnectionState, reason: str | None = None) -> None:
        if self.state_machine.can_transition(to_state):
            self.state_machine.transition(to_state, reason)

    def _mark_up(self) -> None:
        self.consecutive_failures = 0
        if self.state is ConnectionState.CONNECTED:
            return
        # A first connection that worked at once is not a reconnect; anything else is.
        if self.reconnect_attempts or self._ever_connected:
            attempts = self.reconnect_attempts + 1
            self.telemetry.emit(ev.ReconnectAttempt(self.system, self.name, attempts, "success"))
            if self._down_since is not None:
                self.telemetry.emit(ev.ReconnectFinished(
                    self.system, self.name, "success", time.monotonic() - self._down_since,
                    attempts))
        self.reconnect_attempts = 0
        self._down_since = None
        self._ever_connected = True
        self._move(ConnectionState.CONNECTED)

    def _mark_down(self, error: BaseException, next_delay: float | None = None) -> None:
        category = classify_driver_error(error)
        self.last_error = describe_error(error)
        self.consecutive_failures += 1
        if not category.is_transient:
            return  # a bad request says nothing about the connection
        if self.state is ConnectionState.CONNECTED:
            self._down_since = time.monotonic()
            self._move(ConnectionState.DISCONNECTED, self.last_error)
        else:
            self.reconnect_attempts += 1
            self.telemetry.emit(ev.ReconnectAttempt(
                self.system, self.name, self.reconnect_attempts, "failure", category.value,
                legible(error), next_delay))

    def health(self) -> dict[str, Any]:
        """The library's health contract (see the common keys in DESIGN.md)."""
        breaker_state = self.breaker.state
        return {
            "system": self.system,
            "client": self.name,
            "state": self.state.value,
            "connected": self.state is ConnectionState.CONNECTED,
            "address": self.address,
            "last_error": self.last_error,
            "consecutive_failures": self.consecutive_failures,
            "circuit_breaker": breaker_state.value,
            "circuit_breaker_open": breaker_state.value == "open",
            "reconnect_attempts": self.reconnect_attempts,
            "required": self.required,
            **self._extra_health(),
        }

    def _extra_health(self) -> dict[str, Any]:
        return {}

    def step(self, order: Order) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._move(ConnectionState.CLOSING)
        self._move(ConnectionState.CLOSED)

    def __enter__(self) -> Dependency:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _GuardedDependency(Dependency):
    """Request-driven (SQL, Redis): every call runs through one cached Guard; the connection
    state follows the calls' outcomes."""

    def __init__(self, *args: Any, policy: RetryPolicy, operation: str,
                 clock: InterruptibleClock | None = None, **kwargs: Any) -> None:
        super().__init__(*args, operations=(operation,), **kwargs)
        policy = policy.replace(on_retry=(self._on_retry,))
        if clock is not None:
            policy = policy.replace(clock=clock)
        self._guard = Guard(policy, breaker=self.breaker, instrumentation=self.telemetry,
                            system=self.system, client=self.name, operation=operation,
                            span_name=f"{operation} {self.system}")

    def _on_retry(self, event: ev.RetryScheduled) -> None:
        self._mark_down(event.error, event.delay)

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            result = self._guard.call(fn, *args)
        except CircuitOpenError:
            raise
        except Exception as error:
            self._mark_down(error)
            raise
        self._mark_up()
        return result


class DemoDatabase(_GuardedDependency):
    """Stands in for ``ResilientDatabase(url, name=...)``: inserts each order in one table."""

    def __init__(self, url: str, *, name: str = "orders-db", table: str, settings: Settings,
                 telemetry: Telemetry, breaker_cooldown: float = 5.0,
                 clock: InterruptibleClock | None = None) -> None:
        from sqlalchemy import Column, Float, Integer, MetaData, String, Table, create_engine

        super().__init__(name, database_system(url), display_address(url), required=True,
                         telemetry=telemetry, breaker_cooldown=breaker_cooldown,
                         policy=settings.db_policy(classify_driver_error), operation="execute",
                         clock=clock)
        self._engine = create_engine(url, pool_pre_ping=True,
                                     connect_args=database_connect_args(url, 5.0))
        self._metadata = MetaData()
        self._table = Table(table, self._metadata,
                            Column("id", String(36), primary_key=True),
                            Column("customer", String(64), nullable=False),
                            Column("amount_cents", Integer, nullable=False),
                            Column("created_at", Float, nullable=False))
        self._table_ready = False

    def _insert(self, order: Order) -> None:
        from sqlalchemy.exc import IntegrityError

        with self._engine.begin() as connection:
            if not self._table_ready:
                self._metadata.create_all(connection)
            try:
                with connection.begin_nested():
                    connection.execute(self._table.insert().values(
                        id=order["id"], customer=order["customer"],
                        amount_cents=order["amount_cents"], created_at=order["created_at"]))
            except IntegrityError:
                pass  # a retry after a lost commit acknowledgement: the row is there already
        self._table_ready = True

    def step(self, order: Order) -> None:
        """Store the order (retried under DB_RETRY_*); raises when it could not be stored."""
        self._call(self._insert, order)

    def close(self) -> None:
        self._engine.dispose()
        super().close()


class DemoRedis(_GuardedDependency):
    """Stands in for ``ResilientRedis(url, name=...)``: caches each order for ten minutes."""

    def __init__(self, url: str, *, name: str = "orders-cache", key_prefix: str,
                 settings: Settings, telemetry: Telemetry, required: bool = False,
                 breaker_cooldown: float = 5.0, timeout: float = 1.0,
                 clock: InterruptibleClock | None = None) -> None:
        super().__init__(name, "redis", display_address(url), required=required,
                         telemetry=telemetry, breaker_cooldown=breaker_cooldown,
                         policy=settings.redis_policy(classify_driver_error), operation="set",
                         clock=clock)
        self._client = redis_client(url, timeout)
        self._key_prefix = key_prefix

    def step(self, order: Order) -> None:
        """Cache the order (retried under REDIS_RETRY_*); raises when Redis is unavailable."""
        self._call(self._client.set, f"{self._key_prefix}:order:{order['id']}",
                   json.dumps(order), 600)

    def close(self) -> None:
        self._client.close()
        super().close()
