"""``ResilientConnection``: your own blocking connection factory, made resilient.

For code built on ``pika.BlockingConnection`` (or anything with ``is_open``, ``channel()`` and
``close()``) that wants the in-house helpers' behaviour with an import change::

    from instrumented_clients.compat import ResilientConnection

    connection = ResilientConnection(lambda: pika.BlockingConnection(params), name="worker")
    connection.execute(lambda channel: channel.basic_publish("", "jobs", b"..."))

Before each use the connection is health-checked (open, and for pika's blocking connection
``process_data_events(0)`` services heartbeats and surfaces a dead peer); a failure invalidates
it, so the retry starts from a fresh connection. Retries follow the blocking publish
policy (3 attempts, 0.5 s doubling, 5 s cap) unless another is given. A blocking connection
is not thread-safe: use one ``ResilientConnection`` per thread (calls on one instance are
serialised by a lock).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from instrumented_clients.rabbitmq.errors import (
    RabbitMQError,
    classify,
    describe_error,
    is_transient_rmq_error,
)
from instrumented_clients.resilience.breaker import CircuitBreaker
from instrumented_clients.resilience.retry import Guard, RetryPolicy
from instrumented_clients.resilience.state import ConnectionState, ConnectionStateMachine
from instrumented_clients.telemetry.core import Telemetry, get_default_telemetry

__all__ = ["ResilientConnection"]

_log = logging.getLogger(__name__)
T = TypeVar("T")
SYSTEM = "rabbitmq"


def _default_policy() -> RetryPolicy:
    return RetryPolicy(max_attempts=3, initial_delay=0.5, max_delay=5.0, classifier=classify)


def _default_health_check(connection: Any) -> bool:
    if not getattr(connection, "is_open", False):
        return False
    process = getattr(connection, "process_data_events", None)
    if process is not None:
        process(time_limit=0)  # services heartbeats; reads a reset or a close from the broker
    return bool(getattr(connection, "is_open", False))  # again: the poll may have closed it


def _address_of(connection: Any) -> str | None:
    """``host:port`` of a pika connection (never credentials), or None for other kinds."""
    params = getattr(getattr(connection, "_impl", connection), "params", None)
    host, port = getattr(params, "host", None), getattr(params, "port", None)
    return f"{host}:{port}" if host else None


class ResilientConnection:
    """A connection from ``factory``, checked before use, invalidated on failure, retried.

    Args:
        factory: returns a new open connection (e.g. ``pika.BlockingConnection``).
        name: the ``client`` label.
        telemetry: metrics, spans and logs (default: the package's).
        policy: retry policy for connecting and for :meth:`execute` (default: 3 attempts, 0.5 s
            doubling, 5 s cap).
        breaker: optional circuit breaker around both.
        health_check: ``health_check(connection) -> bool``; may raise (counts as unhealthy).
    """

    def __init__(
        self,
        factory: Callable[[], Any],
        *,
        name: str = "rabbitmq",
        telemetry: Telemetry | None = None,
        policy: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        health_check: Callable[[Any], bool] = _default_health_check,
    ) -> None:
        if not callable(factory):
            raise TypeError(f"factory must be callable, got {type(factory).__name__}")
        self.name = name
        self.telemetry = telemetry or get_default_telemetry()
        self.telemetry.prepare(SYSTEM, name, ("connect", "publish"))
        self.policy = policy or _default_policy()
        self.breaker = breaker
        self._factory = factory
        self._health_check = health_check
        self._lock = threading.RLock()
        self._connection: Any = None
        self._channel: Any = None
        self.last_error: str | None = None
        self.reconnects = 0
        self.address: str | None = None
        self._had_connection = False
        self.machine = ConnectionStateMachine(SYSTEM, name, instrumentation=self.telemetry)
        self._connect_guard = Guard(self.policy, breaker=breaker, instrumentation=self.telemetry,
                                    system=SYSTEM, client=name, operation="connect",
                                    span_name="rabbitmq connect")
        self._execute_guard = Guard(self.policy, breaker=breaker,
                                    instrumentation=self.telemetry, system=SYSTEM, client=name,
                                    operation="publish",
                                    span_name="rabbitmq execute",
                                    span_attributes={"messaging.system": SYSTEM})

    def connection(self) -> Any:
        """A healthy connection, reconnecting (with retries) when needed."""
        with self._lock:
            return self._connect_guard.call(self._ensure_connection)

    def channel(self) -> Any:
        """A channel on a healthy connection (the same one while it stays open)."""
        with self._lock:
            return self._connect_guard.call(self._ensure_channel)

    def execute(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(channel)``; on a transient failure invalidate the connection and retry on a
        fresh one ("connection invalidation"). Permanent errors are raised at once.
        """
        with self._lock:
            result: T = self._execute_guard.call(self._attempt, fn)
            return result

    def _attempt(self, fn: Callable[[Any], T]) -> T:
        channel = self._ensure_channel()
        try:
            return fn(channel)
        except Exception as exc:
            if is_transient_rmq_error(exc):
                self.invalidate(exc)
            else:
                self._channel = None  # a permanent channel error closed it
            raise

    def _ensure_connection(self) -> Any:
        connection = self._connection
        if connection is not None:
            try:
                healthy = self._health_check(connection)
            except Exception as exc:
                healthy = False
                self.last_error = describe_error(exc)
            if healthy:
                return connection
            self.invalidate()
        if self.machine.state is ConnectionState.CLOSED:
            raise RabbitMQError(f"ResilientConnection {self.name!r} is closed")
        if self.machine.state is not ConnectionState.CONNECTING:
            self.machine.transition(ConnectionState.CONNECTING, "connecting")
        try:
            connection = self._factory()
        except Exception as exc:
            self.last_error = describe_error(exc)
            raise
        if self._had_connection:
            self.reconnects += 1
        self._had_connection = True
        self._connection = connection
        self.address = _address_of(connection)
        self.machine.transition(ConnectionState.CONNECTED, "connected")
        return connection

    def _ensure_channel(self) -> Any:
        connection = self._ensure_connection()
        channel = self._channel
        if channel is None or not getattr(channel, "is_open", True):
            channel = self._channel = connection.channel()
        return channel

    def invalidate(self, error: BaseException | None = None) -> None:
        """Forget the current connection (closing it quietly); the next use reconnects."""
        with self._lock:
            if error is not None:
                self.last_error = describe_error(error)
            connection, self._connection, self._channel = self._connection, None, None
            if connection is not None:
                with contextlib.suppress(Exception):
                    if getattr(connection, "is_open", False):
                        connection.close()
            if self.machine.state is ConnectionState.CONNECTED:
                self.machine.transition(ConnectionState.DISCONNECTED, "invalidated")

    def close(self) -> None:
        """Close the connection; the wrapper cannot be used afterwards."""
        with self._lock:
            self.invalidate()
            if self.machine.state is not ConnectionState.CLOSED:
                self.machine.transition(ConnectionState.CLOSED, "closed")

    def health(self) -> dict[str, Any]:
        breaker = self.breaker.state.value if self.breaker is not None else "closed"
        return {
            "system": SYSTEM,
            "client": self.name,
            "state": self.machine.state.value,
            "connected": self.machine.state is ConnectionState.CONNECTED,
            "address": self.address,
            "last_error": self.last_error,
            "consecutive_failures": self.breaker.consecutive_failures if self.breaker else 0,
            "circuit_breaker": breaker,
            "circuit_breaker_open": breaker == "open",
            "reconnect_attempts": self.reconnects,
        }

    def __enter__(self) -> ResilientConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
