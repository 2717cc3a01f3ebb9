"""The demo's four clients — the library's own — and the workload's thin step per dependency.

``ResilientDatabase`` (required), ``ResilientRedis`` (optional), ``ResilientPublisher`` and
``ResilientConsumer`` (required per ``RABBITMQ_REQUIRED``), all on one :class:`Telemetry`.
Retries, breakers, reconnects, buffering and error classification are the clients'; this module
only chooses their settings and says what one order means to each of them.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from instrumented_clients.demo.settings import Settings
from instrumented_clients.demo.workload import InterruptibleClock
from instrumented_clients.telemetry import Telemetry

if TYPE_CHECKING:
    from instrumented_clients.db import ResilientDatabase
    from instrumented_clients.rabbitmq import ResilientPublisher
    from instrumented_clients.rabbitmq.consumer import ResilientConsumer
    from instrumented_clients.rabbitmq.topology import Topology
    from instrumented_clients.redis import ResilientRedis

__all__ = ["DemoClients", "build_clients", "demo_topology"]

Order = dict[str, Any]
EVENT_TYPE = "order.created"
_CACHE_TTL = 600


def demo_topology(prefix: str) -> Topology:
    """A topic exchange ``prefix``, a queue ``prefix.orders`` bound with ``order.created``.

    The queue is durable but expires after ten idle minutes, and the exchange is auto-deleted:
    a demo leaves no litter on a shared broker.
    """
    from instrumented_clients.rabbitmq.topology import Binding, Exchange, Queue, Topology

    queue = f"{prefix}.orders"
    return Topology(exchanges=(Exchange(prefix, "topic", durable=True, auto_delete=True),),
                    queues=(Queue(queue, durable=True, arguments={"x-expires": 600_000}),),
                    bindings=(Binding(queue, prefix, EVENT_TYPE),))


@dataclass
class DemoClients:
    """The clients, plus what the workload calls on each."""

    database: ResilientDatabase
    cache: ResilientRedis
    publisher: ResilientPublisher
    consumer: ResilientConsumer
    table: Any
    table_ready: bool = False

    def store(self, order: Order) -> None:
        """Insert the order in one transaction (retried by the client). Idempotent: a retry
        after a lost COMMIT acknowledgement finds the row and leaves it."""
        self.database.transaction(lambda connection: self._insert(connection, order),
                                  idempotent=True)
        self.table_ready = True

    def _insert(self, connection: Any, order: Order) -> None:
        from sqlalchemy.exc import IntegrityError

        if not self.table_ready:  # CREATE TABLE IF NOT EXISTS, in the first transaction
            self.table.metadata.create_all(connection)
        try:
            with connection.begin_nested():
                connection.execute(self.table.insert().values(
                    id=order["id"], customer=order["customer"],
                    amount_cents=order["amount_cents"], created_at=order["created_at"]))
        except IntegrityError:
            pass  # the row is there already

    def cache_order(self, order: Order) -> None:
        """``SET`` the order for ten minutes."""
        self.cache.set(f"{self.table.name}:order:{order['id']}", json.dumps(order), ex=_CACHE_TTL)

    def publish(self, order: Order) -> None:
        """``publish_event("order.created", order)``: returns at once; buffered while the broker
        is away."""
        self.publisher.publish_event(EVENT_TYPE, order)

    def all(self) -> tuple[Any, ...]:
        return (self.database, self.cache, self.publisher, self.consumer)


def build_clients(settings: Settings, urls: dict[str, Any], *, prefix: str, telemetry: Telemetry,
                  handler: Any, breaker_cooldown: float, stopping: threading.Event,
                  heartbeat: float | None = None) -> DemoClients:
    """Build the four clients. No constructor waits for the network unless
    ``RABBITMQ_REQUIRED=true`` (then the publisher waits for the broker and raises
    ``BrokerUnavailableError`` when the reconnect policy is spent).

    Args:
        settings: the environment, already validated.
        urls: ``database``, ``redis``, ``rabbitmq`` (a list), possibly routed through proxies.
        prefix: name prefix of the table, keys, exchange and queue.
        telemetry: shared by every client.
        handler: the consumer's handler (the consumer is not started: call ``start()``).
        breaker_cooldown: the breakers' recovery time (short, so that recovery is visible).
        stopping: set at shutdown; every retry wait ends at once then.
        heartbeat: AMQP heartbeat override (chaos: a blackhole is noticed in seconds).
    """
    from sqlalchemy import Column, Float, Integer, MetaData, String, Table

    from instrumented_clients.db import ResilientDatabase
    from instrumented_clients.rabbitmq import ResilientPublisher
    from instrumented_clients.rabbitmq.consumer import ResilientConsumer
    from instrumented_clients.redis import ResilientRedis

    clock = InterruptibleClock(stopping)
    db_policy = settings.db_policy().replace(clock=clock)
    database = ResilientDatabase(
        urls["database"], name="orders-db", policy=db_policy, telemetry=telemetry,
        recovery_timeout=breaker_cooldown, validate_idle_after=settings.db_validate_idle_after)
    table = Table(f"{prefix}_orders", MetaData(),
                  Column("id", String(36), primary_key=True),
                  Column("customer", String(64), nullable=False),
                  Column("amount_cents", Integer, nullable=False),
                  Column("created_at", Float, nullable=False))
    cache = ResilientRedis(
        urls["redis"], name="orders-cache", policy=settings.redis_policy().replace(clock=clock),
        clock=clock, telemetry=telemetry, recovery_timeout=breaker_cooldown,
        # SET of a fixed value is safe to apply twice: retried even after it was sent.
        retry_writes=True, socket_timeout=1.0, socket_connect_timeout=1.0)
    topology = demo_topology(prefix)
    amqp: dict[str, Any] = {
        "telemetry": telemetry, "topology": topology,
        "required": settings.rabbitmq_required,
        "heartbeat": settings.rabbitmq_heartbeat if heartbeat is None else heartbeat,
        "connect_timeout": settings.rabbitmq_connect_timeout,
    }
    consumer = None
    publisher = None
    try:
        publisher = ResilientPublisher(
            urls["rabbitmq"], name="order-events", event_exchange=prefix,
            max_pending_events=settings.rabbitmq_max_pending_events,
            reconnect_policy=settings.rabbitmq_reconnect_policy(),
            recovery_timeout=breaker_cooldown, **amqp)
        consumer = ResilientConsumer(
            urls["rabbitmq"], queue=topology.queues[0].name, handler=handler,
            name="order-consumer", prefetch=settings.rabbitmq_prefetch,
            reconnect_policy=settings.rabbitmq_reconnect_policy(), auto_start=False,
            recovery_timeout=breaker_cooldown, **amqp)
    except BaseException:
        for client in (publisher, cache, database):
            if client is not None:
                client.close()
        raise
    return DemoClients(database, cache, publisher, consumer, table)

