"""The publisher's life cycle: ``from_env``, ``health``, ``close``, spool recovery and fork."""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import pika

from instrumented_clients.client import HealthReport
from instrumented_clients.rabbitmq.broker_client import BrokerClient
from instrumented_clients.rabbitmq.errors import PublisherClosedError
from instrumented_clients.rabbitmq.message import OutgoingMessage
from instrumented_clients.rabbitmq.settings import connection_settings_from_env
from instrumented_clients.rabbitmq.tracing import extracted_origin
from instrumented_clients.resilience.state import ConnectionState
from instrumented_clients.settings import RABBITMQ_MAX_PENDING_EVENTS

if TYPE_CHECKING:
    import threading

    from instrumented_clients.rabbitmq.connection import RabbitConnection
    from instrumented_clients.rabbitmq.spool import SpooledMessages
    from instrumented_clients.resilience.breaker import CircuitBreaker
    from instrumented_clients.resilience.buffer import EventBuffer

__all__ = ["PublisherConfigMixin"]

_log = logging.getLogger(__name__)
P = TypeVar("P", bound="PublisherConfigMixin")



class PublisherConfigMixin(BrokerClient):
    """Life-cycle half of :class:`~instrumented_clients.rabbitmq.ResilientPublisher`."""

    if TYPE_CHECKING:
        name: str
        connection: RabbitConnection
        breaker: CircuitBreaker | None
        buffer: EventBuffer[OutgoingMessage]
        spool: SpooledMessages | None
        max_in_flight: int
        _inbox: deque[OutgoingMessage]
        _resend: deque[OutgoingMessage]
        _unconfirmed: OrderedDict[int, OutgoingMessage]
        _drained: threading.Event
        _accepting: bool
        _closed: bool
        _channel_ready: bool

        def __init__(self, url: Any = ..., **kwargs: Any) -> None: ...
        def _reset_state(self) -> None: ...
        def _pump(self) -> None: ...
        def _flush_spool(self) -> None: ...
        def _report_shutdown_drops(self, messages: list[OutgoingMessage]) -> None: ...

    @classmethod
    def from_env(
        cls: type[P], name: str = "publisher", environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> P:
        """Build a publisher from the ``RABBITMQ_*`` variables of the settings table
        (:mod:`instrumented_clients.settings`).

        ``RABBITMQ_URL`` (comma-separated), ``RABBITMQ_REQUIRED``, ``RABBITMQ_MAX_RETRIES``,
        ``RABBITMQ_RETRY_DELAY``, ``RABBITMQ_RETRY_MAX_DELAY``, ``RABBITMQ_MAX_PENDING_EVENTS``,
        ``RABBITMQ_HEARTBEAT``, ``RABBITMQ_CONNECT_TIMEOUT``. Keyword arguments win over the
        environment. A value that does not parse raises ``ConfigError`` naming the variable.
        """
        settings: dict[str, Any] = {
            **connection_settings_from_env(environ),
            "max_pending_events": RABBITMQ_MAX_PENDING_EVENTS.read(environ),
        }
        settings.update(overrides)
        return cls(name=name, **settings)

    # -- observation -----------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Connected, with the confirm-mode channel open: publishes go straight out."""
        return self.connection.connected and self._channel_ready

    @property
    def pending_events(self) -> int:
        """Messages accepted but not yet sent (inbox, buffer and re-sends)."""
        return len(self._inbox) + len(self.buffer) + len(self._resend)

    @property
    def in_flight(self) -> int:
        """Messages sent and not yet confirmed."""
        return len(self._unconfirmed)

    def health(self) -> HealthReport:
        """State for a health endpoint; never a password."""
        connection = self.connection
        return HealthReport.build(
            self.system, self.name, connection.tracker, self.breaker,
            address=connection.address, connected=connection.connected,
            blocked=connection.blocked, connection_name=connection.connection_name,
            pending_events=self.pending_events, in_flight=self.in_flight,
            buffer_capacity=self.buffer.capacity, dropped_events=self.buffer.stats().dropped,
            spool=self.spool.path if self.spool is not None else None,
        )

    # -- closing ---------------------------------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting, flush the buffer, wait for confirms (up to ``timeout`` seconds,
        default 10), then close. Idempotent.

        What is still undelivered is dropped with reason ``shutdown`` (counted, logged, given to
        ``on_drop``, its futures failed) — or, with a spool, kept there for the next start.
        """
        if self._closed:
            return
        if timeout is None:
            timeout = 10.0
        self._accepting = False
        connection = self.connection
        if timeout > 0 and connection.state in (ConnectionState.CONNECTED,
                                                 ConnectionState.CONNECTING,
                                                 ConnectionState.DISCONNECTED):
            connection.call_soon(self._pump)
            if not connection.in_io_thread():
                self._drained.wait(timeout)
        connection.call_soon(self._shutdown)
        connection.close(max(timeout, 1.0))
        if connection._thread is None or not connection._thread.is_alive():
            self._shutdown()  # the loop never ran (or is gone): settle here
        if self.spool is not None:
            self.spool.close()

    def _shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        leftovers = [*self._resend, *self._unconfirmed.values(), *self._inbox]
        self._resend.clear()
        self._unconfirmed.clear()
        self._inbox.clear()
        if self.spool is not None:
            leftovers.extend(self.buffer.take())
            for message in leftovers:  # kept in the spool for the next start
                future = message.future
                if future is not None and not future.done():
                    future.set_exception(PublisherClosedError(
                        f"publisher {self.name!r} closed; message kept in the spool"))
                message.spool_id = None
            self._flush_spool()
            return
        self._report_shutdown_drops(leftovers)
        self.buffer.drain_for_shutdown()

    def __enter__(self: P) -> P:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- spool and fork ---------------------------------------------------------------------------

    def _recover_spool(self) -> None:
        """Queue what a previous process left in the spool: sent before anything new."""
        if self.spool is None:
            return
        records = self.spool.load()
        for record in records:
            message = OutgoingMessage(record.exchange, record.routing_key, record.body,
                                      pika.BasicProperties(**record.properties),
                                      record.mandatory, None, 0.0)
            message.spool_id = record.spool_id
            message.origin = extracted_origin(message.properties.headers)
            message.recorded = True  # counted by the process that accepted it
            self._resend.append(message)
        if records:
            self._drained.clear()
            _log.info("rabbitmq %s: %d message(s) recovered from the spool %s", self.name,
                      len(records), self.spool.path)

    def on_fork_child(self) -> None:
        """In a forked child: a fresh, empty publisher state; the parent keeps its buffer,
        confirms and spool (the spool has one owner: the child runs without it)."""
        from instrumented_clients.rabbitmq.connection import _ABANDONED_AFTER_FORK

        if self.spool is not None:
            _ABANDONED_AFTER_FORK.append(self.spool)
            self.spool.abandon_after_fork()
            self.spool = None
        self._reset_state()
