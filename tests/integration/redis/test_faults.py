"""Faults against the real Redis: killed and cut connections, ambiguous writes, the breaker,
pipelines cut mid-execution, blocking pops."""

from __future__ import annotations

import select
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from redis import exceptions as rx

from instrumented_clients import CircuitOpenError, ConnectionState
from instrumented_clients.redis import ResilientRedis, default_policy
from instrumented_clients.testing import CapturedTelemetry, FaultProxy, wait_until

from .helpers import Background, metric, outcome, retries
from .topologies import (
    Target,
    redis_cluster,
    redis_cluster_session,
    target,
    target_admin,
    target_prefix,
    target_proxy,
)

pytestmark = pytest.mark.integration
__all__ = ["redis_cluster", "redis_cluster_session", "target", "target_admin", "target_prefix",
           "target_proxy"]  # fixtures

FAST = default_policy(4, 0.01, 0.05)  # the default shape, with test-sized delays


# Every test runs on a single server and on the cluster client (see .topologies.Target).
@pytest.fixture
def admin(target_admin: redis.Redis) -> redis.Redis:
    return target_admin


@pytest.fixture
def prefix(target_prefix: str) -> str:
    return target_prefix


@pytest.fixture
def proxy(target_proxy: FaultProxy) -> FaultProxy:
    return target_proxy


@pytest.fixture
def client(target: Target, telemetry: CapturedTelemetry) -> Iterator[ResilientRedis]:
    with target.make(target.url, name="faults", telemetry=telemetry,
                     policy=FAST) as redis_client:
        yield redis_client


@pytest.fixture
def proxied(target: Target, proxy: FaultProxy,
            telemetry: CapturedTelemetry) -> Iterator[ResilientRedis]:
    with target.make(proxy.url(target.url), name="proxied", telemetry=telemetry,
                     policy=FAST) as redis_client:
        yield redis_client


@pytest.fixture
def idle_closed(target: Target) -> Callable[[ResilientRedis], bool]:
    def closed(client: ResilientRedis) -> bool:
        """True once the kernel has the server's FIN/RST for the pooled idle connections."""
        connections = list(target.pool_of(client)._available_connections)
        sockets = [c._sock for c in connections if c._sock is not None]
        return bool(sockets) and all(select.select([s], [], [], 0)[0] for s in sockets)

    return closed


def test_client_kill_next_read_succeeds_after_a_counted_retry(
    client: ResilientRedis, admin: redis.Redis, prefix: str, telemetry: CapturedTelemetry
) -> None:
    admin.set(f"{prefix}:k", "v")
    assert client.get(f"{prefix}:k") == b"v"
    client_id = client.client_id()
    assert admin.client_kill_filter(_id=client_id) == 1
    assert client.get(f"{prefix}:k") == b"v"
    assert client.client_id() != client_id
    assert metric(telemetry, "retries_total", "faults", operation="get",
                  error_type="connection") == 1
    assert outcome(telemetry, "faults", "get", "success_after_retry") == 1
    assert metric(telemetry, "reconnect_attempts_total", "faults", outcome="success") == 1
    states = [state for _, state in client._tracker.machine.history]
    assert states[-3:] == [ConnectionState.DISCONNECTED, ConnectionState.CONNECTING,
                           ConnectionState.CONNECTED]


def test_client_kill_then_write_is_retried_because_nothing_was_sent(
    client: ResilientRedis, admin: redis.Redis, prefix: str, telemetry: CapturedTelemetry,
    idle_closed: Callable[[ResilientRedis], bool],
) -> None:
    client.ping()
    admin.client_kill_filter(_id=client.client_id())
    wait_until(lambda: idle_closed(client), 5)
    assert client.incr(f"{prefix}:n") == 1
    assert admin.get(f"{prefix}:n") == b"1"  # applied once
    assert outcome(telemetry, "faults", "incrby", "success_after_retry") == 1


def test_proxy_cut_between_commands_read_and_write_retried(
    proxied: ResilientRedis, proxy: FaultProxy, admin: redis.Redis, prefix: str,
    telemetry: CapturedTelemetry, idle_closed: Callable[[ResilientRedis], bool],
) -> None:
    proxied.set(f"{prefix}:k", "v")
    assert proxy.cut() == 1
    wait_until(lambda: idle_closed(proxied), 5)
    assert proxied.get(f"{prefix}:k") == b"v"
    assert retries(telemetry, "proxied", "get") == 1
    proxy.cut()
    wait_until(lambda: idle_closed(proxied), 5)
    assert proxied.incr(f"{prefix}:n") == 1
    assert admin.get(f"{prefix}:n") == b"1"
    assert retries(telemetry, "proxied", "incrby") == 1
    assert proxied.health()["reconnect_attempts"] == 2


