"""ResilientRedisCluster on a Redis Cluster of our own (three primaries, three replicas): the
ResilientRedis shape, redis-py's retries off, and unique-id writes while a primary is killed."""

from __future__ import annotations

import logging
import time
import uuid

import pytest
from redis import exceptions as rx
from redis.cluster import RedisCluster

from instrumented_clients import ConfigError, ConnectionState, ErrorCategory
from instrumented_clients.redis import classify, default_policy
from instrumented_clients.redis.cluster import ResilientRedisCluster
from instrumented_clients.redis.errors import is_refused_by_server
from instrumented_clients.testing import CapturedTelemetry, wait_until
from scripts.local_clusters.redis_servers import RedisClusterSet

from .failover import Reader, RetryLog, Workload, Writer, figures
from .helpers import Background, outcome, retries
from .topologies import redis_cluster, redis_cluster_session

pytestmark = pytest.mark.integration
__all__ = ["redis_cluster", "redis_cluster_session"]  # fixtures


def test_commands_and_pipelines_over_every_primary_with_health_naming_them(
    redis_cluster: RedisClusterSet, telemetry: CapturedTelemetry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = uuid.uuid4().hex[:8]
    keys = [f"ic:test:{run}:{i}" for i in range(30)]
    monkeypatch.setenv("REDIS_URL", redis_cluster.startup_url())
    with ResilientRedisCluster.from_env(name="cluster", telemetry=telemetry) as client:
        assert client.check() is True  # the first call loads the slot map
        assert client.retry.get_retries() == 0  # redis-py's own retries are off
        assert {client.get_node_from_key(key).name for key in keys} == {
            node.name for node in client.get_primaries()}  # the keys cover every primary
        for key in keys:
            assert client.set(key, "1") is True
        pipe = client.pipeline()
        for key in keys:
            pipe.incr(key)
        assert pipe.execute() == [2] * len(keys)
        assert client.mget(keys[:1]) == [b"2"]
        with client.pipeline(transaction=True) as tx:  # one slot: MULTI/EXEC on its node
            tx.incr(f"{{{run}}}:a").incr(f"{{{run}}}:a")
            assert tx.execute() == [1, 2]
        health = client.health()
        assert sorted(health["primaries"]) == sorted(
            f"127.0.0.1:{node.port}" for node in redis_cluster.primaries())
        assert health["state"] == "connected"
        assert client.check() is True
        client.delete(*keys[:1])
        for key in keys[1:]:
            client.delete(key)
        client.delete(f"{{{run}}}:a")
    # redis-py runs a multi-key command (MGET, DEL) as a pipeline of one command per slot: each
    # is one guarded pipeline, besides the one queued above.
    assert outcome(telemetry, "cluster", "pipeline", "success") == 1 + 1 + len(keys)
    assert outcome(telemetry, "cluster", "transaction", "success") == 1
    assert outcome(telemetry, "cluster", "set", "success") == len(keys)
    scrape = telemetry.scrape()
    for node in redis_cluster.nodes:
        assert str(node.port) not in scrape  # no node address in a label


def test_bad_startup_arguments_are_config_errors_before_io() -> None:
    with pytest.raises(ConfigError) as raised:
        ResilientRedisCluster("redis://:secret-pw@127.0.0.1:6379/3")  # db 3: not in a cluster
    assert "url" in str(raised.value)
    assert "secret-pw" not in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        ResilientRedisCluster(startup_nodes=[("127.0.0.1", 0)])
    assert "startup_nodes" in str(raised.value)


def test_built_while_every_node_is_down_then_recovers_when_the_cluster_comes_back(
    redis_cluster: RedisClusterSet, telemetry: CapturedTelemetry,
) -> None:
    redis_cluster.kill_all(wipe=False)  # data and nodes.conf kept: the same cluster restarts
    started = time.monotonic()
    client = ResilientRedisCluster(
        startup_nodes=[node.address for node in redis_cluster.nodes], name="cold",
        retry=default_policy(2, 0.01, 0.02), telemetry=telemetry, socket_connect_timeout=1)
    assert time.monotonic() - started < 1  # no I/O at construction
    assert client.health()["primaries"] == []
    with pytest.raises(rx.ConnectionError) as raised:
        client.set("ic:test:cold", "v")  # a write: nothing was sent, so it was retried
    assert classify(raised.value) is ErrorCategory.CONNECTION
    assert time.monotonic() - started < 5  # failed fast, not after redis-py's own retries
    assert outcome(telemetry, "cold", "set", "failure_after_retry") == 1
    assert retries(telemetry, "cold", "set") == 1
    assert client.check() is False
    assert client.state is not ConnectionState.CONNECTED

    for node in redis_cluster.nodes:
        redis_cluster.restart(node)
    wait_until(redis_cluster.healthy, 40)
    wait_until(client.check, 20)  # the same client: its slot map loaded by this call
    assert client.set("ic:test:cold", "v") is True
    assert client.get("ic:test:cold") == b"v"
    client.delete("ic:test:cold")
    assert client.state is ConnectionState.CONNECTED
    assert client.health()["primaries"] == sorted(
        f"127.0.0.1:{node.port}" for node in redis_cluster.primaries())
    client.close()


def test_unique_id_writes_over_all_slots_while_a_primary_is_killed(
    redis_cluster: RedisClusterSet, telemetry: CapturedTelemetry,
    record_property: pytest.RecordProperty, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "instrumented_clients.redis")
    run = uuid.uuid4().hex[:8]
    retried = RetryLog()
    policy = default_policy(80, 0.05, 0.25).replace(on_retry=retried)

    def make(name: str) -> ResilientRedisCluster:
        return ResilientRedisCluster(redis_cluster.startup_url(), name=name, telemetry=telemetry,
                                     policy=policy, breaker=False, socket_timeout=2.0,
                                     socket_connect_timeout=1.0)

    client, waiting, reading = make("kill"), make("kill-wait"), make("kill-read")

    def confirm(key: str) -> int:
        node = waiting.get_node_from_key(key)
        return int(waiting.execute_command("WAIT", 1, 50, target_nodes=node))

    plain = Writer("plain", lambda i: f"ic:ids:{run}:plain:{i % 256}")
    waited = Writer("wait", lambda i: f"ic:ids:{run}:wait:{i % 256}", confirm=confirm)
    reader = Reader(f"ic:ids:{run}:plain:0")
    # The victim is a primary the reader's key is not on: while the victim's replica is being
    # promoted, the cluster is down for every slot, and the reader's node says so.
    reader_port = int(reading.get_node_from_key(reader.key).port)
    victim = next(node for node in redis_cluster.primaries() if node.port != reader_port)
    with client, waiting, reading, \
            Workload([(plain, client), (waited, waiting)], (reader, reading)) as workload:
        wait_until(lambda: workload.acked_since(0) >= 300, 20)
        fault_at = time.monotonic()
        redis_cluster.kill(victim)
        # A replica takes the victim's slots, and writes go on to every slot.
        wait_until(lambda: len(redis_cluster.primaries()) == 3
                   and victim not in redis_cluster.primaries(), 30)
        moved_at = time.monotonic()
        wait_until(lambda: workload.acked_since(moved_at) >= 50, 40)
        reads_before = len(reader.ok)
        wait_until(lambda: len(reader.ok) > reads_before + 20, 10)  # reads continue
        assert client.state is ConnectionState.CONNECTED
        assert f"127.0.0.1:{victim.port}" not in client.health()["primaries"]
        assert f"127.0.0.1:{victim.port} (were " not in caplog.text
        assert "primaries are" in caplog.text
        assert "(were " in caplog.text  # the failover, logged
    alive = next(node for node in redis_cluster.nodes if redis_cluster.running(node))
    with RedisCluster(host="127.0.0.1", port=alive.port) as admin:
        def present(key: str) -> set[str]:
            return {member.decode() for member in admin.smembers(key)}

        shown = [figures(plain, present, fault_at), figures(waited, present, fault_at)]
    for label, result in zip(("without WAIT", "with WAIT 1"), shown, strict=True):
        record_property(f"cluster kill -9 {label}", result.line(label))
        print("cluster kill -9:", result.line(label))
        assert result.applied_twice == 0
        assert result.recovery_seconds < 30
    assert shown[1].lost == 0
    # The victim's slots refused connections (nothing sent: retried). Whether a write also met
    # CLUSTERDOWN while the replica was promoted depends on where the writer was in that window
    # (its retry classification is a unit test); it is reported, and every retried error was a
    # connection failure or a refusal by the server, never an answered command.
    assert any(classify(error) is ErrorCategory.CONNECTION for error in retried.errors)
    refused = [error for error in retried.errors if is_refused_by_server(error)]
    record_property("cluster kill -9 CLUSTERDOWN retried",
                    sum(isinstance(error, rx.ClusterDownError) for error in refused))
    assert all(classify(error) is ErrorCategory.CONNECTION or is_refused_by_server(error)
               for error in retried.errors), sorted({type(e).__name__ for e in retried.errors})


def test_a_write_refused_with_tryagain_during_a_slot_migration_is_retried(
    redis_cluster: RedisClusterSet, telemetry: CapturedTelemetry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A multi-key command on a slot being migrated, with one key moved and one not, is refused
    # with TRYAGAIN. redis-py re-sends it within the attempt; when its tries run out
    # ("TTL exhausted": no node ran it) the guard retries it, a write included, until the
    # migration is over and the command is redirected to the slot's new node.
    tag = uuid.uuid4().hex[:8]
    here, moved = f"{{{tag}}}:here", f"{{{tag}}}:moved"
    caplog.set_level(logging.DEBUG, "redis.cluster")
    with ResilientRedisCluster(redis_cluster.startup_url(), name="tryagain", telemetry=telemetry,
                               policy=default_policy(100, 0.02, 0.05)) as client:
        client.set(here, "1")
        client.set(moved, "2")
        slot = client.keyslot(here)
        by_port = {node.port: node for node in redis_cluster.nodes}
        source = by_port[int(client.get_node_from_key(here).port)]
        target = next(node for node in redis_cluster.primaries() if node != source)
        source_id, target_id = (redis_cluster.cli(node, "CLUSTER", "MYID").strip()
                                for node in (source, target))
        redis_cluster.cli(target, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", source_id)
        redis_cluster.cli(source, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", target_id)
        redis_cluster.cli(source, "MIGRATE", "127.0.0.1", str(target.port), moved, "0", "5000")
        write = Background(lambda: client.execute_command("MSET", here, "3", moved, "4"))
        wait_until(lambda: retries(telemetry, "tryagain", "mset") >= 1, 20)
        redis_cluster.cli(source, "MIGRATE", "127.0.0.1", str(target.port), here, "0", "5000")
        for node in redis_cluster.primaries():
            redis_cluster.cli(node, "CLUSTER", "SETSLOT", str(slot), "NODE", target_id)
        done = write.join(30)
        assert done.error is None
        assert done.result is True
        assert client.mget([here, moved]) == [b"3", b"4"]
    assert "TRYAGAIN" in caplog.text
    assert outcome(telemetry, "tryagain", "mset", "success_after_retry") == 1


def test_a_wrong_password_is_the_servers_auth_error_on_first_use_without_the_password(
    redis_cluster: RedisClusterSet, telemetry: CapturedTelemetry,
) -> None:
    user = f"ic_test_{uuid.uuid4().hex[:10]}"
    password, wrong = f"right-{uuid.uuid4().hex}", f"wrong-{uuid.uuid4().hex}"
    for node in redis_cluster.nodes:  # ACL users are per node
        redis_cluster.cli(node, "ACL", "SETUSER", user, "on", f">{password}", "~ic:*", "+@all")
    port = redis_cluster.nodes[0].port
    try:
        bad = ResilientRedisCluster(f"redis://{user}:{wrong}@127.0.0.1:{port}/0", name="cauth",
                                    telemetry=telemetry)
        with pytest.raises(rx.AuthenticationError) as raised:
            bad.get("ic:test:auth")  # the first call loads the slot map: refused
        with ResilientRedisCluster(f"redis://{user}:{password}@127.0.0.1:{port}/0",
                                   name="cauth-ok", telemetry=telemetry) as good:
            assert good.set("ic:test:auth", "v") is True  # the user works: it was the password
            good.delete("ic:test:auth")
    finally:
        for node in redis_cluster.nodes:
            redis_cluster.cli(node, "ACL", "DELUSER", user)
    assert classify(raised.value) is ErrorCategory.AUTH
    for text in (str(raised.value), repr(raised.value), telemetry.scrape()):
        assert wrong not in text
        assert password not in text
