"""A broker certificate that does not verify: one attempt, a configuration error naming the host
and the reason, without the password.

The TLS endpoint is the private ``redis-server`` of :mod:`tests.integration.tls_helpers`: pika's
handshake fails at certificate verification, before the first AMQP byte, exactly as it would in
front of a broker whose certificate the client does not trust (pika's default ``amqps://``
context trusts the system's CAs, not the one made for the test).
"""

from __future__ import annotations

import time

import pytest

from instrumented_clients import ConnectionState
from instrumented_clients.rabbitmq import BrokerUnavailableError, ResilientPublisher
from instrumented_clients.testing import CapturedTelemetry, FaultProxy, wait_until
from tests.integration.tls_helpers import TLSRedis, tls_redis

pytestmark = pytest.mark.integration
__all__ = ["tls_redis"]  # fixtures

SECRET = "tls-broker-secret"


def test_required_publisher_gives_up_at_once_on_a_certificate_that_does_not_verify(
    tls_redis: TLSRedis, telemetry: CapturedTelemetry
) -> None:
    with FaultProxy("127.0.0.1", tls_redis.port) as proxy:
        started = time.monotonic()
        with pytest.raises(BrokerUnavailableError) as caught:
            ResilientPublisher(f"amqps://guest:{SECRET}@{proxy.host}:{proxy.port}/",
                               name="tls", telemetry=telemetry, required=True)
        elapsed = time.monotonic() - started
        accepted = proxy.accepted

    message = str(caught.value)
    assert elapsed < 1.0
    assert accepted == 1
    assert f"{proxy.host}:{proxy.port}" in message
    assert "certificate verify failed" in message
    assert SECRET not in message
    assert telemetry.value("reconnect_attempts_total", system="rabbitmq", client="tls",
                           outcome="failure") == 1


def test_a_publisher_that_need_not_connect_shows_failed_with_the_reason(
    tls_redis: TLSRedis, telemetry: CapturedTelemetry
) -> None:
    with FaultProxy("127.0.0.1", tls_redis.port) as proxy:
        publisher = ResilientPublisher(f"amqps://guest:{SECRET}@{proxy.host}:{proxy.port}/",
                                       name="tls-optional", telemetry=telemetry)
        try:
            # Not required: construction returns; the first attempt fails for good at once.
            wait_until(lambda: publisher.connection.state is ConnectionState.FAILED, 5)
            assert proxy.accepted == 1
            health = repr(publisher.health())
            assert "certificate verify failed" in health
            assert SECRET not in health
        finally:
            publisher.close()
