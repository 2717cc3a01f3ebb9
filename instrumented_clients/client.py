"""The shape every client keeps: the :class:`ResilientClient` protocol, its :class:`HealthReport`.

``ResilientPublisher``, ``ResilientConsumer``, ``ResilientRedis`` and ``ResilientDatabase`` all
implement :class:`ResilientClient`, with one meaning per name:

- ``name``: the ``client`` label, a low-cardinality logical name; ``system``: the ``system``
  label (``rabbitmq``, ``redis``, ``postgresql``, ``mysql``, ``mariadb``, ``sqlite``).
- ``required``: whether the service cannot work without this dependency; a
  :class:`~instrumented_clients.health.HealthRegistry` registers the client as required (or
  optional) by it.
- ``state``: the :class:`~instrumented_clients.resilience.ConnectionState`.
- ``from_env()``: a client configured from the environment.
- ``check()``: whether the dependency answers now. One attempt, without retry, where the client
  connects on demand (Redis ``PING``, SQL ``SELECT 1``); the RabbitMQ clients hold one connection
  whose I/O thread makes the attempts, and answer whether it is ready. Never raises: a failure
  is classified and recorded (``state``, ``last_error``) and ``check()`` returns False.
- ``health()``: a :class:`HealthReport`.
- ``close(timeout=None)``: release the client's connections, waiting at most ``timeout``
  seconds where there is something to wait for (the client's own default when None).
  Idempotent.

``breaker=`` means the same on every client: None (the default) builds the client's default
breaker (``failure_threshold`` consecutive failures open it for ``recovery_timeout`` seconds,
counting the failures the client's classifier says show the dependency down); ``False``: no
breaker; a :class:`~instrumented_clients.resilience.CircuitBreaker`: that one.

``retry=`` likewise, for the retry of a client's calls (a Redis command, a SQL statement or
transaction, a blocking publish): None, the client's default policy; ``False``, one attempt
only; a :class:`~instrumented_clients.resilience.RetryPolicy`, that one. (A consumer's calls
are its handler's runs, which the broker redelivers: ``max_deliveries`` bounds them.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeAlias, runtime_checkable

from instrumented_clients.resilience.breaker import BreakerState, CircuitBreaker
from instrumented_clients.resilience.retry import RetryPolicy
from instrumented_clients.resilience.state import ConnectionState
from instrumented_clients.resilience.tracker import ConnectionTracker

__all__ = ["BreakerOption", "HealthReport", "ResilientClient", "resolve_breaker",
           "resolve_retry"]

BreakerOption: TypeAlias = "CircuitBreaker | Literal[False] | None"
"""What ``breaker=`` accepts: None for the default breaker, False for none, or a breaker."""


def resolve_breaker(breaker: CircuitBreaker | Literal[False] | None,
                    make_default: Callable[[], CircuitBreaker]) -> CircuitBreaker | None:
    """The breaker a client uses for its ``breaker=`` argument (see the module docstring).

    Raises:
        TypeError: ``breaker`` is none of None, False or a ``CircuitBreaker``.
    """
    if breaker is None:
        return make_default()
    if breaker is False:
        return None
    if not isinstance(breaker, CircuitBreaker):
        raise TypeError(f"breaker must be None (the default breaker), False (no breaker) or a "
                        f"CircuitBreaker, got {breaker!r}")
    return breaker


def resolve_retry(retry: RetryPolicy | Literal[False] | None, policy: RetryPolicy | None,
                  make_default: Callable[[], RetryPolicy]) -> RetryPolicy:
    """The retry policy of a client's calls for its ``retry=`` argument, or for the older
    ``policy=`` spelling of it (see the module docstring).

    Raises:
        TypeError: both are given, or ``retry`` is none of None, False or a ``RetryPolicy``.
    """
    if retry is not None and policy is not None:
        raise TypeError("pass retry= or its older spelling policy=, not both")
    if retry is None:
        return policy if policy is not None else make_default()
    if retry is False:
        return make_default().replace(max_attempts=1)
    if not isinstance(retry, RetryPolicy):
        raise TypeError(f"retry must be None (the default policy), False (one attempt) or a "
                        f"RetryPolicy, got {retry!r}")
    return retry


@dataclass(frozen=True, slots=True, eq=False)
class HealthReport(Mapping[str, Any]):
    """One client's health, the same fields for every client; ``details`` adds its own.

    A read-only mapping of :meth:`to_dict`, so ``report["state"]`` works as on a dict. Never
    carries a credential.
    """

    system: str
    client: str
    state: str
    connected: bool
    address: str | None
    last_error: str | None
    consecutive_failures: int
    circuit_breaker: str
    reconnect_attempts: int
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, system: str, client: str, tracker: ConnectionTracker,
              breaker: CircuitBreaker | None, *, address: str | None,
              connected: bool | None = None, **details: Any) -> HealthReport:
        """The report of a client that keeps its connection in ``tracker``."""
        state = tracker.state
        return cls(
            system=system, client=client, state=state.value,
            connected=state is ConnectionState.CONNECTED if connected is None else connected,
            address=address, last_error=tracker.last_error,
            consecutive_failures=tracker.consecutive_failures,
            circuit_breaker=(breaker.state if breaker is not None else BreakerState.CLOSED).value,
            reconnect_attempts=tracker.reconnect_attempts, details=details,
        )

    @property
    def circuit_breaker_open(self) -> bool:
        return self.circuit_breaker == BreakerState.OPEN.value

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the common fields, then the client's own."""
        return {
            "system": self.system,
            "client": self.client,
            "state": self.state,
            "connected": self.connected,
            "address": self.address,
            "last_error": self.last_error,
            "consecutive_failures": self.consecutive_failures,
            "circuit_breaker": self.circuit_breaker,
            "circuit_breaker_open": self.circuit_breaker_open,
            "reconnect_attempts": self.reconnect_attempts,
            **self.details,
        }

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


@runtime_checkable
class ResilientClient(Protocol):
    """What every client of this package is (see the module docstring for each name)."""

    name: str

    @property
    def system(self) -> str: ...

    @property
    def required(self) -> bool: ...

    @property
    def state(self) -> ConnectionState: ...

    @classmethod
    def from_env(cls, *args: Any, **kwargs: Any) -> Any: ...

    def check(self) -> bool: ...

    def health(self) -> HealthReport: ...

    def close(self, timeout: float | None = None) -> None: ...
