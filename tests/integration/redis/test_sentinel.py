"""ResilientRedis behind Sentinel (one primary, one replica, three Sentinels of our own): the
write rule through ``SENTINEL FAILOVER`` and ``kill -9`` of the primary, with the figures."""

from __future__ import annotations

import logging
import time
import uuid

import pytest
import redis
from redis import exceptions as rx

from instrumented_clients import ConfigError, ConnectionState, ErrorCategory
from instrumented_clients.redis import ResilientRedis, classify, default_policy
from instrumented_clients.redis.errors import is_demoted_primary
from instrumented_clients.testing import CapturedTelemetry, wait_until
from scripts.local_clusters.redis_servers import SERVICE, RedisSentinelSet

from .failover import Reader, RetryLog, Workload, Writer, figures
from .helpers import Background
from .topologies import redis_sentinel, redis_sentinel_session

pytestmark = pytest.mark.integration
__all__ = ["redis_sentinel", "redis_sentinel_session"]  # fixtures


def test_from_sentinel_and_the_url_form_find_the_primary_and_say_which_it_is(
    redis_sentinel: RedisSentinelSet, telemetry: CapturedTelemetry,
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    primary = redis_sentinel.data_nodes[0]
    key = f"ic:test:{uuid.uuid4().hex[:8]}"
    caplog.set_level(logging.INFO, "instrumented_clients.redis")
    with ResilientRedis.from_sentinel(redis_sentinel.sentinel_addresses(), SERVICE,
                                      name="sentinel", telemetry=telemetry) as client:
        assert client.set(key, "v") is True
        health = client.health()
        assert health["service"] == SERVICE
        assert health["primary"] == health["address"] == f"127.0.0.1:{primary.port}"
    assert f"primary is 127.0.0.1:{primary.port}" in caplog.text
    monkeypatch.setenv("REDIS_URL", redis_sentinel.sentinel_url())
    with ResilientRedis.from_env(name="sentinel-env", telemetry=telemetry) as from_env:
        assert from_env.get(key) == b"v"
    with pytest.raises(ConfigError) as raised:
        ResilientRedis("redis+sentinel://:secret-pw@127.0.0.1/ic-primary")  # no port
    assert "url" in str(raised.value)
    assert "secret-pw" not in str(raised.value)


def test_a_write_refused_with_readonly_by_a_demoted_primary_is_retried_on_the_new_one(
    redis_sentinel: RedisSentinelSet, telemetry: CapturedTelemetry,
) -> None:
    # Sentinel itself kills the clients of a primary it demotes, so this switch-over is done by
    # hand, as an operator would: promote the replica, demote the primary (its clients stay
    # connected and get READONLY), then point the Sentinels at the new primary.
    old, new = redis_sentinel.data_nodes
    key = f"ic:test:{uuid.uuid4().hex[:8]}"
    retried = RetryLog()
    policy = default_policy(200, 0.02, 0.05).replace(on_retry=retried)
    with ResilientRedis.from_sentinel(redis_sentinel.sentinel_addresses(), SERVICE,
                                      name="readonly", telemetry=telemetry, policy=policy,
                                      breaker=False) as client, \
            redis.Redis(port=old.port) as old_admin, redis.Redis(port=new.port) as new_admin:
        assert client.incr(key) == 1
        assert client.wait(1, 5000) == 1  # the replica has it before it is promoted
        new_admin.replicaof("NO", "ONE")
        old_admin.replicaof("127.0.0.1", new.port)
        write = Background(lambda: client.incr(key))
        wait_until(lambda: len(retried.errors) >= 2, 10)  # refused, retried, refused again
        for sentinel in redis_sentinel.sentinels:
            redis_sentinel.cli(sentinel, "SENTINEL", "REMOVE", SERVICE)
            redis_sentinel.cli(sentinel, "SENTINEL", "MONITOR", SERVICE, "127.0.0.1",
                               str(new.port), "2")
        done = write.join(30)
        assert done.error is None
        assert done.result == 2  # applied once, on the new primary
        assert new_admin.get(key) == b"2"
        assert client.health()["primary"] == f"127.0.0.1:{new.port}"
    assert all(is_demoted_primary(error) for error in retried.errors[:2])
    assert isinstance(retried.errors[0], rx.ConnectionError)  # redis-py's shape of READONLY
    assert telemetry.value("operation_duration_seconds_count", system="redis", client="readonly",
                           operation="incrby", outcome="success_after_retry") == 1


@pytest.mark.parametrize("fault", ["sentinel failover", "kill -9"])
def test_unique_id_writes_through_a_failover(
    fault: str, redis_sentinel: RedisSentinelSet, telemetry: CapturedTelemetry,
    record_property: pytest.RecordProperty,
) -> None:
    old, new = redis_sentinel.data_nodes
    run = uuid.uuid4().hex[:8]
    retried = RetryLog()
    # Attempts enough to outlast the failover (about 2 s after a kill), no breaker: the figures
    # are those of the write rule.
    policy = default_policy(60, 0.05, 0.25).replace(on_retry=retried)

    def make(name: str) -> ResilientRedis:
        return ResilientRedis.from_sentinel(
            redis_sentinel.sentinel_addresses(), SERVICE, name=name, telemetry=telemetry,
            policy=policy, breaker=False, socket_timeout=2.0)

    client, waiting, reading = make("failover"), make("failover-wait"), make("failover-read")

    def confirm(_key: str) -> int:
        return int(waiting.wait(1, 50))

    plain = Writer("plain", lambda i: f"ic:ids:{run}:plain")
    waited = Writer("wait", lambda i: f"ic:ids:{run}:wait", confirm=confirm)
    reader = Reader(f"ic:ids:{run}:plain")
    with client, waiting, reading, \
            Workload([(plain, client), (waited, waiting)], (reader, reading)) as workload:
        wait_until(lambda: workload.acked_since(0) >= 100, 20)
        fault_at = time.monotonic()
        if fault == "kill -9":
            redis_sentinel.kill(old)
        else:
            redis_sentinel.failover()
        wait_until(lambda: redis_sentinel.primary() == new, 30)
        moved_at = time.monotonic()
        # Writes go on on the new primary: the clients found it (their connections to the old
        # one cut, or refused), and keep writing there.
        wait_until(lambda: client.health()["primary"] == f"127.0.0.1:{new.port}"
                   and workload.acked_since(moved_at) >= 50, 40)
        reads_before = len(reader.ok)
        wait_until(lambda: len(reader.ok) > reads_before + 20, 10)  # reads continue
        assert client.state is ConnectionState.CONNECTED
    with redis.Redis(port=new.port) as admin:
        def present(key: str) -> set[str]:
            return {member.decode() for member in admin.smembers(key)}

        shown = [figures(plain, present, fault_at), figures(waited, present, fault_at)]
    for label, result in zip(("without WAIT", "with WAIT 1"), shown, strict=True):
        record_property(f"sentinel {fault} {label}", result.line(label))
        print(f"sentinel {fault}:", result.line(label))
        assert result.applied_twice == 0
        assert result.recovery_seconds < 30
    assert shown[1].lost == 0  # confirmed by WAIT 1: the promoted replica had it
    # The clients of the old primary were cut (Sentinel kills them when it demotes it; kill -9
    # did); the writes that had not been sent were retried on the new primary.
    assert any(classify(error) is ErrorCategory.CONNECTION for error in retried.errors)
