"""AsyncResilientRedis against the real Redis: the sync client's fault scenarios, cancellation,
and no blocking call on the event loop (blockbuster) in every test."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
import redis
import redis.asyncio
from redis import exceptions as rx

from instrumented_clients import AsyncResilientRedis, CircuitOpenError, ConfigError, ErrorCategory
from instrumented_clients import ConnectionState as S
from instrumented_clients.redis import classify, default_policy
from instrumented_clients.testing import CapturedTelemetry, FakeClock, FaultProxy, await_until
from tests.integration.async_helpers import loop_lag, no_blocking

from .helpers import URL, admin, metric, outcome, prefix, proxy, retries

pytestmark = [pytest.mark.integration, pytest.mark.asyncio,
              pytest.mark.usefixtures("no_blocking", "loop_lag")]
__all__ = ["admin", "loop_lag", "no_blocking", "prefix", "proxy"]  # fixtures

FAST = default_policy(4, 0.01, 0.05)


@pytest_asyncio.fixture
async def client(telemetry: CapturedTelemetry) -> AsyncIterator[AsyncResilientRedis]:
    redis_client = AsyncResilientRedis(URL, name="async", telemetry=telemetry, policy=FAST)
    yield redis_client
    await redis_client.aclose()


@pytest_asyncio.fixture
async def proxied(proxy: FaultProxy,
                  telemetry: CapturedTelemetry) -> AsyncIterator[AsyncResilientRedis]:
    redis_client = AsyncResilientRedis(proxy.url(URL), name="aproxied", telemetry=telemetry,
                                       policy=FAST)
    yield redis_client
    await redis_client.aclose()


def idle_connections_at_eof(client: AsyncResilientRedis) -> bool:
    """True once the loop has seen the server close every idle pooled connection."""
    connections = list(client.connection_pool._available_connections)
    readers = [c._reader for c in connections if c._reader is not None]
    # A reset connection sets the reader's exception; a closed one its EOF.
    return bool(readers) and all(reader.at_eof() or reader.exception() is not None
                                 for reader in readers)


def server_runs(admin: redis.Redis, client_id: int, command: str) -> Callable[[], bool]:
    def running() -> bool:
        return any(c["id"] == str(client_id) and c["cmd"] == command
                   for c in admin.client_list())
    return running


async def cut_after_applied(proxy: FaultProxy, applied: Callable[[], bool],
                            call: Awaitable[Any]) -> asyncio.Task[Any]:
    """Await ``call`` through a slow proxy; cut the link once the server has applied it, before
    the reply reaches the client: the failure is after sending, i.e. ambiguous."""
    proxy.add_latency(1.0)
    task = asyncio.ensure_future(call)
    await await_until(applied, 10)
    proxy.pass_through()
    proxy.cut()
    await asyncio.wait([task], timeout=20)
    assert task.done()
    return task


async def test_commands_pipelines_health_and_close(
    client: AsyncResilientRedis, prefix: str, telemetry: CapturedTelemetry
) -> None:
    assert await client.set(f"{prefix}:k", "v") is True
    assert await client.get(f"{prefix}:k") == b"v"
    async with client.pipeline() as pipe:
        pipe.incr(f"{prefix}:n").incr(f"{prefix}:n").get(f"{prefix}:n")
        assert await pipe.execute() == [1, 2, b"2"]
    assert await client.check() is True
    health = client.health()
    assert health["state"] == "connected"
    assert health["pool"]["idle"] == 1
    assert outcome(telemetry, "async", "get", "success") == 1
    assert outcome(telemetry, "async", "transaction", "success") == 1
    assert telemetry.value("pool_connections", system="redis", client="async",
                           state="idle") == 1
    # The default pool never makes a caller wait: its check-out is not timed.
    assert telemetry.value("pool_wait_seconds_count", system="redis", client="async") == 0
    await client.aclose()
    assert client.state is S.CLOSED
    assert await client.get(f"{prefix}:k") == b"v"  # usable again, as redis-py's client is
    assert client.state is S.CONNECTED
    await client.close()
    assert client.state is S.CLOSED


async def test_a_blocking_pool_times_the_wait_for_a_free_connection(
    prefix: str, telemetry: CapturedTelemetry
) -> None:
    pool = redis.asyncio.BlockingConnectionPool.from_url(URL, max_connections=1, timeout=5)
    client = AsyncResilientRedis(connection_pool=pool, name="ablocking", telemetry=telemetry)
    try:
        held = await pool.get_connection()
        waiting = asyncio.create_task(client.get(f"{prefix}:k"))
        await asyncio.sleep(0)  # let it reach the empty pool
        assert not waiting.done()
        await pool.release(held)
        assert await waiting is None
        assert telemetry.value("pool_wait_seconds_count", system="redis",
                               client="ablocking") == 2
        assert (telemetry.value("pool_wait_seconds_sum", system="redis", client="ablocking")
                or 0) > 0
    finally:
        await client.aclose()
        await pool.aclose()


async def test_redis_py_retries_are_off_on_the_asyncio_pool(client: AsyncResilientRedis) -> None:
    from redis.asyncio.retry import Retry

    retry = client.connection_pool.connection_kwargs["retry"]
    assert isinstance(retry, Retry)  # the asyncio class: the sync one breaks redis.asyncio
    assert retry._retries == 0


async def test_client_kill_next_read_succeeds_after_a_counted_retry(
    client: AsyncResilientRedis, admin: redis.Redis, prefix: str, telemetry: CapturedTelemetry
) -> None:
    admin.set(f"{prefix}:k", "v")
    assert await client.get(f"{prefix}:k") == b"v"
    client_id = await client.client_id()
    assert admin.client_kill_filter(_id=client_id) == 1
    assert await client.get(f"{prefix}:k") == b"v"
    assert await client.client_id() != client_id
    assert metric(telemetry, "retries_total", "async", operation="get",
                  error_type="connection") == 1
    assert outcome(telemetry, "async", "get", "success_after_retry") == 1
    assert metric(telemetry, "reconnect_attempts_total", "async", outcome="success") == 1
    states = [state for _, state in client._tracker.machine.history]
    assert states[-3:] == [S.DISCONNECTED, S.CONNECTING, S.CONNECTED]


async def test_cut_between_commands_read_and_write_retried_write_applied_once(
    proxied: AsyncResilientRedis, proxy: FaultProxy, admin: redis.Redis, prefix: str,
    telemetry: CapturedTelemetry,
) -> None:
    await proxied.set(f"{prefix}:k", "v")
    assert proxy.cut() == 1
    await await_until(lambda: idle_connections_at_eof(proxied), 5)
    assert await proxied.get(f"{prefix}:k") == b"v"
    assert retries(telemetry, "aproxied", "get") == 1
    proxy.cut()
    await await_until(lambda: idle_connections_at_eof(proxied), 5)
    assert await proxied.incr(f"{prefix}:n") == 1
    assert admin.get(f"{prefix}:n") == b"1"
    assert retries(telemetry, "aproxied", "incrby") == 1
    assert proxied.health()["reconnect_attempts"] == 2


async def test_write_cut_after_sending_is_not_retried(
    proxied: AsyncResilientRedis, proxy: FaultProxy, admin: redis.Redis, prefix: str,
    telemetry: CapturedTelemetry,
) -> None:
    key = f"{prefix}:n"
    await proxied.ping()
    task = await cut_after_applied(proxy, lambda: admin.get(key) == b"1", proxied.incr(key))
    assert isinstance(task.exception(), rx.ConnectionError)
    assert admin.get(key) == b"1"  # applied once, never twice
    assert retries(telemetry, "aproxied", "incrby") == 0
    assert outcome(telemetry, "aproxied", "incrby", "failure") == 1


async def test_write_cut_after_sending_is_retried_when_opted_in(
    proxied: AsyncResilientRedis, proxy: FaultProxy, admin: redis.Redis, prefix: str,
    telemetry: CapturedTelemetry,
) -> None:
    key = f"{prefix}:s"
    await proxied.ping()

    async def idempotent_set() -> Any:
        with proxied.idempotent():
            return await proxied.set(key, "v")

    task = await cut_after_applied(proxy, lambda: admin.get(key) == b"v", idempotent_set())
    assert task.result() is True
    assert retries(telemetry, "aproxied", "set") == 1
    assert outcome(telemetry, "aproxied", "set", "success_after_retry") == 1


async def test_read_cut_after_sending_is_retried(
    proxied: AsyncResilientRedis, proxy: FaultProxy, admin: redis.Redis, prefix: str,
    telemetry: CapturedTelemetry,
) -> None:
    key = f"{prefix}:r"
    admin.set(key, "v")
    client_id = await proxied.client_id()
    task = await cut_after_applied(proxy, server_runs(admin, client_id, "get"), proxied.get(key))
    assert task.result() == b"v"
    assert outcome(telemetry, "aproxied", "get", "success_after_retry") == 1


@pytest.mark.parametrize("transaction", [True, False])
async def test_pipeline_of_100_incr_cut_mid_execution_is_not_applied_twice(
    transaction: bool, proxied: AsyncResilientRedis, proxy: FaultProxy, admin: redis.Redis,
    prefix: str, telemetry: CapturedTelemetry,
) -> None:
    key = f"{prefix}:ctr"
    await proxied.ping()

    async def run_pipeline() -> list[Any]:
        pipe = proxied.pipeline(transaction=transaction)
        for _ in range(100):
            pipe.incr(key)
        return await pipe.execute()

    task = await cut_after_applied(proxy, lambda: admin.get(key) == b"100", run_pipeline())
    assert isinstance(task.exception(), rx.ConnectionError)
    assert admin.get(key) == b"100"  # all or nothing, and never 200
    operation = "transaction" if transaction else "pipeline"
    assert retries(telemetry, "aproxied", operation) == 0
    assert outcome(telemetry, "aproxied", operation, "failure") == 1


async def test_pipeline_on_a_dead_pooled_connection_is_retried_and_applied_once(
    proxied: AsyncResilientRedis, proxy: FaultProxy, admin: redis.Redis, prefix: str,
    telemetry: CapturedTelemetry,
) -> None:
    key = f"{prefix}:ctr"
    await proxied.ping()
    proxy.cut()
    await await_until(lambda: idle_connections_at_eof(proxied), 5)
    pipe = proxied.pipeline()
    for _ in range(100):
        pipe.incr(key)
    assert (await pipe.execute())[-1] == 100
    assert admin.get(key) == b"100"
    assert outcome(telemetry, "aproxied", "transaction", "success_after_retry") == 1


async def test_breaker_opens_fails_fast_then_half_open_probe_closes_it(
    proxy: FaultProxy, admin: redis.Redis, prefix: str, telemetry: CapturedTelemetry,
) -> None:
    key = f"{prefix}:k"
    admin.set(key, "v")
    client = AsyncResilientRedis(proxy.url(URL), name="abreaker", telemetry=telemetry,
                                 policy=default_policy(2, 0.01, 0.02), failure_threshold=3,
                                 recovery_timeout=1.0)
    try:
        assert await client.get(key) == b"v"
        proxy.refuse()
        raised: list[BaseException] = []
        for _ in range(10):
            try:
                await client.get(key)
            except (rx.ConnectionError, CircuitOpenError) as error:
                raised.append(error)
            if isinstance(raised[-1], CircuitOpenError):
                break
        assert isinstance(raised[0], rx.ConnectionError)
        assert isinstance(raised[-1], CircuitOpenError)
        with pytest.raises(CircuitOpenError):
            await client.get(key)  # fails fast: no connection attempt
        health = client.health()
        assert health["circuit_breaker_open"] is True
        assert health["state"] == "failed"
        proxy.pass_through()

        async def recovered() -> bool:
            try:
                return await client.get(key) == b"v"
            except (CircuitOpenError, rx.ConnectionError):
                return False

        await await_until(recovered, 15, interval=0.1)
        assert client.health()["circuit_breaker"] == "closed"
        assert client.state is S.CONNECTED
    finally:
        await client.aclose()
    for from_state, to_state in (("closed", "open"), ("open", "half_open"),
                                 ("half_open", "closed")):
        assert metric(telemetry, "circuit_breaker_transitions_total", "abreaker",
                      from_state=from_state, to_state=to_state) >= 1


async def test_command_cancelled_mid_reply_leaves_no_reply_for_the_next_command(
    proxied: AsyncResilientRedis, proxy: FaultProxy, admin: redis.Redis, prefix: str,
) -> None:
    admin.mset({f"{prefix}:one": "1", f"{prefix}:two": "2"})
    client_id = await proxied.client_id()
    proxy.add_latency(0.5)  # the GET reaches the server; its reply is still on the way back
    task = asyncio.ensure_future(proxied.get(f"{prefix}:one"))
    await await_until(server_runs(admin, client_id, "get"), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    proxy.pass_through()
    # On a reused connection the next GET would read the cancelled one's reply ("1").
    assert await proxied.get(f"{prefix}:two") == b"2"
    assert await proxied.get(f"{prefix}:one") == b"1"
    assert await proxied.client_id() != client_id  # the cancelled connection was not reused
    assert proxied.state is S.CONNECTED


@pytest.mark.parametrize("transaction", [True, False])
async def test_pipeline_cancelled_mid_execution_then_next_commands_are_correct(
    transaction: bool, proxied: AsyncResilientRedis, proxy: FaultProxy, admin: redis.Redis,
    prefix: str,
) -> None:
    key = f"{prefix}:ctr"
    admin.set(f"{prefix}:other", "x")
    await proxied.ping()
    proxy.add_latency(0.5)
    pipe = proxied.pipeline(transaction=transaction)
    for _ in range(50):
        pipe.incr(key)
    task = asyncio.ensure_future(pipe.execute())
    await await_until(lambda: admin.get(key) == b"50", 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    proxy.pass_through()
    assert await proxied.get(f"{prefix}:other") == b"x"
    assert await proxied.incr(key) == 51
    async with proxied.pipeline(transaction=transaction) as again:
        again.get(key).get(f"{prefix}:other")
        assert await again.execute() == [b"51", b"x"]


async def test_many_tasks_share_the_client_through_cuts(
    proxied: AsyncResilientRedis, proxy: FaultProxy, admin: redis.Redis, prefix: str,
    telemetry: CapturedTelemetry,
) -> None:
    key = f"{prefix}:shared"
    admin.set(key, "v")
    reads = [0]
    stop = asyncio.Event()

    async def reader() -> None:
        while not stop.is_set():
            assert await proxied.get(key) == b"v"
            reads[0] += 1

    tasks = [asyncio.ensure_future(reader()) for _ in range(20)]
    for _ in range(3):
        before = reads[0]
        await await_until(lambda before=before: reads[0] > before + 100, 10)
        proxy.cut()
    await await_until(lambda: retries(telemetry, "aproxied", "get") >= 1, 10)
    stop.set()
    await asyncio.gather(*tasks)  # any reader's error fails the test here
    assert proxied.state is S.CONNECTED
    assert outcome(telemetry, "aproxied", "get", "failure_after_retry") == 0


async def test_wrong_password_one_attempt_auth_error_no_password_shown(
    admin: redis.Redis, telemetry: CapturedTelemetry
) -> None:
    user = f"ic_test_{uuid.uuid4().hex[:10]}"
    password = f"right-{uuid.uuid4().hex}"
    wrong = f"wrong-{uuid.uuid4().hex}"
    admin.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["ic:*"],
                      commands=["+@all"])
    clock = FakeClock()
    try:
        client = AsyncResilientRedis(f"redis://{user}:{wrong}@127.0.0.1:6379/0", name="aauth",
                                     telemetry=telemetry, clock=clock)
        with pytest.raises(rx.AuthenticationError) as raised:
            await client.get("ic:any")
        health = client.health()
        await client.aclose()
    finally:
        admin.acl_deluser(user)
    assert classify(raised.value) is ErrorCategory.AUTH
    assert clock.sleeps == []  # no backoff loop
    assert retries(telemetry, "aauth", "get") == 0
    assert outcome(telemetry, "aauth", "get", "failure") == 1
    assert health["state"] == "failed"
    for text in (str(raised.value), repr(raised.value), str(health), telemetry.scrape()):
        assert wrong not in text
        assert password not in text


async def test_malformed_urls_and_environment_are_config_errors() -> None:
    for url in ("http://localhost:6379", "redis://:6379/0", "redis://localhost:99999/0",
                "redis://localhost/notanumber"):
        with pytest.raises(ConfigError, match="url"):
            AsyncResilientRedis(url)
    with pytest.raises(ConfigError, match="REDIS_RETRY_MAX_ATTEMPTS"):
        AsyncResilientRedis.from_env(environ={"REDIS_RETRY_MAX_ATTEMPTS": "many"})
    client = AsyncResilientRedis.from_env(
        "env", environ={"REDIS_URL": "redis://127.0.0.1:6379/3", "REDIS_RETRY_MAX_ATTEMPTS": "2"})
    assert client.policy.max_attempts == 2
    assert client.db == 3
    await client.aclose()
