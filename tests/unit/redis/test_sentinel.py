"""Redis behind Sentinel without a network: the URL form, the pool it makes, READONLY from a
demoted primary in both of redis-py's shapes, and what health says."""

from __future__ import annotations

import asyncio
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis import exceptions as rx
from redis.sentinel import SentinelConnectionPool

from instrumented_clients import ConfigError
from instrumented_clients.redis import ResilientRedis
from instrumented_clients.redis.aio import AsyncResilientRedis
from instrumented_clients.redis.errors import is_demoted_primary, is_refused_by_server
from instrumented_clients.redis.sentinel import (
    AsyncLoggingSentinelPool,
    LoggingSentinelPool,
    describe_primary,
)
from instrumented_clients.redis.settings import parse_sentinel_url, sentinel_url
from instrumented_clients.testing import CapturedTelemetry, FakeClock


def demoted_primary_error() -> rx.ConnectionError:
    """What redis-py's SentinelManagedConnection raises on READONLY from a former primary."""
    try:
        try:
            raise rx.ReadOnlyError("You can't write against a read only replica.")
        except rx.ReadOnlyError:
            raise rx.ConnectionError("The previous master is now a slave")  # noqa: B904
    except rx.ConnectionError as error:
        return error


def test_the_demoted_primarys_refusal_is_recognised_in_both_shapes() -> None:
    wrapped = demoted_primary_error()
    assert isinstance(wrapped.__context__, rx.ReadOnlyError)
    for error in (wrapped, rx.ReadOnlyError("READONLY")):
        assert is_demoted_primary(error)
        assert is_refused_by_server(error)
    assert not is_demoted_primary(rx.ConnectionError("Connection closed by server."))


def test_a_write_refused_by_a_demoted_primary_is_retried_a_lost_one_is_not(
    telemetry: CapturedTelemetry, clock: FakeClock,
) -> None:
    with ResilientRedis.from_sentinel([("127.0.0.1", 1)], "svc", name="unit-sentinel",
                                      telemetry=telemetry, clock=clock) as client:
        for command in (("INCR", "k"), ("SADD", "s", "id"), ("SET", "k", "v")):
            assert client.policy_for(*command).should_retry(demoted_primary_error())
            assert not client.policy_for(*command).should_retry(
                rx.ConnectionError("Connection closed by server."))
        # A non-MULTI pipeline may have been applied in part before the refusal: not re-run.
        pipeline_policy = client._core.guards.for_pipeline(False, [(("INCR", "k"), {})]).policy
        assert not pipeline_policy.should_retry(demoted_primary_error())


def test_from_sentinel_and_the_url_make_a_sentinel_pool_without_io(
    telemetry: CapturedTelemetry,
) -> None:
    sentinels = [("127.0.0.1", 26379), ("10.0.0.2", 26380)]
    url = sentinel_url(sentinels, "my primary", db=2)
    assert url == "redis+sentinel://127.0.0.1:26379,10.0.0.2:26380/my%20primary/2"
    for client in (ResilientRedis.from_sentinel(sentinels, "my primary", db=2, name="a",
                                                telemetry=telemetry, password="pw"),
                   ResilientRedis(url, name="b", telemetry=telemetry, password="pw")):
        with client:
            pool = client.connection_pool
            assert isinstance(pool, LoggingSentinelPool)
            assert pool.service_name == "my primary"
            assert pool.connection_kwargs["db"] == 2
            assert pool.connection_kwargs["retry"].get_retries() == 0
            assert describe_primary(pool) == {"service": "my primary"}  # none found yet
            health = client.health()
            assert health["service"] == "my primary"
            assert "pw" not in repr(health.to_dict())


def test_the_asyncio_client_takes_the_url_too(telemetry: CapturedTelemetry) -> None:
    async def build_and_close() -> dict[str, str]:
        client = AsyncResilientRedis("redis+sentinel://127.0.0.1:26379/svc",
                                     name="async-sentinel", telemetry=telemetry)
        try:
            assert isinstance(client.connection_pool, AsyncLoggingSentinelPool)
            return describe_primary(client.connection_pool)
        finally:
            await client.aclose()

    assert asyncio.run(build_and_close()) == {"service": "svc"}


def test_a_change_of_primary_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    class Sentinels:
        answers = [("10.0.0.1", 6379), ("10.0.0.1", 6379), ("10.0.0.2", 6379)]

        def discover_master(self, service: str) -> tuple[str, int]:
            return self.answers.pop(0)

    pool = LoggingSentinelPool("svc", Sentinels())
    caplog.set_level(logging.INFO, "instrumented_clients.redis")
    for _ in range(3):
        pool.get_master_address()
    assert [record.getMessage() for record in caplog.records] == [
        "redis service 'svc': primary is 10.0.0.1:6379",
        "redis service 'svc': primary changed from 10.0.0.1:6379 to 10.0.0.2:6379 (failover)",
    ]
    assert describe_primary(pool) == {"service": "svc", "primary": "10.0.0.2:6379"}
    assert isinstance(pool, SentinelConnectionPool)


@pytest.mark.parametrize("url", [
    "redis+sentinel://127.0.0.1/svc",  # no port
    "redis+sentinel://127.0.0.1:26379",  # no service
    "redis+sentinel://127.0.0.1:26379/svc/x",  # db not a number
    "redis+sentinel://:secret@127.0.0.1:99999/svc",  # port out of range
    "redis+sentinel:///svc",
])
def test_malformed_sentinel_urls_are_config_errors_without_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        ResilientRedis(url)
    assert "url" in str(raised.value)
    assert "redis+sentinel://" in str(raised.value)
    assert "secret" not in str(raised.value)


@given(
    st.lists(st.tuples(st.from_regex(r"[a-z][a-z0-9.-]{0,20}", fullmatch=True),
                       st.integers(1, 65535)), min_size=1, max_size=4),
    st.text(min_size=1, max_size=20).filter(lambda text: text.strip("/") == text),
    st.integers(0, 15),
)
def test_sentinel_urls_round_trip(sentinels: list[tuple[str, int]], service: str,
                                  db: int) -> None:
    parsed = parse_sentinel_url(sentinel_url(sentinels, service, db))
    assert parsed.sentinels == tuple(sentinels)
    assert (parsed.service, parsed.db) == (service, db)
    assert parsed.username is None
    assert parsed.password is None


def test_credentials_in_the_url_are_the_data_nodes() -> None:
    parsed = parse_sentinel_url("redis+sentinel://app:p%40ss@h1:26379,h2:26379/svc")
    assert (parsed.username, parsed.password) == ("app", "p@ss")
    assert parsed.sentinels == (("h1", 26379), ("h2", 26379))
