"""PostgreSQL COMMIT outcome resolution against the real server: the client asks, never guesses.

Faults are injected at the last moment before COMMIT (SQLAlchemy's ``commit`` event, which fires
after the work and after the transaction id was read) through the FaultProxy and
``pg_terminate_backend``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Connection

from instrumented_clients.db import ResilientDatabase
from instrumented_clients.testing import CapturedTelemetry, FaultProxy, wait_until

from .conftest import PG_URL

pytestmark = pytest.mark.integration

MakeDb = Callable[..., ResilientDatabase]
Admin = psycopg.Connection[tuple[Any, ...]]


def before_first_commit(db: ResilientDatabase, action: Callable[[Connection], None]) -> None:
    """Run ``action`` once, just before the first COMMIT is sent."""
    done: list[bool] = []

    def hook(connection: Connection) -> None:
        if not done:
            done.append(True)
            action(connection)

    event.listen(db.engine, "commit", hook)


def inserting(table: str, runs: list[int]) -> Callable[[Connection], int]:
    """The work of these tests: count the run, insert row 1, return the run's number."""
    def work(connection: Connection) -> int:
        runs.append(1)
        connection.execute(text(f"INSERT INTO {table} (id, v) VALUES (1, 1)"))
        return len(runs)
    return work


def count(admin: Admin, table: str) -> int:
    row = admin.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def test_session_killed_after_its_last_statement_is_rerun_once_without_ambiguity(
    make_db: MakeDb, pg_admin: Admin, pg_table: str, telemetry: CapturedTelemetry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    db = make_db(name="pg-resolve-kill")
    runs: list[int] = []

    def kill_own_session(connection: Connection) -> None:
        pid = connection.connection.dbapi_connection.info.backend_pid  # type: ignore[union-attr]
        pg_admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        wait_until(lambda: pg_admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s",
                                            (pid,)).fetchone() == (0,), 10)

    before_first_commit(db, kill_own_session)

    work = inserting(pg_table, runs)

    with caplog.at_level(logging.INFO, logger="instrumented_clients.db"):
        assert db.transaction(work) == 2
    assert len(runs) == 2
    assert count(pg_admin, pg_table) == 1
    assert "the server says it did not commit: rerun" in caplog.text
    assert telemetry.value("retries_total", system="postgresql", client="pg-resolve-kill",
                           operation="transaction", error_type="connection") == 1


def test_session_killed_right_after_its_last_statement_is_rerun_once(
    make_db: MakeDb, pg_admin: Admin, pg_table: str,
) -> None:
    """The kill lands before the transaction id is read: an ordinary failure before COMMIT."""
    db = make_db(name="pg-resolve-kill-early")
    runs: list[int] = []

    def kill_after_insert(connection: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("INSERT") and len(runs) == 1:
            pid = cursor.connection.info.backend_pid
            pg_admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            wait_until(lambda: pg_admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() == (0,),
                10)

    event.listen(db.engine, "after_cursor_execute", kill_after_insert)

    work = inserting(pg_table, runs)

    assert db.transaction(work) == 2
    assert count(pg_admin, pg_table) == 1


def test_commit_reply_dropped_after_the_server_committed_is_not_rerun(
    make_db: MakeDb, pg_admin: Admin, pg_table: str, caplog: pytest.LogCaptureFixture,
) -> None:
    with FaultProxy("127.0.0.1", 5432) as proxy:
        db = make_db(proxy.url(PG_URL), name="pg-resolve-reply")
        runs: list[int] = []
        watcher_errors: list[BaseException] = []

        def cut_once_committed() -> None:
            try:
                wait_until(lambda: count(pg_admin, pg_table) == 1, 10)
                # The server has committed and its reply was thrown away; now the client learns
                # that its connection is gone (and new connections work again).
                proxy.pass_through()
            except BaseException as error:  # reported by the test thread
                watcher_errors.append(error)
                proxy.pass_through()

        def drop_the_reply(connection: Connection) -> None:
            proxy.drop_replies()
            threading.Thread(target=cut_once_committed, daemon=True).start()

        before_first_commit(db, drop_the_reply)

        work = inserting(pg_table, runs)

        with caplog.at_level(logging.INFO, logger="instrumented_clients.db"):
            assert db.transaction(work) == 1
        assert watcher_errors == []
        assert runs == [1]
        assert proxy.bytes_dropped > 0
        assert "the server says it committed: not rerun" in caplog.text
    assert count(pg_admin, pg_table) == 1


def test_commit_lost_before_it_reached_the_server_is_rerun_once(
    make_db: MakeDb, pg_admin: Admin, pg_table: str, caplog: pytest.LogCaptureFixture,
) -> None:
    with FaultProxy("127.0.0.1", 5432) as proxy:
        db = make_db(proxy.url(PG_URL), name="pg-resolve-cut")
        runs: list[int] = []
        before_first_commit(db, lambda connection: proxy.cut())

        work = inserting(pg_table, runs)

        with caplog.at_level(logging.INFO, logger="instrumented_clients.db"):
            assert db.transaction(work) == 2
        assert "the server says it did not commit: rerun" in caplog.text
    assert runs == [1, 1]
    assert count(pg_admin, pg_table) == 1


@pytest.mark.parametrize("read_only", [False, True])
def test_work_that_wrote_nothing_reruns_a_lost_commit(
    make_db: MakeDb, pg_table: str, caplog: pytest.LogCaptureFixture, read_only: bool,
) -> None:
    with FaultProxy("127.0.0.1", 5432) as proxy:
        db = make_db(proxy.url(PG_URL), name="pg-resolve-read")
        runs: list[int] = []
        before_first_commit(db, lambda connection: proxy.cut())

        def read(connection: Connection) -> int:
            runs.append(1)
            return int(connection.execute(text(f"SELECT count(*) FROM {pg_table}")).scalar_one())

        with caplog.at_level(logging.INFO, logger="instrumented_clients.db"):
            assert db.transaction(read, read_only=read_only) == 0
        assert runs == [1, 1]
    if read_only:  # nothing asked, before COMMIT or after: rerun as declared-safe work
        assert "the server says" not in caplog.text
        assert "no transaction id" not in caplog.text
        assert "It is rerun" in caplog.text
    else:  # no transaction id was assigned: nothing to ask about, nothing to apply twice
        assert "no transaction id: nothing was written" in caplog.text
