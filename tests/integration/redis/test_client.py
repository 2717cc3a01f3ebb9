"""ResilientRedis against the real Redis: commands, pipelines, telemetry, auth, legacy names."""

from __future__ import annotations

import pytest
import redis
from redis import exceptions as rx

from instrumented_clients import ConnectionState, ErrorCategory
from instrumented_clients.redis import (
    RedisConnectionRetry,
    ResilientRedis,
    classify,
    default_policy,
    with_redis_retry,
)
from instrumented_clients.testing import CapturedTelemetry, FakeClock, FaultProxy

from .helpers import URL, admin, free_port, outcome, prefix, proxy, retries

pytestmark = pytest.mark.integration
__all__ = ["admin", "prefix", "proxy"]  # fixtures


def test_commands_and_pipelines_run_through_guards(
    prefix: str, telemetry: CapturedTelemetry
) -> None:
    with ResilientRedis(URL, name="basic", telemetry=telemetry) as client:
        assert client.set(f"{prefix}:a", "1") is True
        assert client.get(f"{prefix}:a") == b"1"
        client.hset(f"{prefix}:h", mapping={"f": "v"})
        assert client.hgetall(f"{prefix}:h") == {b"f": b"v"}
        assert client.execute_command("CLIENT ID") > 0
        with client.pipeline() as pipe:
            pipe.incr(f"{prefix}:n").incr(f"{prefix}:n")
            assert pipe.execute() == [1, 2]
        with client.pipeline(transaction=False) as pipe:
            pipe.get(f"{prefix}:a").get(f"{prefix}:n")
            assert pipe.execute() == [b"1", b"2"]

        def add_one(pipe: redis.client.Pipeline) -> None:
            current = int(pipe.get(f"{prefix}:n") or 0)  # immediate, under WATCH
            pipe.multi()
            pipe.set(f"{prefix}:n", current + 1)

        assert client.transaction(add_one, f"{prefix}:n") == [True]
        assert client.get(f"{prefix}:n") == b"3"
        assert client.state is ConnectionState.CONNECTED
        assert client.health()["connected"] is True
        assert client.check() is True
    for operation in ("set", "get", "hset", "hgetall", "other", "incr"):
        if operation != "incr":
            assert outcome(telemetry, "basic", operation, "success") >= 1, operation
    assert outcome(telemetry, "basic", "transaction", "success") == 2
    assert outcome(telemetry, "basic", "pipeline", "success") == 1
    assert outcome(telemetry, "basic", "incr", "success") == 0  # queued in pipelines, not run


def test_spans_carry_semantic_attributes_and_no_keys(
    prefix: str, telemetry: CapturedTelemetry
) -> None:
    secret_key = f"{prefix}:customer-42"
    with ResilientRedis(URL, name="spans", telemetry=telemetry) as client:
        client.set(secret_key, "private-value")
        client.get(secret_key)
        pipe = client.pipeline()
        pipe.get(secret_key)
        pipe.set(secret_key, "private-value")
        pipe.execute()
        client.execute_command("OBJECT", "ENCODING", secret_key)  # not a labelled command
    spans = {span.name: span for span in telemetry.spans()}
    assert {"SET", "GET", "MULTI", "OBJECT"} <= set(spans)
    assert spans["MULTI"].attributes["db.operation.batch.size"] == 2
    assert spans["OBJECT"].attributes["db.operation.name"] == "OBJECT"
    attributes = dict(spans["GET"].attributes)
    assert attributes["db.system.name"] == "redis"
    assert attributes["db.operation.name"] == "GET"
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["server.port"] == 6379
    for span in telemetry.spans():
        text = repr(dict(span.attributes)) + repr([event.attributes for event in span.events])
        assert "customer-42" not in text
        assert "private-value" not in text


def test_wrong_password_one_attempt_auth_error_no_backoff_no_password(
    admin: redis.Redis, telemetry: CapturedTelemetry
) -> None:
    import uuid

    user = f"ic_test_{uuid.uuid4().hex[:10]}"
    password = f"right-{uuid.uuid4().hex}"
    wrong = f"wrong-{uuid.uuid4().hex}"
    admin.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["ic:*"],
                      commands=["+@all"])
    clock = FakeClock()
    try:
        with ResilientRedis(f"redis://{user}:{wrong}@127.0.0.1:6379/0", name="auth",
                            telemetry=telemetry, clock=clock) as client:
            with pytest.raises(rx.AuthenticationError) as raised:
                client.get("ic:any")
            health = client.health()
        with ResilientRedis(f"redis://{user}:{password}@127.0.0.1:6379/0", name="auth-ok",
                            telemetry=telemetry) as good:
            assert good.ping() is True  # the user works: the failure was the password
    finally:
        admin.acl_deluser(user)
    assert classify(raised.value) is ErrorCategory.AUTH
    assert clock.sleeps == []  # no backoff loop
    assert retries(telemetry, "auth", "get") == 0
    assert outcome(telemetry, "auth", "get", "failure") == 1
    assert health["state"] == "failed"
    for text in (str(raised.value), repr(raised.value), str(health), telemetry.scrape()):
        assert wrong not in text
        assert password not in text


