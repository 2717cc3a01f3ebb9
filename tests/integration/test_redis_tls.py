"""A certificate that does not verify is a configuration error: one attempt, named, fast.

A private ``redis-server`` listens for TLS only, on a free loopback port, with certificates made
at test time; a ``FaultProxy`` in front of it counts the TCP connections the client opens.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import trustme
from redis import exceptions as rx

from instrumented_clients import ConnectionState, ErrorCategory
from instrumented_clients.redis import ResilientRedis, classify
from instrumented_clients.testing import CapturedTelemetry, FaultProxy, wait_until

from .redis_helpers import HOST, free_port, retries

pytestmark = pytest.mark.integration

PASSWORD = "tls-test-secret"


class TLSRedis:
    """The private server's port and the certificate files a client can be given."""

    def __init__(self, port: int, ca_file: Path, other_ca_file: Path) -> None:
        self.port = port
        self.ca_file = ca_file
        self.other_ca_file = other_ca_file


def _start_tls_redis(directory: Path, server_names: list[str]) -> tuple[subprocess.Popen[bytes],
                                                                          TLSRedis]:
    ca, other_ca = trustme.CA(), trustme.CA()
    certificate = ca.issue_cert(*server_names)
    files = {name: directory / name for name in ("server.pem", "server.key", "ca.pem",
                                                 "other-ca.pem")}
    certificate.cert_chain_pems[0].write_to_path(str(files["server.pem"]))
    certificate.private_key_pem.write_to_path(str(files["server.key"]))
    ca.cert_pem.write_to_path(str(files["ca.pem"]))
    other_ca.cert_pem.write_to_path(str(files["other-ca.pem"]))
    port = free_port()
    server = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", "0", "--bind", HOST,
         "--tls-port", str(port), "--tls-cert-file", str(files["server.pem"]),
         "--tls-key-file", str(files["server.key"]), "--tls-ca-cert-file", str(files["ca.pem"]),
         "--tls-auth-clients", "no", "--requirepass", PASSWORD, "--save", "",
         "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return server, TLSRedis(port, files["ca.pem"], files["other-ca.pem"])


@pytest.fixture(params=[["127.0.0.1"], ["redis.invalid"]], ids=["ip-name", "other-name"])
def tls_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TLSRedis]:
    server, tls = _start_tls_redis(tmp_path, request.param)
    try:
        def answers() -> bool:
            client = redis.Redis(host=HOST, port=tls.port, password=PASSWORD, ssl=True,
                                 ssl_ca_certs=str(tls.ca_file), ssl_check_hostname=False)
            try:
                return bool(client.ping())
            except rx.ConnectionError:
                return False
            finally:
                client.close()

        wait_until(lambda: server.poll() is not None or answers(), timeout=15)
        assert server.poll() is None, "redis-server with TLS did not start"
        yield tls
    finally:
        server.terminate()
        server.wait(10)


def _url(proxy: FaultProxy) -> str:
    return f"rediss://:{PASSWORD}@{proxy.host}:{proxy.port}/0"


def test_a_certificate_that_does_not_verify_is_one_attempt_and_a_configuration_error(
    tls_redis: TLSRedis, telemetry: CapturedTelemetry, request: pytest.FixtureRequest
) -> None:
    wrong_name = request.node.callspec.id == "other-name"
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
    tls_redis: TLSRedis, telemetry: CapturedTelemetry, request: pytest.FixtureRequest
) -> None:
    # The control: the failure above is the certificate's, not the server's or the proxy's.
    check_hostname = request.node.callspec.id != "other-name"
    with FaultProxy(HOST, tls_redis.port) as proxy, ResilientRedis(
        _url(proxy), name="tls-ok", telemetry=telemetry, ssl_ca_certs=str(tls_redis.ca_file),
        ssl_check_hostname=check_hostname,
    ) as client:
        assert client.set("k", "v") is True
        assert client.get("k") == b"v"
        assert client.state is ConnectionState.CONNECTED
