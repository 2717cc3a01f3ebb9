"""Start-up with and without the database, the breaker, the compatibility names; real drivers."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pymysql
import pytest

from instrumented_clients.db import (
    DatabaseConnectionRetry,
    DatabaseUnavailableError,
    ResilientDatabase,
    is_transient_db_error,
    with_db_retry,
)
from instrumented_clients.resilience import CircuitBreaker, CircuitOpenError
from instrumented_clients.resilience.events import ReconnectFinished
from instrumented_clients.testing import CapturedTelemetry, FaultProxy, wait_until

from .conftest import PG_URL, fast_policy

pytestmark = pytest.mark.integration

MakeDb = Callable[..., ResilientDatabase]


def test_required_start_fails_with_a_clear_error_when_attempts_are_spent(
    make_db: MakeDb, telemetry: CapturedTelemetry
) -> None:
    with FaultProxy("127.0.0.1", 5432) as proxy:
        proxy.refuse()
        db = make_db(proxy.url("postgresql://postgres:pw-secret@127.0.0.1:5432/test"),
                     name="pg-down")
        with pytest.raises(DatabaseUnavailableError) as raised:
            db.connect_with_retry(required=True)
    message = str(raised.value)
    assert "after 4 attempt(s)" in message
    assert "pg-down" in message
    assert "postgresql" in message
    assert "pw-secret" not in message
    assert db.health()["state"] == "failed"
    assert telemetry.value("retries_total", system="postgresql", client="pg-down",
                           operation="connect", error_type="connection") == 3
    assert telemetry.value("reconnect_attempts_total", system="postgresql", client="pg-down",
                           outcome="failure") == 4


def test_optional_start_runs_degraded_and_connects_in_the_background(
    make_db: MakeDb, telemetry: CapturedTelemetry
) -> None:
    with FaultProxy("127.0.0.1", 5432) as proxy:
        proxy.refuse()
        db = make_db(proxy.url(PG_URL), name="pg-later",
                     connect_policy=fast_policy(max_attempts=2))
        began = time.monotonic()
        assert db.connect_with_retry(required=False) is False
        assert db.health()["state"] == "failed"
        assert db.health()["connected"] is False
        refused_until = time.monotonic()
        proxy.pass_through()
        wait_until(lambda: db.connected, 20)
        assert db.execute("SELECT 1").scalar() == 1
    assert telemetry.value("connection_state", system="postgresql", client="pg-later",
                           state="connected") == 1
    assert telemetry.value("reconnect_attempts_total", system="postgresql", client="pg-later",
                           outcome="success") == 1
    assert telemetry.value("reconnect_duration_seconds_count", system="postgresql",
                           client="pg-later") == 1
    (finished,) = telemetry.events_of(ReconnectFinished)
    assert finished.attempts > 2  # counted on from the two start-up attempts
    assert finished.duration >= refused_until - began  # the whole outage, start-up included


def test_operations_after_losing_the_server_are_retried_and_the_state_recovers(
    make_db: MakeDb, telemetry: CapturedTelemetry
) -> None:
    with FaultProxy("127.0.0.1", 5432) as proxy:
        db = make_db(proxy.url(PG_URL), name="pg-cut")
        assert db.connect_with_retry()
        proxy.cut()  # the pooled connection is dead; pre-ping replaces it on checkout
        assert db.execute("SELECT 1").scalar() == 1
        proxy.refuse()
        with pytest.raises(Exception) as raised:  # noqa: PT011 - asserted just below
            db.execute("SELECT 1")
        assert db.health()["state"] == "disconnected"
        assert "connection" in (db.health()["last_error"] or "").lower()
        proxy.pass_through()
        assert db.execute("SELECT 2").scalar() == 2
    assert raised.type.__name__ == "OperationalError"
    assert db.health()["state"] == "connected"
    assert telemetry.value("retries_exhausted_total", system="postgresql", client="pg-cut",
                           operation="execute") == 1
    assert telemetry.value("reconnect_duration_seconds_count", system="postgresql",
                           client="pg-cut") == 1


def test_the_breaker_opens_and_fails_fast_then_closes_again(
    make_db: MakeDb, telemetry: CapturedTelemetry
) -> None:
    # A breaker made by the caller must be told which errors count: the database's classifier.
    breaker = CircuitBreaker(failure_threshold=3, recovery_timeout=0.2, name="pg-breaker",
                             system="postgresql", instrumentation=telemetry,
                             failure_on=is_transient_db_error)
    with FaultProxy("127.0.0.1", 5432) as proxy:
        db = make_db(proxy.url(PG_URL), name="pg-breaker", breaker=breaker,
                     policy=fast_policy(max_attempts=3))
        proxy.refuse()
        with pytest.raises(Exception):  # noqa: B017, PT011 - the driver's connection error
            db.execute("SELECT 1")
        with pytest.raises(CircuitOpenError):
            db.execute("SELECT 1")
        assert db.health()["circuit_breaker_open"] is True
        proxy.pass_through()
        wait_until(lambda: breaker.remaining() == 0, 5)
        assert db.execute("SELECT 1").scalar() == 1
    assert db.health()["circuit_breaker"] == "closed"
    assert (telemetry.value("circuit_breaker_rejections_total", system="postgresql",
                            client="pg-breaker") or 0) >= 1
    assert telemetry.value("operation_duration_seconds_count",
                           system="postgresql", client="pg-breaker",
                           operation="execute", outcome="rejected") == 1


def test_compat_names_with_raw_drivers(telemetry: CapturedTelemetry) -> None:
    retry = DatabaseConnectionRetry(max_retries=3, base_delay=0.01, client="legacy-raw",
                                    telemetry=telemetry)
    connection = retry.connect_with_retry(
        lambda: pymysql.connect(host="127.0.0.1", user="root", database="test"), "mysql-main")
    try:
        def fetch() -> Any:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 40 + 2")
                return cursor.fetchone()

        assert retry.execute_with_retry(fetch, "fetch answer") == (42,)
    finally:
        connection.close()
    assert telemetry.value("operation_duration_seconds_count", system="mysql", client="legacy-raw",
                           operation="connect", outcome="success") == 1

    attempts: list[int] = []

    @with_db_retry(max_retries=2, base_delay=0.01, system="postgresql", telemetry=telemetry)
    def read_answer() -> Any:
        attempts.append(1)
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=test") as pg:
            if len(attempts) == 1:
                pg.execute("SELECT pg_terminate_backend(pg_backend_pid())")
            return pg.execute("SELECT 42").fetchone()

    assert read_answer() == (42,)
    assert len(attempts) == 2


def test_a_forked_child_does_not_reuse_the_parents_connections(make_db: MakeDb) -> None:
    db = make_db(name="pg-fork")
    parent_pid = db.execute("SELECT pg_backend_pid()").scalar()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            child_pid = db.execute("SELECT pg_backend_pid()").scalar()
            os.write(write, str(child_pid).encode())
        finally:
            os._exit(0)
    os.close(write)
    try:
        answer = os.read(read, 64).decode()
    finally:
        os.close(read)
        os.waitpid(child, 0)
    assert answer
    assert int(answer) != parent_pid
    assert db.execute("SELECT pg_backend_pid()").scalar() == parent_pid


def test_close_stops_the_background_reconnects(make_db: MakeDb) -> None:
    with FaultProxy("127.0.0.1", 5432) as proxy:
        proxy.refuse()
        db = make_db(proxy.url(PG_URL), name="pg-close",
                     connect_policy=fast_policy(max_attempts=1, max_delay=0.02))
        assert db.connect_with_retry(required=False) is False
        assert db.reconnecting
        wait_until(lambda: db.reconnect_attempts >= 3, 10)  # it keeps trying in the background
        db.close()
        assert not db.reconnecting
        assert db.health()["state"] == "closed"


def test_a_permanent_error_is_raised_even_when_the_database_is_optional(
    make_db: MakeDb, pg_password_server: tuple[int, str]
) -> None:
    port, _ = pg_password_server
    db = make_db(f"postgresql://postgres:wrong@127.0.0.1:{port}/postgres", name="pg-optional")
    with pytest.raises(Exception, match="password authentication failed"):
        db.connect_with_retry(required=False)
    assert not db.reconnecting  # nothing keeps retrying a wrong password


def test_promtool_accepts_a_scrape_with_the_sql_metrics(
    make_db: MakeDb, telemetry: CapturedTelemetry
) -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool missing: run `make services`"
    db = make_db(name="pg-promtool")
    assert db.connect_with_retry()
    db.execute("SELECT 1")
    memory = make_db("sqlite:///:memory:", name="sqlite-promtool")  # an unbounded pool: +Inf max
    memory.execute("SELECT 1")
    scrape = telemetry.scrape()
    assert 'resilient_client_pool_connections{client="pg-promtool"' in scrape
    checked = subprocess.run([promtool, "check", "metrics"], input=scrape.encode(),
                             capture_output=True, timeout=30, check=False)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
