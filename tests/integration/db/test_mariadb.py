"""ResilientDatabase against the real MariaDB: deadlock, lock wait timeout, bad password."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator

import pymysql
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import Connection

from instrumented_clients.db import ResilientDatabase
from instrumented_clients.resilience import RetryPolicy
from instrumented_clients.resilience.events import RetryScheduled
from instrumented_clients.testing import CapturedTelemetry, FakeClock

from .conftest import MARIADB_URL, fast_policy

pytestmark = pytest.mark.integration

MakeDb = Callable[..., ResilientDatabase]


def query(admin: pymysql.connections.Connection, sql: str) -> tuple[object, ...] | None:
    with admin.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchone()  # type: ignore[no-any-return]


def test_a_mysql_url_reaching_mariadb_is_labelled_mariadb(
    make_db: MakeDb, telemetry: CapturedTelemetry
) -> None:
    db = make_db(MARIADB_URL, name="maria-label")
    assert db.system == "mysql"  # not known before connecting
    assert db.connect_with_retry()
    assert db.system == "mariadb"
    assert telemetry.value("connection_state", system="mariadb", client="maria-label",
                           state="connected") == 1
    assert telemetry.value("connection_state", system="mysql", client="maria-label",
                           state="connecting") is None
    mine = [line for line in telemetry.scrape().splitlines() if 'client="maria-label"' in line]
    assert any('system="mariadb"' in line for line in mine)
    assert not any('system="mysql"' in line for line in mine)
    reconnect_spans = [span for span in telemetry.spans() if span.name.endswith("reconnect")]
    # A first connection at start-up is not an outage: no reconnect span (so none left open
    # under the provisional label either).
    assert not reconnect_spans
    assert not telemetry.otel._reconnect_spans  # type: ignore[union-attr]


def test_a_real_deadlock_is_retried_and_both_transactions_commit(
    make_db: MakeDb, maria_admin: pymysql.connections.Connection, maria_table: str,
    telemetry: CapturedTelemetry,
) -> None:
    query(maria_admin, f"INSERT INTO {maria_table} (id, v) VALUES (1, 0), (2, 0)")
    db = make_db(MARIADB_URL, name="maria-deadlock")
    both_hold_a_lock = threading.Barrier(2, timeout=20)
    runs = {"a": 0, "b": 0}
    errors: list[BaseException] = []

    def crossing(me: str, first: int, second: int) -> Callable[[Connection], None]:
        def work(connection: Connection) -> None:
            runs[me] += 1
            connection.execute(text(f"UPDATE {maria_table} SET v = v + 1 WHERE id = {first}"))
            if runs[me] == 1:
                both_hold_a_lock.wait()  # each now waits for the row the other holds
            connection.execute(text(f"UPDATE {maria_table} SET v = v + 1 WHERE id = {second}"))

        return work

    def run(work: Callable[[Connection], None]) -> None:
        try:
            db.transaction(work)
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(crossing("a", 1, 2),)),
               threading.Thread(target=run, args=(crossing("b", 2, 1),))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(runs.values()) == [1, 2]  # the victim ran again, the winner once
    assert query(maria_admin, f"SELECT sum(v), min(v) FROM {maria_table}") == (4, 2)
    assert telemetry.value("retries_total", system="mariadb", client="maria-deadlock",
                           operation="transaction", error_type="deadlock") == 1


def test_a_lock_wait_timeout_is_retried_after_an_explicit_rollback(
    make_db: MakeDb, maria_admin: pymysql.connections.Connection, maria_table: str,
    telemetry: CapturedTelemetry,
) -> None:
    query(maria_admin, f"INSERT INTO {maria_table} (id, v) VALUES (1, 0)")
    holder = pymysql.connect(host="127.0.0.1", user="root", database="test")
    try:
        with holder.cursor() as cursor:
            cursor.execute(f"SELECT v FROM {maria_table} WHERE id = 1 FOR UPDATE")

        def release_the_lock(event: RetryScheduled) -> None:
            holder.rollback()

        db = make_db(MARIADB_URL, name="maria-lockwait",
                     policy=fast_policy(on_retry=(release_the_lock,)))
        runs: list[int] = []

        def work(connection: Connection) -> None:
            runs.append(1)
            connection.execute(text("SET SESSION innodb_lock_wait_timeout = 1"))
            # Written before the blocked statement: MariaDB's 1205 undoes only the statement,
            # so this row survives unless the whole transaction is rolled back explicitly.
            connection.execute(text(f"INSERT INTO {maria_table} (id, v) VALUES "
                                    f"({100 + len(runs)}, 0)"))
            connection.execute(text(f"UPDATE {maria_table} SET v = v + 1 WHERE id = 1"))

        db.transaction(work)
    finally:
        holder.close()
    assert len(runs) == 2
    assert query(maria_admin, f"SELECT count(*) FROM {maria_table} WHERE id > 100") == (1,)
    assert query(maria_admin, f"SELECT id FROM {maria_table} WHERE id > 100") == (102,)
    assert query(maria_admin, f"SELECT v FROM {maria_table} WHERE id = 1") == (1,)
    assert telemetry.value("retries_total", system="mariadb", client="maria-lockwait",
                           operation="transaction", error_type="lock_timeout") == 1


@pytest.fixture
def maria_user(maria_admin: pymysql.connections.Connection) -> Iterator[tuple[str, str]]:
    user, password = f"ic_{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
    query(maria_admin, f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password}'")
    query(maria_admin, f"GRANT SELECT ON test.* TO '{user}'@'127.0.0.1'")
    yield user, password
    query(maria_admin, f"DROP USER IF EXISTS '{user}'@'127.0.0.1'")


def test_wrong_password_fails_once_with_a_clear_error_and_no_password(
    make_db: MakeDb, maria_user: tuple[str, str], telemetry: CapturedTelemetry
) -> None:
    user, password = maria_user
    right = make_db(f"mysql://{user}:{password}@127.0.0.1:3306/test", name="maria-ok")
    assert right.execute("SELECT 1").scalar() == 1

    clock = FakeClock()
    wrong = "wrong-" + password
    db = make_db(f"mysql://{user}:{wrong}@127.0.0.1:3306/test", name="maria-auth",
                 policy=RetryPolicy(max_attempts=4, clock=clock))
    with pytest.raises(sa_exc.OperationalError, match="Access denied") as raised:
        db.connect_with_retry(required=True)
    assert raised.value.orig is not None
    assert raised.value.orig.args[0] == 1045
    assert clock.sleeps == []
    for text_out in (str(raised.value), repr(db.health()), telemetry.scrape()):
        assert wrong not in text_out
        assert password not in text_out
    assert telemetry.value("operation_duration_seconds_count", system="mysql", client="maria-auth",
                           operation="connect", outcome="failure") == 1


def test_a_syntax_error_is_raised_at_once(make_db: MakeDb) -> None:
    clock = FakeClock()
    db = make_db(MARIADB_URL, name="maria-syntax", policy=RetryPolicy(max_attempts=4, clock=clock))
    with pytest.raises(sa_exc.ProgrammingError):
        db.execute("SELEC 1")
    assert clock.sleeps == []
