"""A PostgreSQL primary with a synchronous standby (started by the cluster script): failover,
COMMIT outcomes across a promotion, and a COMMIT stuck waiting for the standby."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Connection

from instrumented_clients.db import CommitOutcomeUnknownError, ResilientDatabase
from instrumented_clients.testing import FaultProxy, wait_until
from scripts.local_clusters.postgres_pair import PostgresPair

from .conftest import fast_policy

pytestmark = pytest.mark.integration

MakeDb = Callable[..., ResilientDatabase]


def create_table(pair: PostgresPair, name: str) -> None:
    with psycopg.connect(pair.primary.dsn("test"), autocommit=True) as admin:
        admin.execute(f"CREATE TABLE {name} (id int NOT NULL, v int NOT NULL)")


def rows(pair: PostgresPair, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(pair.primary.dsn("test"), autocommit=True) as admin:
        return admin.execute(sql).fetchall()


def test_a_transaction_id_from_before_a_promotion_is_not_trusted(
    postgres_pair: PostgresPair, make_db: MakeDb, table: str,
) -> None:
    pair = postgres_pair
    create_table(pair, table)
    db = make_db(pair.multi_host_url(), name="pg-timeline")
    runs: list[int] = []

    def fail_over(connection: Connection) -> None:
        # After the work and the transaction id, before COMMIT: the primary goes away and the
        # standby takes over on a new timeline, where that id means nothing reliable.
        if len(runs) == 1:
            pair.promote_standby()

    event.listen(db.engine, "commit", fail_over)

    def work(connection: Connection) -> None:
        runs.append(1)
        connection.execute(text(f"INSERT INTO {table} (id, v) VALUES (1, 1)"))

    with pytest.raises(CommitOutcomeUnknownError, match=r"timeline 00000002.*on 00000001"):
        db.transaction(work)
    assert runs == [1]


def test_a_commit_waiting_for_the_standby_is_ended_and_found_committed(
    postgres_pair: PostgresPair, make_db: MakeDb, table: str, caplog: pytest.LogCaptureFixture,
) -> None:
    pair = postgres_pair
    create_table(pair, table)
    pair.stop_node(pair.standby, "fast")  # the primary's COMMITs now wait for it
    with FaultProxy("127.0.0.1", pair.primary.port) as proxy:
        db = make_db(proxy.url(pair.primary.url("test")), name="pg-in-progress")
        runs: list[int] = []

        def cut_while_waiting() -> None:
            wait_until(lambda: rows(pair, "SELECT count(*) FROM pg_stat_activity "
                                          "WHERE wait_event = 'SyncRep'") == [(1,)], 10)
            proxy.cut()

        def work(connection: Connection) -> str:
            runs.append(1)
            connection.execute(text(f"INSERT INTO {table} (id, v) VALUES (1, 1)"))
            threading.Thread(target=cut_while_waiting, daemon=True).start()
            return "done"

        with caplog.at_level(logging.INFO, logger="instrumented_clients.db"):
            assert db.transaction(work) == "done"
    assert runs == [1]
    # The server had committed locally and was waiting for the standby: "in progress" until the
    # client ended that backend, then "committed".
    assert "the server says it committed: not rerun" in caplog.text
    assert rows(pair, f"SELECT count(*) FROM {table}") == [(1,)]


def test_transactions_that_returned_survive_a_failover_exactly_once(
    postgres_pair: PostgresPair, make_db: MakeDb, table: str,
) -> None:
    pair = postgres_pair
    create_table(pair, table)
    # Enough attempts to span the promotion (about a second here).
    db = make_db(pair.multi_host_url(), name="pg-failover",
                 policy=fast_policy(max_attempts=40, initial_delay=0.05, max_delay=0.2))
    returned: list[int] = []
    returned_at: list[tuple[float, int]] = []  # (when, the port of the server that committed)
    unknown: list[int] = []
    failed: list[BaseException] = []
    stop = threading.Event()

    def insert(ident: int) -> Callable[[Connection], int]:
        def work(connection: Connection) -> int:
            connection.execute(text(f"INSERT INTO {table} (id, v) VALUES (:id, 1)"), {"id": ident})
            return int(connection.connection.dbapi_connection.info.port)  # type: ignore[union-attr]
        return work

    def loop() -> None:
        ident = 0
        while not stop.is_set():
            ident += 1
            try:
                port = db.transaction(insert(ident))
                returned.append(ident)
                returned_at.append((time.monotonic(), port))
            except CommitOutcomeUnknownError:
                unknown.append(ident)
            except BaseException as error:  # reported by the test thread
                failed.append(error)
                return

    worker = threading.Thread(target=loop)
    worker.start()
    try:
        wait_until(lambda: len(returned) >= 100, 30)
        before = len(returned)
        promoted_at = time.monotonic()
        new_primary = pair.promote_standby()
        stopped_and_promoted = time.monotonic() - promoted_at
        wait_until(lambda: len(returned) >= before + 100 or failed, 60)
    finally:
        stop.set()
        worker.join(timeout=60)
    assert failed == []
    assert db.health()["state"] == "connected"
    counts = dict(rows(pair, f"SELECT id, count(*) FROM {table} GROUP BY id"))
    assert pair.primary is new_primary
    missing = [ident for ident in returned if counts.get(ident) != 1]
    assert missing == [], f"returned but not present exactly once: {missing}"
    # A transaction whose COMMIT was cut by the failover is at most once, never twice.
    assert all(counts.get(ident, 0) <= 1 for ident in unknown)
    first_after = next(at for at, port in returned_at if port == new_primary.port)
    print(f"\nfailover: {len(returned)} returned, {len(unknown)} unknown; primary stopped and "
          f"standby promoted in {stopped_and_promoted:.2f} s; first COMMIT on the new primary "
          f"{first_after - promoted_at:.2f} s after the primary began to stop")