def cut_after_applied(
    proxy: FaultProxy, applied: Callable[[], bool], call: Callable[[], object]
) -> Background:
    """Run ``call`` through a slow proxy; cut the link once the server has applied it but
    before the reply reaches the client: the failure is after sending, i.e. ambiguous."""
    proxy.add_latency(1.0)
    background = Background(call)
    wait_until(applied, 10)
    proxy.pass_through()
    proxy.cut()
    return background.join()


def test_write_cut_after_sending_is_not_retried(
    proxied: ResilientRedis, proxy: FaultProxy, admin: redis.Redis, prefix: str,
    telemetry: CapturedTelemetry,
) -> None:
    key = f"{prefix}:n"
    proxied.ping()
    done = cut_after_applied(proxy, lambda: admin.get(key) == b"1", lambda: proxied.incr(key))
    assert isinstance(done.error, rx.ConnectionError)
    assert admin.get(key) == b"1"  # applied once, never twice
    assert retries(telemetry, "proxied", "incrby") == 0
    assert outcome(telemetry, "proxied", "incrby", "failure") == 1


def test_write_cut_after_sending_is_retried_when_opted_in(
    proxied: ResilientRedis, proxy: FaultProxy, admin: redis.Redis, prefix: str,
    telemetry: CapturedTelemetry,
) -> None:
    key = f"{prefix}:s"
    proxied.ping()

    def idempotent_set() -> bool:
        with proxied.idempotent():
            return bool(proxied.set(key, "v"))

    done = cut_after_applied(proxy, lambda: admin.get(key) == b"v", idempotent_set)
    assert done.error is None
    assert done.result is True
    assert retries(telemetry, "proxied", "set") == 1
    assert outcome(telemetry, "proxied", "set", "success_after_retry") == 1


def test_read_cut_after_sending_is_retried(
    proxied: ResilientRedis, proxy: FaultProxy, admin: redis.Redis, prefix: str,
    telemetry: CapturedTelemetry,
) -> None:
    key = f"{prefix}:r"
    admin.set(key, "v")
    client_id = str(proxied.client_id())

    def server_ran_get() -> bool:
        return any(c["id"] == client_id and c["cmd"] == "get" for c in admin.client_list())

    done = cut_after_applied(proxy, server_ran_get, lambda: proxied.get(key))
    assert done.error is None
    assert done.result == b"v"
    assert outcome(telemetry, "proxied", "get", "success_after_retry") == 1


@pytest.mark.parametrize("transaction", [True, False])
def test_pipeline_of_100_incr_cut_mid_execution_is_not_applied_twice(
    transaction: bool, proxied: ResilientRedis, proxy: FaultProxy, admin: redis.Redis,
    prefix: str, telemetry: CapturedTelemetry,
) -> None:
    key = f"{prefix}:ctr"
    proxied.ping()

    def run_pipeline() -> list[object]:
        pipe = proxied.pipeline(transaction=transaction)
        for _ in range(100):
            pipe.incr(key)
        return pipe.execute()

    done = cut_after_applied(proxy, lambda: admin.get(key) == b"100", run_pipeline)
    assert isinstance(done.error, rx.ConnectionError)
    assert admin.get(key) == b"100"  # all or nothing, and never 200
    notes = getattr(done.error, "__notes__", [])
    assert any("failed part-way" in note for note in notes) is (not transaction)
    operation = "transaction" if transaction else "pipeline"
    assert retries(telemetry, "proxied", operation) == 0
    assert outcome(telemetry, "proxied", operation, "failure") == 1


def test_pipeline_on_a_dead_pooled_connection_is_retried_and_applied_once(
    target: Target, proxied: ResilientRedis, proxy: FaultProxy, admin: redis.Redis, prefix: str,
    telemetry: CapturedTelemetry, idle_closed: Callable[[ResilientRedis], bool],
) -> None:
    key = f"{prefix}:ctr"
    proxied.ping()
    proxy.cut()
    wait_until(lambda: idle_closed(proxied), 5)
    pipe = proxied.pipeline()
    for _ in range(100):
        pipe.incr(key)
    assert pipe.execute()[-1] == 100
    assert admin.get(key) == b"100"
    # pipeline() is MULTI/EXEC by default on one server, a plain pipeline on a cluster (redis-py's
    # defaults: a cluster's batch may span slots).
    operation = "pipeline" if target.kind == "cluster" else "transaction"
    assert outcome(telemetry, "proxied", operation, "success_after_retry") == 1


def test_blocking_pop_is_never_retried_after_sending(
    proxied: ResilientRedis, proxy: FaultProxy, admin: redis.Redis, prefix: str,
    telemetry: CapturedTelemetry,
) -> None:
    key = f"{prefix}:queue"
    proxied.ping()

    def pop() -> object:
        with proxied.idempotent():  # opt-in does not cover blocking commands
            return proxied.blpop([key], timeout=3)

    background = Background(pop)
    wait_until(lambda: any(c.get("cmd") == "blpop" for c in admin.client_list()), 10)
    proxy.cut()
    done = background.join()
    assert isinstance(done.error, rx.ConnectionError)
    assert retries(telemetry, "proxied", "blpop") == 0
    assert outcome(telemetry, "proxied", "blpop", "failure") == 1


