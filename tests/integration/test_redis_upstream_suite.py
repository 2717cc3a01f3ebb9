"""redis-py's own command and pipeline suites pass on ResilientRedis as on plain redis.Redis."""

from __future__ import annotations

import pytest

from tests.upstream import redis_py_suite as suite

from .redis_helpers import HOST, PORT

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
