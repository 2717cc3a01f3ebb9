"""redis-py's own command and pipeline suites pass on ResilientRedis as on plain redis.Redis."""

from __future__ import annotations

import pytest

from tests.upstream import redis_py_suite as suite

from .helpers import HOST, PORT

pytestmark = pytest.mark.integration


@pytest.mark.timeout(900)
def test_redis_py_suites_pass_on_resilient_redis_as_on_redis_py() -> None:
    url = f"redis://{HOST}:{PORT}/{suite.SUITE_DB}"
    plain = suite.run("redis.Redis", redis_url=url)
    resilient = suite.run("ResilientRedis", redis_url=url)

    # Each run really tested the class it names, and the suites really ran.
    assert set(plain.clients_built) == {"Redis"}, plain.output[-3000:]
    assert set(resilient.clients_built) == {"ResilientRedis"}, resilient.output[-3000:]
    assert plain.outcomes.keys() == resilient.outcomes.keys()
    assert len(plain.passed) >= 400, plain.output[-3000:]
    assert not set(suite.DESELECTED) & plain.outcomes.keys()

    missing = suite.regressions(plain, resilient)
    details = {test: resilient.outcomes.get(test) for test in missing}
    assert not missing, f"pass on redis.Redis, not on ResilientRedis: {details}\n" + (
        resilient.output[-6000:]
    )
    print(f"\nredis-py suites: redis.Redis {len(plain.passed)} passed in {plain.seconds:.1f} s, "
          f"ResilientRedis {len(resilient.passed)} passed in {resilient.seconds:.1f} s")


@pytest.mark.timeout(900)
def test_redis_py_asyncio_suites_pass_on_async_resilient_redis_as_on_redis_py() -> None:
    url = f"redis://{HOST}:{PORT}/{suite.SUITE_DB}"
    plain = suite.run("redis.asyncio.Redis", redis_url=url)
    resilient = suite.run("AsyncResilientRedis", redis_url=url)

    # Each run really tested the class it names, and the suites really ran.
    assert "AsyncResilientRedis" not in plain.clients_built, plain.output[-3000:]
    assert plain.clients_built.get("Redis", 0) > 0, plain.output[-3000:]
    assert resilient.clients_built.get("AsyncResilientRedis", 0) > 0, resilient.output[-3000:]
    assert plain.outcomes.keys() == resilient.outcomes.keys()
    assert len(plain.passed) >= 300, plain.output[-3000:]

    missing = suite.regressions(plain, resilient)
    details = {test: resilient.outcomes.get(test) for test in missing}
    assert not missing, f"pass on redis.asyncio.Redis, not on AsyncResilientRedis: {details}\n" + (
        resilient.output[-6000:]
    )
    print(f"\nredis-py asyncio suites: redis.asyncio.Redis {len(plain.passed)} passed in "
          f"{plain.seconds:.1f} s, AsyncResilientRedis {len(resilient.passed)} passed in "
          f"{resilient.seconds:.1f} s")
