"""Which pools can make a caller wait: only those are timed into ``pool_wait_seconds``."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy.pool import NullPool, QueuePool, StaticPool

from instrumented_clients.db._pool_metrics import pool_limit


def connect() -> sqlite3.Connection:
    return sqlite3.connect(":memory:")


@pytest.mark.parametrize(("size", "overflow", "limit"), [(1, 0, 1), (3, 2, 5), (5, 10, 15)])
def test_a_bounded_queue_pool_is_limited_to_size_plus_overflow(
    size: int, overflow: int, limit: int,
) -> None:
    assert pool_limit(QueuePool(connect, pool_size=size, max_overflow=overflow)) == limit


@pytest.mark.parametrize("pool", [
    QueuePool(connect, pool_size=2, max_overflow=-1),  # overflow without bound
    NullPool(connect),
    StaticPool(connect),
])
def test_pools_that_never_make_a_caller_wait_have_no_limit(pool: object) -> None:
    assert pool_limit(pool) is None
