"""What the publisher and the consumer share of the client shape: one broker connection each."""

from __future__ import annotations

from types import TracebackType
from typing import Final, Self

from instrumented_clients.rabbitmq.connection import RabbitConnection
from instrumented_clients.resilience.state import ConnectionState

__all__ = ["BrokerClient"]


class BrokerClient:
    """``system``, ``required``, ``state``, ``check()`` and the context manager of a client on a
    :class:`~instrumented_clients.rabbitmq.connection.RabbitConnection`."""

    system: Final = "rabbitmq"
    connection: RabbitConnection  # set by the client's constructor

    @property
    def required(self) -> bool:
        """Whether the service cannot work without the broker (``RABBITMQ_REQUIRED``)."""
        return self.connection.required

    @property
    def state(self) -> ConnectionState:
        return self.connection.state

    def check(self) -> bool:
        """One classified attempt: True when the connection is ready or the broker accepts a
        short-lived connection now; False with ``last_error`` set otherwise. Never raises."""
        return self.connection.probe()

    def close(self, timeout: float | None = None) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