def test_redis_py_retries_are_off_so_one_failure_is_exactly_our_attempts(
    telemetry: CapturedTelemetry,
) -> None:
    # The proxy accepts, then finds nothing upstream and resets: each connection attempt is one
    # accept. redis-py's default (Retry with 10 retries, in connect() and around the command)
    # would multiply this; we expect exactly max_attempts.
    with FaultProxy("127.0.0.1", free_port()) as dead:
        policy = default_policy(3, 0.01, 0.02)
        with ResilientRedis(dead.url(URL), name="attempts", policy=policy,
                            telemetry=telemetry, failure_threshold=100) as client:
            with pytest.raises(rx.ConnectionError):
                client.get("ic:any")
            assert dead.accepted == 3
            with pytest.raises(rx.ConnectionError):
                client.set("ic:any", "v")  # a write: nothing was sent, so retried too
            assert dead.accepted == 6
            assert client.state is ConnectionState.FAILED
    assert retries(telemetry, "attempts", "get") == 2
    assert outcome(telemetry, "attempts", "get", "failure_after_retry") == 1


def test_compat_names_against_real_redis(prefix: str, telemetry: CapturedTelemetry) -> None:
    handler = RedisConnectionRetry(max_retries=3, telemetry=telemetry)
    client = handler.connect_with_retry(lambda: redis.Redis(host="127.0.0.1", port=6379),
                                        "redis-cache")
    try:
        assert client.connection_pool.connection_kwargs["retry"].get_retries() == 0
        client.set(f"{prefix}:legacy", "v")
        assert handler.execute_with_retry(lambda: client.get(f"{prefix}:legacy"),
                                          "get my_key") == b"v"

        @with_redis_retry(max_retries=2, base_delay=0.01, telemetry=telemetry)
        def get_cached_value(key: str) -> bytes | None:
            return client.get(key)  # type: ignore[return-value]

        assert get_cached_value(f"{prefix}:legacy") == b"v"
    finally:
        client.close()
    assert outcome(telemetry, "redis", "connect", "success") == 1
    assert outcome(telemetry, "redis", "execute", "success") == 1


def test_compat_connect_with_retry_gives_up_on_refused_port(telemetry: CapturedTelemetry) -> None:
    clock = FakeClock()
    handler = RedisConnectionRetry(max_retries=2, clock=clock, telemetry=telemetry)
    port = free_port()
    with pytest.raises(rx.ConnectionError):
        handler.connect_with_retry(lambda: redis.Redis(host="127.0.0.1", port=port), "down")
    assert len(clock.sleeps) == 2
    assert outcome(telemetry, "redis", "connect", "failure_after_retry") == 1


def test_compat_connect_with_retry_does_not_multiply_a_resilient_clients_attempts(
    telemetry: CapturedTelemetry,
) -> None:
    clock = FakeClock()
    handler = RedisConnectionRetry(max_retries=1, clock=clock, telemetry=telemetry)
    made: list[ResilientRedis] = []

    def connect() -> ResilientRedis:
        made.append(ResilientRedis(dead.url(URL), name="adopted", telemetry=telemetry))
        return made[-1]

    with FaultProxy("127.0.0.1", free_port()) as dead:
        with pytest.raises(rx.ConnectionError):
            handler.connect_with_retry(connect, "redis-cache")
        assert dead.accepted == 2  # 2 attempts of one PING each, not 2 x 4
    assert all(client.state is ConnectionState.CLOSED for client in made)


