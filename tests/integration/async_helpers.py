"""Shared pieces of the asyncio integration tests: no blocking call on the loop, and a loose
check of the loop's lag while the test runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from blockbuster import BlockBuster, blockbuster_ctx

# Blocking calls made under these packages fail the test. The test helpers (FaultProxy) are left
# out: they run their own threads and are the harness, not the code under test.
SCANNED = ["instrumented_clients", "redis.asyncio", "sqlalchemy.ext.asyncio"]
EXCLUDED = ["instrumented_clients.testing"]
MAX_LOOP_LAG = 1.0
"""Seconds: generous on a loaded 2-core machine, but a blocking sleep or connect would pass it."""


@pytest.fixture
def no_blocking() -> Iterator[BlockBuster]:
    """blockbuster active for the whole test (the fixture is set up before the loop runs it)."""
    with blockbuster_ctx(SCANNED, excluded_modules=EXCLUDED) as blockbuster:
        for function in blockbuster.functions.values():
            # asyncpg reads ~/.pgpass and the TLS file paths while parsing its connect
            # arguments (its own code, once per new connection, when no password is given).
            function.can_block_in("asyncpg/connect_utils.py", {"_parse_connect_dsn_and_args"})
            # SQLAlchemy makes a SQLite path absolute when the engine is built (construction,
            # not a call on the data path).
            function.can_block_in("sqlalchemy/dialects/sqlite/pysqlite.py",
                                  {"create_connect_args"})
            # pika's I/O loop wakes itself through a loopback socket pair, connected once when
            # a RabbitMQ client is built (construction, not a call on the data path).
            function.can_block_in("pika/compat.py", {"_nonblocking_socketpair",
                                                     "nonblocking_socketpair"})
            # A RabbitMQ publisher's spool file is opened, and what a previous process left in
            # it read back, when the publisher is built; its writes run in a thread.
            function.can_block_in("instrumented_clients/rabbitmq/spool.py", {"__init__", "load"})
        yield blockbuster


@pytest_asyncio.fixture
async def loop_lag() -> AsyncIterator[list[float]]:
    """Samples the loop's lag every 10 ms during the test; fails it above :data:`MAX_LOOP_LAG`."""
    lags: list[float] = []
    loop = asyncio.get_running_loop()

    async def sample() -> None:
        while True:
            before = loop.time()
            await asyncio.sleep(0.01)
            lags.append(loop.time() - before - 0.01)

    task = asyncio.create_task(sample())
    yield lags
    await asyncio.sleep(0.03)  # at least one sample, however short the test
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert lags, "the lag sampler never ran"
    assert max(lags) < MAX_LOOP_LAG, f"the event loop stalled for {max(lags):.3f}s"
