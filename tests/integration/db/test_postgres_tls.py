"""A server certificate that does not verify (libpq, sslmode=verify-full) is one attempt and a
configuration error naming the host and the reason, against a private PostgreSQL with TLS."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from sqlalchemy import exc as sa_exc

from instrumented_clients import ErrorCategory
from instrumented_clients.db import ResilientDatabase, classify
from instrumented_clients.resilience import RetryPolicy
from instrumented_clients.testing import CapturedTelemetry, FakeClock, FaultProxy

from .conftest import PgTLSServer

pytestmark = pytest.mark.integration

MakeDb = Callable[..., ResilientDatabase]


def _url(proxy: FaultProxy, ca_file: object) -> str:
    # gssencmode=disable: libpq would otherwise try GSS encryption first where it is built in.
    return (f"postgresql://postgres@{proxy.host}:{proxy.port}/postgres?sslmode=verify-full"
            f"&sslrootcert={ca_file}&gssencmode=disable")


def test_a_certificate_from_another_ca_fails_once_as_a_configuration_error(
    make_db: MakeDb, pg_tls_server: PgTLSServer, telemetry: CapturedTelemetry
) -> None:
    clock = FakeClock()
    with FaultProxy("127.0.0.1", pg_tls_server.port) as proxy:
        db = make_db(_url(proxy, pg_tls_server.other_ca_file), name="pg-tls",
                     policy=RetryPolicy(max_attempts=4, clock=clock))
        started = time.monotonic()
        with pytest.raises(sa_exc.OperationalError) as raised:
            db.connect_with_retry(required=True)
        elapsed = time.monotonic() - started
        accepted = proxy.accepted

    assert clock.sleeps == []
    assert accepted == 1
    assert elapsed < 1.0
    assert classify(raised.value) is ErrorCategory.CONFIGURATION
    message = str(raised.value)
    assert "127.0.0.1" in message
    assert "certificate verify failed" in message
    assert db.health()["state"] == "failed"


def test_the_same_server_with_its_own_ca_answers(
    make_db: MakeDb, pg_tls_server: PgTLSServer
) -> None:
    # The control: the failure above is the certificate's, not the server's or the proxy's.
    with FaultProxy("127.0.0.1", pg_tls_server.port) as proxy:
        db = make_db(_url(proxy, pg_tls_server.ca_file), name="pg-tls-ok")
        assert db.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").scalar()
        db.close()
