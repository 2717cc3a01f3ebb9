"""A private TLS endpoint for the certificate-verification tests: a ``redis-server`` that
listens for TLS only, on a free loopback port, with certificates made at test time (trustme).

A client given the wrong CA, or a certificate naming another host, fails in the TLS handshake,
before its own protocol starts: pika meets the same failure here as in front of a broker.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import trustme
from redis import exceptions as rx

from instrumented_clients.testing import wait_until
from tests.integration.redis.helpers import HOST, free_port

PASSWORD = "tls-test-secret"
CERTIFICATE_NAMES = {"ip-name": ["127.0.0.1"], "other-name": ["redis.invalid"]}
"""Which names the server's certificate carries: the address clients dial, or another host."""


class TLSRedis:
    """The private server's port and the certificate files a client can be given."""

    def __init__(self, port: int, ca_file: Path, other_ca_file: Path,
                 names_another_host: bool) -> None:
        self.port = port
        self.ca_file = ca_file  # the CA that signed the server's certificate
        self.other_ca_file = other_ca_file
        self.names_another_host = names_another_host  # not the 127.0.0.1 clients dial


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
    return server, TLSRedis(port, files["ca.pem"], files["other-ca.pem"],
                            HOST not in server_names)


@pytest.fixture(params=list(CERTIFICATE_NAMES))
def tls_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TLSRedis]:
    """The server, once with a certificate for 127.0.0.1 and once for another host."""
    server, tls = _start_tls_redis(tmp_path, CERTIFICATE_NAMES[request.param])
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
