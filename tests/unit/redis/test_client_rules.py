"""The write-retry rule, configuration and construction of ResilientRedis (no network: the client
connects lazily, so building one does no I/O)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis import exceptions as rx

from instrumented_clients import ConfigError, ConnectionState
from instrumented_clients.redis import ResilientRedis
from instrumented_clients.redis.errors import StaleConnectionError, mark_unsent
from instrumented_clients.resilience import RetryPolicy
from instrumented_clients.testing import CapturedTelemetry, FakeClock

SENT = rx.ConnectionError("Connection closed by server.")
READ_TIMEOUT = rx.TimeoutError("Timeout reading from socket")
LOADING = rx.BusyLoadingError("Redis is loading the dataset in memory")


def unsent() -> rx.ConnectionError:
    return mark_unsent(rx.ConnectionError("Error 111 connecting to 127.0.0.1:1."))  # type: ignore[return-value]


@pytest.fixture
def client(telemetry: CapturedTelemetry, clock: FakeClock) -> Iterator[ResilientRedis]:
    redis_client = ResilientRedis("redis://127.0.0.1:1/0", name="unit", telemetry=telemetry,
                                  clock=clock)
    yield redis_client
    redis_client.close()


def retried(client: ResilientRedis, error: Exception, *command: object) -> bool:
    return client.policy_for(*command).should_retry(error)


def test_reads_are_retried_after_any_transient_failure(client: ResilientRedis) -> None:
    for command in (("GET", "k"), ("HGETALL", "h"), ("ZRANGE", "z", 0, -1), ("PING",)):
        assert retried(client, SENT, *command)
        assert retried(client, READ_TIMEOUT, *command)
        assert retried(client, unsent(), *command)
        assert not retried(client, rx.ResponseError("WRONGTYPE"), *command)


def test_writes_are_retried_only_when_provably_not_applied(client: ResilientRedis) -> None:
    for command in (("INCR", "k"), ("SET", "k", "v"), ("LPUSH", "l", "x"), ("CLIENT KILL",)):
        assert not retried(client, SENT, *command), command
        assert not retried(client, READ_TIMEOUT, *command), command
        assert retried(client, unsent(), *command), command
        assert retried(client, StaleConnectionError("closed while idle"), *command) is False
        assert retried(client, mark_unsent(StaleConnectionError("idle")), *command)
        assert retried(client, LOADING, *command), command  # refused: it did not run


def test_an_unsent_permanent_error_is_still_not_retried(client: ResilientRedis) -> None:
    auth = mark_unsent(rx.AuthenticationError("invalid username-password pair"))
    assert not retried(client, auth, "GET", "k")
    assert not retried(client, auth, "SET", "k", "v")


def test_idempotent_block_opts_writes_in(client: ResilientRedis) -> None:
    with client.idempotent():
        assert retried(client, SENT, "INCR", "k")
        assert retried(client, READ_TIMEOUT, "SET", "k", "v")
    assert not retried(client, SENT, "INCR", "k")  # only inside the block


def test_client_wide_opt_in(telemetry: CapturedTelemetry, clock: FakeClock) -> None:
    with ResilientRedis("redis://127.0.0.1:1/0", name="optin", retry_writes=True,
                        telemetry=telemetry, clock=clock) as client:
        assert retried(client, SENT, "INCR", "k")


@pytest.mark.parametrize(
    "command",
    [("BLPOP", "k", 0), ("BRPOP", "k", 0), ("BZPOPMIN", "z", 0),
     ("XREAD", "BLOCK", 100, "STREAMS", "s", "$"),
     ("XREADGROUP", "GROUP", "g", "c", "BLOCK", 100, "STREAMS", "s", ">")],
)
def test_blocking_commands_are_never_retried_once_sent(
    client: ResilientRedis, command: tuple[object, ...]
) -> None:
    assert not retried(client, SENT, *command)
    assert not retried(client, LOADING, *command)
    with client.idempotent():
        assert not retried(client, SENT, *command)
    assert retried(client, unsent(), *command)


def test_xread_without_block_is_a_read(client: ResilientRedis) -> None:
    assert retried(client, SENT, "XREAD", "STREAMS", "s", "0")


def test_pipeline_rule(client: ResilientRedis) -> None:
    reads = [(("GET", "a"), {}), (("HGETALL", "b"), {})]
    writes = [*reads, (("INCR", "c"), {})]
    blocking = [(("BLPOP", "k", 0), {})]
    guards = client._core.guards
    for transactional in (True, False):
        read_guard = guards.for_pipeline(transactional, reads)
        write_guard = guards.for_pipeline(transactional, writes)
        assert read_guard.operation == ("transaction" if transactional else "pipeline")
        assert read_guard.policy.should_retry(SENT)
        assert not write_guard.policy.should_retry(SENT)
        assert not write_guard.policy.should_retry(LOADING)  # may cover part of the batch only
        assert write_guard.policy.should_retry(unsent())
        with client.idempotent():
            assert guards.for_pipeline(transactional, writes).policy.should_retry(SENT)
            assert not guards.for_pipeline(transactional, blocking).policy.should_retry(SENT)


def test_default_policy_follows_the_defaults_table(client: ResilientRedis) -> None:
    policy = client.policy
    assert (policy.max_attempts, policy.initial_delay, policy.max_delay) == (4, 0.5, 10.0)
    assert policy.jitter == 0.5  # ×0.5–1.5
    assert list(policy.delays()) == [0.5, 1.0, 2.0]
    for retry_number, base in enumerate(policy.delays(), start=1):
        for _ in range(50):
            assert base * 0.5 <= policy.backoff(retry_number) <= base * 1.5


def test_a_generic_policy_gets_the_redis_classifier(telemetry: CapturedTelemetry) -> None:
    with ResilientRedis("redis://127.0.0.1:1/0", name="p", telemetry=telemetry,
                        policy=RetryPolicy(max_attempts=2)) as client:
        assert client.policy_for("GET", "k").should_retry(SENT)  # generic one says UNKNOWN


def test_redis_py_retries_are_off_and_sends_tracked(client: ResilientRedis) -> None:
    pool = client.connection_pool
    assert pool.connection_kwargs["retry"].get_retries() == 0
    assert pool.connection_class.__name__ == "TrackedConnection"


def test_a_passed_pool_is_adopted_but_not_closed(telemetry: CapturedTelemetry) -> None:
    from redis import ConnectionPool

    pool = ConnectionPool(host="127.0.0.1", port=1)
    with ResilientRedis(connection_pool=pool, name="pool", telemetry=telemetry) as client:
        assert client.connection_pool is pool
    assert pool.connection_kwargs["retry"].get_retries() == 0
    assert not client.auto_close_connection_pool
    with pytest.raises(ValueError, match="connection_pool cannot be combined"):
        ResilientRedis("redis://localhost", connection_pool=pool, telemetry=telemetry)
    pool.close()


@pytest.mark.parametrize(
    "url",
    ["localhost:6379", "http://localhost:6379/0", "redis://:s3cret@localhost:notaport/0",
     "redis://user:s3cret@/0", "redis://user:s3cret@localhost:6379/zero", "", "redis://h:0/0"],
)
def test_malformed_urls_fail_at_construction_without_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        ResilientRedis(url)
    assert raised.value.variable == "url"
    assert "s3cret" not in str(raised.value)


def test_from_env_reads_the_variables(telemetry: CapturedTelemetry) -> None:
    environ = {"REDIS_URL": "redis://127.0.0.1:6390/2", "REDIS_RETRY_MAX_ATTEMPTS": "6",
               "REDIS_RETRY_BASE_DELAY": "0.1", "REDIS_RETRY_MAX_DELAY": "3"}
    with ResilientRedis.from_env(name="env", environ=environ, telemetry=telemetry) as client:
        assert client.address == "127.0.0.1:6390"
        assert client.db == 2
        assert (client.policy.max_attempts, client.policy.initial_delay,
                client.policy.max_delay) == (6, 0.1, 3.0)


def test_from_env_defaults(telemetry: CapturedTelemetry) -> None:
    with ResilientRedis.from_env(environ={}, telemetry=telemetry) as client:
        assert client.address == "localhost:6379"
        assert client.policy.max_attempts == 4


@pytest.mark.parametrize(
    ("variable", "value"),
    [("REDIS_RETRY_MAX_ATTEMPTS", "four"), ("REDIS_RETRY_MAX_ATTEMPTS", "0"),
     ("REDIS_RETRY_BASE_DELAY", "soon"), ("REDIS_RETRY_MAX_DELAY", "-1"),
     ("REDIS_URL", "mysql://root:pw@localhost/")],
)
def test_from_env_names_the_bad_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        ResilientRedis.from_env(environ={variable: value})
    assert raised.value.variable == variable
    assert variable in str(raised.value)
    assert "pw@" not in str(raised.value)


def test_health_before_any_call(client: ResilientRedis) -> None:
    health = client.health()
    assert health["system"] == "redis"
    assert health["client"] == "unit"
    assert health["state"] == "disconnected"
    assert health["connected"] is False
    assert health["address"] == "127.0.0.1:1"
    assert health["circuit_breaker"] == "closed"
    assert health["circuit_breaker_open"] is False
    assert health["reconnect_attempts"] == 0
    assert health["last_error"] is None


def test_close_is_idempotent_and_the_client_stays_usable(telemetry: CapturedTelemetry) -> None:
    # As redis.Redis: close() releases the connections; the next command connects again.
    client = ResilientRedis("redis://127.0.0.1:1/0", name="closing", telemetry=telemetry,
                            policy=RetryPolicy(max_attempts=1))
    client.close()
    client.close()
    assert client.state is ConnectionState.CLOSED
    assert telemetry.value("connection_state", system="redis", client="closing",
                           state="closed") == 1
    with pytest.raises(rx.ConnectionError, match="connecting"):
        client.get("k")  # tried for real (nothing listens there), not refused as "closed"
    assert client.state is ConnectionState.FAILED
    assert telemetry.value("connection_state", system="redis", client="closing",
                           state="closed") == 0


def test_counters_start_at_zero(client: ResilientRedis, telemetry: CapturedTelemetry) -> None:
    assert telemetry.value("operation_duration_seconds_count",
                           system="redis", client="unit", operation="get",
                           outcome="success") == 0.0
    assert telemetry.value("circuit_breaker_rejections_total", system="redis",
                           client="unit") == 0.0