def test_pool_gauges_read_the_pool_and_checkouts_are_timed(
    prefix: str, telemetry: CapturedTelemetry
) -> None:
    def gauge(name: str, **labels: str) -> float | None:
        return telemetry.value(name, system="redis", client="pooled", **labels)

    with ResilientRedis(URL, name="pooled", telemetry=telemetry, max_connections=7) as client:
        assert gauge("pool_max_connections") == 7
        assert gauge("pool_connections", state="idle") == 0
        client.set(f"{prefix}:p", "1")
        assert gauge("pool_connections", state="idle") == 1
        assert gauge("pool_connections", state="in_use") == 0
        connection = client.connection_pool.get_connection()
        try:
            assert gauge("pool_connections", state="in_use") == 1
            assert gauge("pool_connections", state="idle") == 0
        finally:
            client.connection_pool.release(connection)
        # The default pool never makes a caller wait: its check-out is not timed.
        assert "get_connection" not in vars(client.connection_pool)
        assert gauge("pool_wait_seconds_count") == 0
    assert gauge("pool_max_connections") == 0
    assert gauge("pool_connections", state="idle") == 0


def test_a_callers_pool_gets_gauges_but_is_not_patched(telemetry: CapturedTelemetry) -> None:
    pool = redis.ConnectionPool.from_url(URL, max_connections=3)
    try:
        with ResilientRedis(connection_pool=pool, name="theirs", telemetry=telemetry) as client:
            assert client.ping() is True
            assert "get_connection" not in vars(pool)
            assert telemetry.value("pool_max_connections", system="redis",
                                   client="theirs") == 3
            assert telemetry.value("pool_connections", system="redis", client="theirs",
                                   state="idle") == 1
    finally:
        pool.disconnect()


def test_a_blocking_pool_is_adopted_with_redis_py_retries_off(
    prefix: str, telemetry: CapturedTelemetry
) -> None:
    pool = redis.BlockingConnectionPool.from_url(URL, max_connections=2, timeout=5)
    try:
        with ResilientRedis(connection_pool=pool, name="blocking", telemetry=telemetry) as client:
            client.set(f"{prefix}:k", "v")
            assert client.get(f"{prefix}:k") == b"v"
            connection = pool.get_connection()
            try:
                assert connection.retry.get_retries() == 0
            finally:
                pool.release(connection)
            assert telemetry.value("pool_max_connections", system="redis",
                                   client="blocking") == 2
            # A blocking pool can make a caller wait: every check-out is timed (set, get, and
            # the one above).
            assert telemetry.value("pool_wait_seconds_count", system="redis",
                                   client="blocking") == 3
            client.delete(f"{prefix}:k")
    finally:
        pool.disconnect()


def test_a_closed_client_is_used_again_as_redis_py_allows(
    prefix: str, telemetry: CapturedTelemetry
) -> None:
    # redis.Redis.close() releases the connections; the next command connects again.
    with ResilientRedis(URL, name="reused", telemetry=telemetry) as client:
        assert client.set(f"{prefix}:k", "1") is True
    assert client.state is ConnectionState.CLOSED
    assert telemetry.value("connection_state", system="redis", client="reused",
                           state="closed") == 1
    assert telemetry.value("pool_connections", system="redis", client="reused",
                           state="idle") == 0  # released
    assert client.get(f"{prefix}:k") == b"1"
    assert client.state is ConnectionState.CONNECTED
    for state in ("closed", "disconnected", "connecting", "failed"):  # never shown as down
        assert telemetry.value("connection_state", system="redis", client="reused",
                               state=state) == 0, state
    assert telemetry.value("pool_connections", system="redis", client="reused",
                           state="idle") == 1  # the gauges follow the pool again
    assert telemetry.value("reconnect_attempts_total", system="redis", client="reused",
                           outcome="success") == 0  # reuse after close() is no reconnect
    client.close()
    client.close()
    assert client.state is ConnectionState.CLOSED


def test_health_and_the_pool_gauges_read_a_blocking_pool_alike(
    prefix: str, telemetry: CapturedTelemetry
) -> None:
    pool = redis.BlockingConnectionPool.from_url(URL, max_connections=3, timeout=5)

    def gauges() -> dict[str, float | None]:
        labels = {"system": "redis", "client": "blocking-health"}
        return {"in_use": telemetry.value("pool_connections", state="in_use", **labels),
                "idle": telemetry.value("pool_connections", state="idle", **labels),
                "max": telemetry.value("pool_max_connections", **labels)}

    try:
        with ResilientRedis(connection_pool=pool, name="blocking-health",
                            telemetry=telemetry) as client:
            client.set(f"{prefix}:k", "v")
            assert client.health()["pool"] == {"in_use": 0, "idle": 1, "max": 3} == gauges()
            held = pool.get_connection()
            try:
                assert client.health()["pool"] == {"in_use": 1, "idle": 0, "max": 3} == gauges()
            finally:
                pool.release(held)
            client.delete(f"{prefix}:k")
    finally:
        pool.disconnect()