def test_breaker_opens_fails_fast_then_half_open_probe_closes_it(
    target: Target, proxy: FaultProxy, admin: redis.Redis, prefix: str,
    telemetry: CapturedTelemetry,
) -> None:
    key = f"{prefix}:k"
    admin.set(key, "v")
    with target.make(proxy.url(target.url), name="breaker", telemetry=telemetry,
                        policy=default_policy(2, 0.01, 0.02), failure_threshold=3,
                        recovery_timeout=1.0) as client:
        assert client.get(key) == b"v"
        proxy.refuse()
        raised: list[BaseException] = []
        for _ in range(10):
            try:
                client.get(key)
            except (rx.ConnectionError, CircuitOpenError) as error:
                raised.append(error)
            if isinstance(raised[-1], CircuitOpenError):
                break
        assert isinstance(raised[-1], CircuitOpenError)
        assert isinstance(raised[0], rx.ConnectionError)
        with pytest.raises(CircuitOpenError):
            client.get(key)  # fails fast: no connection attempt
        health = client.health()
        assert health["circuit_breaker_open"] is True
        assert health["state"] == "failed"
        assert health["last_error"] is not None
        rejections = metric(telemetry, "circuit_breaker_rejections_total", "breaker")
        assert rejections >= 2
        assert outcome(telemetry, "breaker", "get", "rejected") == rejections

        proxy.pass_through()

        def recovered() -> bool:
            try:
                return client.get(key) == b"v"
            except (CircuitOpenError, rx.ConnectionError):
                return False

        wait_until(recovered, 15, interval=0.1)
        assert client.health()["circuit_breaker"] == "closed"
        assert client.state is ConnectionState.CONNECTED
    for from_state, to_state in (("closed", "open"), ("open", "half_open"),
                                 ("half_open", "closed")):
        assert metric(telemetry, "circuit_breaker_transitions_total", "breaker",
                      from_state=from_state, to_state=to_state) >= 1
    assert metric(telemetry, "reconnect_attempts_total", "breaker", outcome="success") == 1


def test_idle_health_check_on_a_dead_link_lets_a_write_be_retried(
    target: Target, proxy: FaultProxy, admin: redis.Redis, prefix: str,
    telemetry: CapturedTelemetry,
) -> None:
    # A silent dead link (blackhole): the idle-health-check PING, sent before the command, times
    # out. Nothing of the INCR was sent, so it is retried on a fresh connection, and applied once.
    key = f"{prefix}:n"
    with target.make(proxy.url(target.url), name="idle", telemetry=telemetry, policy=FAST,
                        health_check_interval=0.05, socket_timeout=0.5,
                        socket_connect_timeout=0.5) as client:
        client.ping()
        connection = target.pool_of(client)._available_connections[0]
        wait_until(lambda: time.monotonic() > connection.next_health_check, 5)
        proxy.blackhole()
        background = Background(lambda: client.incr(key))
        wait_until(lambda: retries(telemetry, "idle", "incrby") >= 1, 10)
        proxy.pass_through()
        done = background.join()
    assert done.error is None
    assert done.result == 1
    assert admin.get(key) == b"1"
    assert outcome(telemetry, "idle", "incrby", "success_after_retry") == 1


def test_concurrent_reads_survive_cuts(
    proxied: ResilientRedis, proxy: FaultProxy, admin: redis.Redis, prefix: str,
    telemetry: CapturedTelemetry,
) -> None:
    import threading

    key = f"{prefix}:shared"
    admin.set(key, "v")
    stop = threading.Event()
    errors: list[BaseException] = []
    reads = [0]

    def reader() -> None:
        while not stop.is_set():
            try:
                assert proxied.get(key) == b"v"
                reads[0] += 1
            except BaseException as error:
                errors.append(error)
                return

    threads = [threading.Thread(target=reader, daemon=True) for _ in range(6)]
    for thread in threads:
        thread.start()
    for _ in range(3):
        wait_until(lambda: proxy.connections > 0, 5)
        before = reads[0]
        wait_until(lambda before=before: reads[0] > before + 50, 10)
        proxy.cut()
    wait_until(lambda: reads[0] > 0 and retries(telemetry, "proxied", "get") >= 1, 10)
    stop.set()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert proxied.state is ConnectionState.CONNECTED
    assert outcome(telemetry, "proxied", "get", "success_after_retry") >= 1
    assert outcome(telemetry, "proxied", "get", "failure_after_retry") == 0
