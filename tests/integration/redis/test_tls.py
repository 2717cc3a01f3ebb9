"""A certificate that does not verify is a configuration error: one attempt, named, fast.

The server is the private TLS ``redis-server`` of :mod:`.tls_helpers`; a ``FaultProxy`` in front
of it counts the TCP connections the client opens.
"""

from __future__ import annotations

import time

import pytest
from redis import exceptions as rx

from instrumented_clients import ConnectionState, ErrorCategory
from instrumented_clients.redis import ResilientRedis, classify
from instrumented_clients.testing import CapturedTelemetry, FaultProxy
from tests.integration.tls_helpers import PASSWORD, TLSRedis, tls_redis

from .helpers import HOST, retries

pytestmark = pytest.mark.integration
__all__ = ["tls_redis"]  # fixtures


def _url(proxy: FaultProxy) -> str:
    return f"rediss://:{PASSWORD}@{proxy.host}:{proxy.port}/0"


def test_a_certificate_that_does_not_verify_is_one_attempt_and_a_configuration_error(
    tls_redis: TLSRedis, telemetry: CapturedTelemetry
) -> None:
    wrong_name = tls_redis.names_another_host
    # Either the CA is not the server's, or it is and the certificate names another host.
    ca_file = tls_redis.ca_file if wrong_name else tls_redis.other_ca_file
    with FaultProxy(HOST, tls_redis.port) as proxy, ResilientRedis(
        _url(proxy), name="tls", telemetry=telemetry, ssl_ca_certs=str(ca_file)
    ) as client:
        started = time.monotonic()
        with pytest.raises(rx.ConnectionError) as caught:
            client.get("k")
        elapsed = time.monotonic() - started

        assert elapsed < 1.0
        assert proxy.accepted == 1  # one TCP connection: no retry, ours or redis-py's
        assert retries(telemetry, "tls", "get") == 0
        assert classify(caught.value) is ErrorCategory.CONFIGURATION
        message = str(caught.value)
        assert f"{proxy.host}:{proxy.port}" in message
        reason = "IP address mismatch" if wrong_name else "certificate verify failed"
        assert reason in message
        assert PASSWORD not in message
        assert client.state is ConnectionState.FAILED
        health = client.health()
        assert reason in (health["last_error"] or "")
        assert PASSWORD not in repr(health)


def test_the_same_server_with_the_right_ca_answers(
    tls_redis: TLSRedis, telemetry: CapturedTelemetry
) -> None:
    # The control: the failure above is the certificate's, not the server's or the proxy's.
    check_hostname = not tls_redis.names_another_host
    with FaultProxy(HOST, tls_redis.port) as proxy, ResilientRedis(
        _url(proxy), name="tls-ok", telemetry=telemetry, ssl_ca_certs=str(tls_redis.ca_file),
        ssl_check_hostname=check_hostname,
    ) as client:
        assert client.set("k", "v") is True
        assert client.get("k") == b"v"
        assert client.state is ConnectionState.CONNECTED
