"""The compatibility names RedisConnectionRetry / with_redis_retry / get_redis_connection_retry."""

from __future__ import annotations

import asyncio

import pytest
from redis import exceptions as rx

from instrumented_clients import ConfigError
from instrumented_clients.redis import (
    RedisConnectionRetry,
    get_redis_connection_retry,
    with_redis_retry,
)
from instrumented_clients.testing import CapturedTelemetry, FakeClock


class FakeClient:
    """What connect_fn returns: something with ping() (no network)."""

    def __init__(self, ping_error: Exception | None = None) -> None:
        self.ping_error = ping_error
        self.closed = False

    def ping(self) -> bool:
        if self.ping_error is not None:
            raise self.ping_error
        return True

    def close(self) -> None:
        self.closed = True


def test_compat_defaults(clock: FakeClock, telemetry: CapturedTelemetry) -> None:
    handler = RedisConnectionRetry(clock=clock, telemetry=telemetry)
    assert handler.max_retries == 3
    assert handler.policy.max_attempts == 4
    assert (handler.policy.initial_delay, handler.policy.max_delay) == (0.5, 10.0)
    assert list(handler.policy.delays()) == [0.5, 1.0, 2.0]


def test_connect_with_retry_retries_transient_failures_then_verifies_with_ping(
    clock: FakeClock, telemetry: CapturedTelemetry
) -> None:
    handler = RedisConnectionRetry(max_retries=3, clock=clock, telemetry=telemetry)
    made: list[FakeClient] = []

    def connect() -> FakeClient:
        # The first client fails to answer PING, the second refuses, the third works.
        if len(made) == 1:
            made.append(FakeClient())
            raise ConnectionRefusedError(111, "refused")
        client = FakeClient(rx.ConnectionError("Connection closed") if not made else None)
        made.append(client)
        return client

    client = handler.connect_with_retry(connect, "redis-cache")
    assert client is made[-1]
    assert len(made) == 3
    assert made[0].closed  # the client that failed its PING was closed
    assert len(clock.sleeps) == 2
    assert 0.25 <= clock.sleeps[0] <= 0.75
    assert 0.5 <= clock.sleeps[1] <= 1.5
    assert telemetry.value("operation_duration_seconds_count", system="redis", client="redis",
                           operation="connect", outcome="success_after_retry") == 1.0
    assert telemetry.value("retries_total", system="redis", client="redis",
                           operation="connect", error_type="connection") == 2.0


def test_connect_with_retry_gives_up_after_max_retries(
    clock: FakeClock, telemetry: CapturedTelemetry
) -> None:
    handler = RedisConnectionRetry(max_retries=2, clock=clock, telemetry=telemetry)
    calls = []

    def connect() -> FakeClient:
        calls.append(1)
        raise rx.ConnectionError("Error 111 connecting to localhost:6379. Connection refused.")

    with pytest.raises(rx.ConnectionError):
        handler.connect_with_retry(connect, "redis-cache")
    assert len(calls) == 3
    assert len(clock.sleeps) == 2


@pytest.mark.parametrize(
    "error",
    [rx.AuthenticationError("invalid password"), ValueError("bad"), TypeError("bad"),
     KeyError("missing"), rx.ResponseError("WRONGTYPE")],
)
def test_non_transient_errors_are_raised_at_once(
    error: Exception, clock: FakeClock, telemetry: CapturedTelemetry
) -> None:
    handler = RedisConnectionRetry(clock=clock, telemetry=telemetry)
    calls = []

    def operation() -> None:
        calls.append(1)
        raise error

    with pytest.raises(type(error)):
        handler.execute_with_retry(operation, "get my_key")
    assert calls == [1]
    assert clock.sleeps == []


def test_execute_with_retry_does_not_label_metrics_with_the_name(
    clock: FakeClock, telemetry: CapturedTelemetry
) -> None:
    handler = RedisConnectionRetry(clock=clock, telemetry=telemetry, name="cache")
    outcomes = iter([rx.TimeoutError("timeout"), "value"])

    def get_value() -> str:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert handler.execute_with_retry(get_value, "get my_key") == "value"
    assert "my_key" not in telemetry.scrape()
    assert telemetry.value("retries_total", system="redis", client="cache",
                           operation="execute", error_type="timeout") == 1.0


def test_with_redis_retry_decorates_sync_and_async(clock: FakeClock,
                                                   telemetry: CapturedTelemetry) -> None:
    attempts = {"sync": 0, "async": 0}

    @with_redis_retry(max_retries=3, base_delay=0.5, clock=clock, telemetry=telemetry)
    def get_cached_value(key: str) -> str:
        attempts["sync"] += 1
        if attempts["sync"] < 3:
            raise rx.BusyLoadingError("LOADING")
        return key

    @with_redis_retry(max_retries=1, clock=clock, telemetry=telemetry)
    async def aget(key: str) -> str:
        attempts["async"] += 1
        raise rx.ConnectionError("reset")

    assert get_cached_value("k") == "k"
    assert attempts["sync"] == 3
    with pytest.raises(rx.ConnectionError):
        asyncio.run(aget("k"))
    assert attempts["async"] == 2


def test_get_redis_connection_retry_from_env_and_arguments() -> None:
    handler = get_redis_connection_retry(environ={"REDIS_RETRY_MAX_ATTEMPTS": "6",
                                                  "REDIS_RETRY_BASE_DELAY": "1.0",
                                                  "REDIS_RETRY_MAX_DELAY": "20"})
    assert handler.max_retries == 5
    assert (handler.policy.initial_delay, handler.policy.max_delay) == (1.0, 20.0)
    custom = get_redis_connection_retry(max_retries=5, base_delay=1.0, max_delay=20.0, environ={})
    assert custom.policy.max_attempts == 6
    with pytest.raises(ConfigError, match="REDIS_RETRY_MAX_ATTEMPTS"):
        get_redis_connection_retry(environ={"REDIS_RETRY_MAX_ATTEMPTS": "three"})


def test_bad_max_retries_is_refused() -> None:
    with pytest.raises(ValueError, match="max_retries"):
        RedisConnectionRetry(max_retries=-1)
