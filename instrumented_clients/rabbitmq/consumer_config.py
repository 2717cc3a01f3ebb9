"""The consumer's life cycle and observation: ``from_env``, ``health``, ``close``, ``wait``."""

from __future__ import annotations

import dataclasses
import threading
import warnings
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from instrumented_clients.client import HealthReport
from instrumented_clients.rabbitmq.broker_client import BrokerClient
from instrumented_clients.rabbitmq.settings import connection_settings_from_env
from instrumented_clients.resilience.breaker import BreakerState
from instrumented_clients.settings import RABBITMQ_PREFETCH

if TYPE_CHECKING:
    from instrumented_clients.rabbitmq.connection import RabbitConnection
    from instrumented_clients.rabbitmq.incoming import IncomingMessage
    from instrumented_clients.rabbitmq.topology import Queue
    from instrumented_clients.resilience.breaker import CircuitBreaker

__all__ = ["ConsumerConfigMixin"]

C = TypeVar("C", bound="ConsumerConfigMixin")
SYSTEM = "rabbitmq"


class ConsumerConfigMixin(BrokerClient):
    """Life-cycle half of :class:`~instrumented_clients.rabbitmq.consumer.ResilientConsumer`."""

    if TYPE_CHECKING:
        name: str
        queue_name: str
        prefetch: int
        workers: int
        max_deliveries: int | None
        breaker: CircuitBreaker | None
        connection: RabbitConnection
        cancellations: int
        channel_closed_by_broker: int
        stale_settlements: int
        last_error: str | None
        queue_error: str | None
        _consuming: bool
        _in_flight: int
        _paused: bool
        _stopped: threading.Event

        def __init__(self, url: Any = ..., **kwargs: Any) -> None: ...
        def close(self, timeout: float | None = None) -> None: ...

    def stop(self, timeout: float | None = None) -> None:
        """Deprecated spelling of :meth:`close`."""
        warnings.warn("ResilientConsumer.stop() is deprecated: use close(timeout=...)",
                      DeprecationWarning, stacklevel=2)
        self.close(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until :meth:`close` finished (e.g. from a signal handler); True if it did."""
        return self._stopped.wait(timeout)

    def __enter__(self: C) -> C:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @classmethod
    def from_env(
        cls: type[C], queue: str | Queue, handler: Callable[[IncomingMessage], object],
        name: str = "consumer", environ: Mapping[str, str] | None = None, **overrides: Any,
    ) -> C:
        """Build a consumer from the ``RABBITMQ_*`` variables of the settings table
        (:mod:`instrumented_clients.settings`).

        ``RABBITMQ_URL`` (comma-separated), ``RABBITMQ_REQUIRED``, ``RABBITMQ_MAX_RETRIES``,
        ``RABBITMQ_RETRY_DELAY``, ``RABBITMQ_RETRY_MAX_DELAY``, ``RABBITMQ_HEARTBEAT``,
        ``RABBITMQ_CONNECT_TIMEOUT``, ``RABBITMQ_PREFETCH``. Keyword arguments win over the
        environment. A value that does not parse raises ``ConfigError`` naming the variable.
        """
        settings: dict[str, Any] = {
            **connection_settings_from_env(environ),
            "prefetch": RABBITMQ_PREFETCH.read(environ),
        }
        settings.update(overrides)
        return cls(queue=queue, handler=handler, name=name, **settings)

    # -- observation -------------------------------------------------------------------------------

    @property
    def consecutive_failures(self) -> int:
        """Failures in a row (handler runs and connection attempts) since the last success."""
        return self.connection.tracker.consecutive_failures


    @property
    def consuming(self) -> bool:
        """True while the broker has confirmed the consumer (``basic.consume-ok``)."""
        return self._consuming

    @property
    def in_flight(self) -> int:
        """Deliveries received whose handler has not finished yet."""
        return self._in_flight

    def health(self) -> HealthReport:
        """State for a health endpoint; never a password.

        Without a breaker (``breaker=False``), ``circuit_breaker`` reads ``closed``: nothing
        ever pauses. ``healthy`` is False while the connection is down, the breaker is open, or
        the broker refuses the queue (``queue_error``: missing, access refused, other arguments).
        """
        connection = self.connection
        breaker_open = self.breaker is not None and self.breaker.state is BreakerState.OPEN
        report = HealthReport.build(
            SYSTEM, self.name, connection.tracker, self.breaker, address=connection.address,
            connected=connection.connected, blocked=connection.blocked,
            connection_name=connection.connection_name,
            healthy=connection.connected and not breaker_open and self.queue_error is None,
            paused=self._paused,
            queue=self.queue_name, queue_error=self.queue_error, consuming=self._consuming,
            in_flight=self._in_flight,
            prefetch=self.prefetch, workers=self.workers, max_deliveries=self.max_deliveries,
            cancellations=self.cancellations,
            channel_closed_by_broker=self.channel_closed_by_broker,
            stale_settlements=self.stale_settlements,
        )
        if self.last_error:  # the broker refused the queue: that says more than the link
            report = dataclasses.replace(report, last_error=self.last_error)
        return report
