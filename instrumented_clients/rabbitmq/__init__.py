"""RabbitMQ clients on pika: a reconnecting I/O-thread connection and a confirmed publisher."""

from instrumented_clients.rabbitmq.aio_consumer import AsyncResilientConsumer
from instrumented_clients.rabbitmq.aio_publisher import AsyncResilientPublisher
from instrumented_clients.rabbitmq.blocking import ResilientConnection
from instrumented_clients.rabbitmq.connection import (
    ConnectionListener,
    RabbitConnection,
    default_reconnect_policy,
)
from instrumented_clients.rabbitmq.consumer import ResilientConsumer
from instrumented_clients.rabbitmq.errors import (
    BrokerUnavailableError,
    ChannelClosedError,
    ConnectionLostError,
    MessageDroppedError,
    NotConnectedError,
    PublisherClosedError,
    PublishError,
    PublishNackedError,
    PublishTimeoutError,
    RabbitMQError,
    UnroutableError,
    classify,
    is_transient_rmq_error,
)
from instrumented_clients.rabbitmq.incoming import IncomingMessage, RejectMessage
from instrumented_clients.rabbitmq.message import OutgoingMessage, PublishResult
from instrumented_clients.rabbitmq.publisher import ResilientPublisher
from instrumented_clients.rabbitmq.spool import SpoolLockedError
from instrumented_clients.rabbitmq.topology import Binding, Exchange, Queue, Topology

__all__ = [
    "AsyncResilientConsumer",
    "AsyncResilientPublisher",
    "Binding",
    "BrokerUnavailableError",
    "ChannelClosedError",
    "ConnectionListener",
    "ConnectionLostError",
    "Exchange",
    "IncomingMessage",
    "MessageDroppedError",
    "NotConnectedError",
    "OutgoingMessage",
    "PublishError",
    "PublishNackedError",
    "PublishResult",
    "PublishTimeoutError",
    "PublisherClosedError",
    "Queue",
    "RabbitConnection",
    "RabbitMQError",
    "RejectMessage",
    "ResilientConnection",
    "ResilientConsumer",
    "ResilientPublisher",
    "SpoolLockedError",
    "Topology",
    "UnroutableError",
    "classify",
    "default_reconnect_policy",
    "is_transient_rmq_error",
]
