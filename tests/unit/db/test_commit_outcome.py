"""The decisions of PostgreSQL COMMIT outcome resolution that need no server (FakeClock)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import create_engine

from instrumented_clients.db import CommitOutcomeUnknownError
from instrumented_clients.db.commit_outcome import (
    CommitMarker,
    CommitOutcome,
    CommitOutcomeResolver,
)
from instrumented_clients.testing import FakeClock

ENGINE = create_engine("postgresql+psycopg://app@127.0.0.1:1/none")


class StillInProgress:
    """A DB-API connection whose server always answers "in progress" on timeline 1."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.closed = False

    def cursor(self) -> StillInProgress:
        return self

    def execute(self, sql: str, parameters: Any = None) -> None:
        self.statements.append(sql)

    def fetchone(self) -> tuple[Any, ...]:
        last = self.statements[-1]
        return ("in progress", "00000001") if "pg_xact_status" in last else (True,)

    def close(self) -> None:
        self.closed = True


class Resolver(CommitOutcomeResolver):
    def __init__(self, clock: FakeClock, timeout: float = 5.0) -> None:
        super().__init__(ENGINE, clock, timeout)
        self.connection = StillInProgress()

    def _connect(self) -> Any:
        return self.connection


def test_no_transaction_id_means_nothing_was_written_and_is_rerun(clock: FakeClock) -> None:
    resolver = Resolver(clock)
    outcome, detail = resolver.resolve(CommitMarker(None, 42, "00000001"))
    assert outcome is CommitOutcome.ABORTED
    assert "nothing was written" in detail
    assert resolver.connection.statements == []  # nothing asked


def test_an_unknown_timeline_is_never_trusted(clock: FakeClock) -> None:
    outcome, detail = Resolver(clock).resolve(CommitMarker(700, 42, None))
    assert outcome is CommitOutcome.UNKNOWN
    assert "timeline" in detail


def test_in_progress_ends_the_backend_and_gives_up_after_the_timeout(clock: FakeClock) -> None:
    resolver = Resolver(clock, timeout=2.0)
    started = clock.monotonic()
    outcome, detail = resolver.resolve(CommitMarker(2**32 + 700, 42, "00000001"))
    assert outcome is CommitOutcome.UNKNOWN
    assert "still in progress after 2.0 s" in detail
    assert 2.0 <= clock.monotonic() - started < 2.5
    terminations = [sql for sql in resolver.connection.statements if "pg_terminate" in sql]
    assert terminations  # asked the old backend to go, every round
    assert resolver.connection.closed


def test_a_timeout_that_is_not_positive_is_refused() -> None:
    with pytest.raises(ValueError, match="timeout must be > 0 seconds, got 0"):
        CommitOutcomeResolver(ENGINE, FakeClock(), 0)


def test_the_unknown_error_says_why_asking_did_not_settle_it() -> None:
    error = CommitOutcomeUnknownError(ConnectionError("gone"), detail="timeline 2, not 1")
    assert "Asking the server did not settle it: timeline 2, not 1." in str(error)
    assert error.detail == "timeline 2, not 1"
    assert not error.idempotent
