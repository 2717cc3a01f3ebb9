"""ResilientDatabase against the real PostgreSQL: lost sessions, serialization, bad input."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import Connection

from instrumented_clients.db import CommitOutcomeUnknownError, ResilientDatabase
from instrumented_clients.resilience import JitterMode, RetryPolicy
from instrumented_clients.testing import CapturedTelemetry, FakeClock, FaultProxy, wait_until

from .conftest import PG_URL

pytestmark = pytest.mark.integration

MakeDb = Callable[..., ResilientDatabase]


def backend_gone(admin: psycopg.Connection[tuple[Any, ...]], pid: int) -> bool:
    row = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return row is not None and row[0] == 0


def test_terminated_session_before_commit_reruns_the_transaction_and_writes_once(
    make_db: MakeDb, pg_admin: psycopg.Connection[tuple[Any, ...]], pg_table: str,
    telemetry: CapturedTelemetry,
) -> None:
    db = make_db(name="pg-kill")
    runs: list[int] = []

    def work(connection: Connection) -> int:
        runs.append(1)
        connection.execute(text(f"INSERT INTO {pg_table} (id, v) VALUES (1, 42)"))
        if len(runs) == 1:
            pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
            pg_admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            wait_until(lambda: backend_gone(pg_admin, pid), 10)
        # On the first run the session is gone: this statement fails before COMMIT is sent.
        return int(connection.execute(text(f"SELECT count(*) FROM {pg_table}")).scalar_one())

    assert db.transaction(work) == 1
    assert len(runs) == 2
    row = pg_admin.execute(f"SELECT count(*), sum(v) FROM {pg_table}").fetchone()
    assert row == (1, 42)
    assert telemetry.value("retries_total", system="postgresql", client="pg-kill",
                           operation="transaction", error_type="connection") == 1
    assert telemetry.value("operation_duration_seconds_count",
                           system="postgresql", client="pg-kill",
                           operation="transaction", outcome="success_after_retry") == 1
    assert db.health()["state"] == "connected"


def test_two_serializable_writers_reach_exactly_400(
    make_db: MakeDb, pg_admin: psycopg.Connection[tuple[Any, ...]], pg_table: str,
    telemetry: CapturedTelemetry,
) -> None:
    pg_admin.execute(f"INSERT INTO {pg_table} (id, v) VALUES (1, 0)")
    # The test policy; max_delay caps full jitter so a long losing streak stays short.
    policy = RetryPolicy(max_attempts=50, initial_delay=0.001, max_delay=0.05,
                         jitter_mode=JitterMode.FULL)
    db = make_db(name="pg-serial", policy=policy)
    errors: list[BaseException] = []

    def increment(connection: Connection) -> None:
        value = connection.execute(text(f"SELECT v FROM {pg_table} WHERE id = 1")).scalar_one()
        connection.execute(text(f"UPDATE {pg_table} SET v = :v WHERE id = 1"), {"v": value + 1})

    def writer() -> None:
        try:
            for _ in range(200):
                db.transaction(increment, isolation_level="SERIALIZABLE")
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert errors == []
    row = pg_admin.execute(f"SELECT v FROM {pg_table} WHERE id = 1").fetchone()
    assert row == (400,)
    retries = telemetry.value("retries_total", system="postgresql", client="pg-serial",
                              operation="transaction", error_type="serialization")
    assert retries is not None
    assert retries > 0


def test_connection_lost_during_commit_is_ambiguous_and_not_rerun(
    make_db: MakeDb, pg_admin: psycopg.Connection[tuple[Any, ...]], pg_table: str
) -> None:
    with FaultProxy("127.0.0.1", 5432) as proxy:
        # Without asking the server (PostgreSQL's COMMIT outcome resolution, on by default).
        db = make_db(proxy.url(PG_URL), name="pg-commit", resolve_commit_outcome=False)
        runs: list[int] = []

        def work(connection: Connection) -> None:
            runs.append(1)
            connection.execute(text(f"INSERT INTO {pg_table} (id, v) VALUES (1, 1)"))
            proxy.cut()  # the next bytes on this connection are the COMMIT

        with pytest.raises(CommitOutcomeUnknownError, match="may or may not have been committed"):
            db.transaction(work)
        assert runs == [1]
        # Here the server never saw the COMMIT; the client cannot know that, so it must ask.
        assert pg_admin.execute(f"SELECT count(*) FROM {pg_table}").fetchone() == (0,)

        def upsert(connection: Connection) -> None:
            runs.append(1)
            connection.execute(text(f"INSERT INTO {pg_table} (id, v) VALUES (1, 1) "
                                    "ON CONFLICT (id) DO NOTHING"))
            if len(runs) == 2:
                proxy.cut()

        db.transaction(upsert, idempotent=True)
        assert len(runs) == 3
    assert pg_admin.execute(f"SELECT count(*) FROM {pg_table}").fetchone() == (1,)


def test_a_syntax_error_is_raised_at_once(
    make_db: MakeDb, telemetry: CapturedTelemetry
) -> None:
    clock = FakeClock()
    db = make_db(name="pg-syntax", policy=RetryPolicy(max_attempts=4, clock=clock))
    with pytest.raises(sa_exc.ProgrammingError) as raised:
        db.execute("SELEC 1")
    assert isinstance(raised.value.orig, psycopg.errors.SyntaxError)
    assert clock.sleeps == []
    assert telemetry.value("retries_total", system="postgresql", client="pg-syntax",
                           operation="execute", error_type="programming") is None
    assert db.execute("SELECT 1").scalar() == 1


def test_wrong_password_fails_once_with_a_clear_error_and_no_password(
    make_db: MakeDb, pg_password_server: tuple[int, str], telemetry: CapturedTelemetry
) -> None:
    port, password = pg_password_server
    right = make_db(f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres", name="pg-ok")
    assert right.execute("SELECT 1").scalar() == 1  # the server really checks the password

    clock = FakeClock()
    wrong_password = "not-the-" + password
    db = make_db(f"postgresql://postgres:{wrong_password}@127.0.0.1:{port}/postgres",
                 name="pg-auth", policy=RetryPolicy(max_attempts=4, clock=clock))
    with pytest.raises(sa_exc.OperationalError, match="password authentication failed") as raised:
        db.connect_with_retry(required=True)
    assert clock.sleeps == []
    for text_out in (str(raised.value), repr(db.health()), telemetry.scrape()):
        assert wrong_password not in text_out
        assert password not in text_out
    assert db.health()["state"] == "failed"
    with pytest.raises(sa_exc.OperationalError):
        db.execute("SELECT 1")
    assert clock.sleeps == []
    assert telemetry.value("operation_duration_seconds_count",
                           system="postgresql", client="pg-auth",
                           operation="execute", outcome="failure") == 1


@contextlib.contextmanager
def one_connection_held(db: ResilientDatabase) -> Iterator[threading.Event]:
    """A transaction in another thread holds one pooled connection until the event is set."""
    inside = threading.Event()
    release = threading.Event()

    def hold(connection: Connection) -> None:
        inside.set()
        release.wait(20)

    holder = threading.Thread(target=db.transaction, args=(hold,))
    holder.start()
    try:
        wait_until(inside.is_set, 10)
        yield release
    finally:
        release.set()
        holder.join(10)


def test_pool_gauges_follow_checked_out_connections(
    make_db: MakeDb, telemetry: CapturedTelemetry
) -> None:
    db = make_db(name="pg-pool", engine_options={"pool_size": 3, "max_overflow": 2})

    def gauge(state: str) -> float | None:
        return telemetry.value("pool_connections", system="postgresql", client="pg-pool",
                               state=state)

    with one_connection_held(db):
        assert gauge("in_use") == 1.0
        assert db.execute("SELECT 1").scalar() == 1
        assert gauge("idle") == 1.0  # the one the SELECT used went back
    assert gauge("in_use") == 0.0
    assert gauge("idle") == 2.0
    assert telemetry.value("pool_max_connections", system="postgresql", client="pg-pool") == 5.0
    # Never at its limit, so no checkout could wait and none was timed.
    assert (telemetry.value("pool_wait_seconds_count", system="postgresql", client="pg-pool")
            or 0) == 0


def test_a_checkout_that_waits_for_a_full_pool_is_timed(
    make_db: MakeDb, telemetry: CapturedTelemetry
) -> None:
    db = make_db(name="pg-full", engine_options={"pool_size": 1, "max_overflow": 0})
    db.execute("SELECT 1")
    with one_connection_held(db) as release:
        threading.Timer(0.2, release.set).start()
        assert db.execute("SELECT 1").scalar() == 1  # waits for the held connection
    assert telemetry.value("pool_wait_seconds_count", system="postgresql",
                           client="pg-full") == 1
    assert (telemetry.value("pool_wait_seconds_sum", system="postgresql", client="pg-full")
            or 0) >= 0.15


def pids_of_two_pooled_connections(db: ResilientDatabase) -> set[int]:
    """Hold two connections at once so that both come from (and return to) the pool."""
    both = threading.Barrier(2, timeout=10)
    pids: set[int] = set()

    def hold(connection: Connection) -> None:
        pids.add(int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one()))
        both.wait()

    threads = [threading.Thread(target=db.transaction, args=(hold,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    return pids


def test_a_disconnect_invalidates_the_whole_pool(
    make_db: MakeDb, pg_admin: psycopg.Connection[tuple[Any, ...]]
) -> None:
    db = make_db(name="pg-invalidate", engine_options={"pool_size": 2, "max_overflow": 0})
    before = pids_of_two_pooled_connections(db)
    assert len(before) == 2
    runs: list[int] = []

    def work(connection: Connection) -> None:
        runs.append(1)
        if len(runs) == 1:
            pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
            pg_admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            wait_until(lambda: backend_gone(pg_admin, pid), 10)
        connection.execute(text("SELECT 1"))

    db.transaction(work)
    assert len(runs) == 2
    after = pids_of_two_pooled_connections(db)
    # The other idle connection was healthy, but SQLAlchemy discards every connection older
    # than the disconnect: none of the old sessions is used again.
    assert after.isdisjoint(before)


def test_spans_cover_all_attempts_with_semantic_attributes(
    make_db: MakeDb, pg_admin: psycopg.Connection[tuple[Any, ...]], pg_table: str,
    telemetry: CapturedTelemetry,
) -> None:
    db = make_db(name="pg-spans")
    runs: list[int] = []

    def work(connection: Connection) -> None:
        runs.append(1)
        connection.execute(text(f"INSERT INTO {pg_table} (id, v) VALUES (:id, :v)"),
                           {"id": 1, "v": 987654})
        if len(runs) == 1:
            raise psycopg.errors.SerializationFailure("could not serialize access")

    db.transaction(work)
    db.execute(f"SELECT v FROM {pg_table} WHERE id = :id", {"id": 1})
    spans = {span.name: span for span in telemetry.spans()}
    transaction = spans["transaction"]
    assert transaction.attributes["db.system.name"] == "postgresql"
    assert transaction.attributes["server.address"] == "127.0.0.1"
    assert transaction.attributes["server.port"] == 5432
    assert transaction.attributes["resilient_client.attempts"] == 2
    assert [event.name for event in transaction.events] == ["retry"]
    assert transaction.events[0].attributes["resilient_client.error.category"] == "serialization"
    # the same error.type on the span's event as a failed span would get: the SQLSTATE
    assert transaction.events[0].attributes["error.type"] == "40001"
    select = spans[f"SELECT {pg_table}"]
    assert select.attributes["db.operation.name"] == "SELECT"
    assert select.attributes["db.query.text"] == f"SELECT v FROM {pg_table} WHERE id = :id"
    everything = repr([(s.name, dict(s.attributes), [dict(e.attributes) for e in s.events])
                       for s in telemetry.spans()])
    assert "987654" not in everything


def test_retry_log_lines_name_the_client_and_operation(
    make_db: MakeDb, caplog: pytest.LogCaptureFixture
) -> None:
    db = make_db(name="pg-logs")
    runs: list[int] = []

    def work(connection: Connection) -> None:
        runs.append(1)
        if len(runs) == 1:
            raise psycopg.errors.DeadlockDetected("deadlock detected")

    with caplog.at_level("WARNING", logger="instrumented_clients"):
        db.transaction(work)
    assert any("failed for postgresql/pg-logs transaction with DeadlockDetected" in record.message
               for record in caplog.records), [record.message for record in caplog.records]
