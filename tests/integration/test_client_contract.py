"""The ResilientClient contract, the same for the four clients, against the real services.

Each client is built with its required arguments only (the consumer's queue is declared by the
consumer itself, so that it exists): what holds here holds for a user's first try.
"""

from __future__ import annotations

import inspect
import json
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from instrumented_clients import ConfigError, ConnectionState
from instrumented_clients.client import HealthReport, ResilientClient
from instrumented_clients.db import ResilientDatabase
from instrumented_clients.health import HealthRegistry, serve_metrics_and_health
from instrumented_clients.rabbitmq import (
    AsyncResilientConsumer,
    AsyncResilientPublisher,
    ResilientConsumer,
    ResilientPublisher,
)
from instrumented_clients.rabbitmq.topology import Queue
from instrumented_clients.redis import ResilientRedis, ResilientRedisCluster
from instrumented_clients.resilience import CircuitBreaker, RetryPolicy
from instrumented_clients.testing import await_until, wait_until
from tests.integration.async_helpers import no_blocking
from tests.integration.health.test_http import fetch
from tests.integration.redis.topologies import redis_cluster_session

pytestmark = pytest.mark.integration
__all__ = ["no_blocking", "redis_cluster_session"]  # fixtures

Factory = Callable[..., Any]
CLOSED_PORT_AMQP = "amqp://guest:guest@127.0.0.1:1/"
COMMON_KEYS = ("system", "client", "state", "connected", "address", "last_error",
               "consecutive_failures", "circuit_breaker", "circuit_breaker_open",
               "reconnect_attempts")


def _ignore(_message: Any) -> None:
    return None


def _consumer(*args: Any, **kwargs: Any) -> ResilientConsumer:
    queue = Queue(f"contract-{uuid.uuid4().hex[:8]}", durable=False, auto_delete=True)
    return ResilientConsumer(*args, queue=queue, handler=_ignore, **kwargs)


FACTORIES: dict[str, Factory] = {
    "publisher": ResilientPublisher,
    "consumer": _consumer,
    "redis": ResilientRedis,
    "redis-cluster": ResilientRedisCluster,
    "database": ResilientDatabase,
}
SYSTEMS = {"publisher": "rabbitmq", "consumer": "rabbitmq", "redis": "redis",
           "redis-cluster": "redis", "database": "sqlite"}
MALFORMED_URLS = {"publisher": "http://guest:pw@broker/", "consumer": "http://guest:pw@broker/",
                  "redis": "http://cache:6379/0", "redis-cluster": "http://cache:6379/0",
                  "database": "nosuchdb://host/db"}


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The database's default URL is a SQLite file in the working directory.
    monkeypatch.chdir(tmp_path)


@pytest.fixture(params=sorted(FACTORIES))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def build(kind: str, request: pytest.FixtureRequest) -> Iterator[Factory]:
    made: list[Any] = []
    # A cluster client asks a node for the slot map when it is built: it needs the cluster.
    default_args = ((request.getfixturevalue("redis_cluster_session").startup_url(),)
                    if kind == "redis-cluster" else ())

    def make(*args: Any, **kwargs: Any) -> Any:
        client = FACTORIES[kind](*(args or default_args), **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close(timeout=1)


def test_every_client_is_a_resilient_client(kind: str, build: Factory) -> None:
    client = build()
    assert isinstance(client, ResilientClient)
    assert client.system == SYSTEMS[kind]
    assert isinstance(client.name, str)
    assert client.name
    assert isinstance(client.required, bool)
    assert isinstance(client.state, ConnectionState)
    assert callable(type(client).from_env)


def test_check_is_one_answer_and_health_a_typed_report(kind: str, build: Factory) -> None:
    client = build()
    # check() may answer through a probe connection before the client's own one is up.
    wait_until(lambda: client.check() and client.state is ConnectionState.CONNECTED, 10)
    assert client.check() is True
    report = client.health()
    assert isinstance(report, HealthReport)
    as_dict = report.to_dict()
    for key in COMMON_KEYS:
        assert key in as_dict
        assert report[key] == as_dict[key]
    assert report.system == SYSTEMS[kind]
    assert report.state == "connected"
    assert report.connected is True
    assert report.circuit_breaker == "closed"
    assert report.circuit_breaker_open is False
    json.dumps(as_dict)  # JSON-ready as it is


def test_close_twice_is_fine(build: Factory) -> None:
    client = build()
    client.close()
    client.close(timeout=0.5)
    assert client.state in (ConnectionState.CLOSED, ConnectionState.CLOSING)


def test_breaker_none_is_the_default_false_is_none_an_instance_is_that_one(
    build: Factory,
) -> None:
    assert isinstance(build().breaker, CircuitBreaker)
    assert build(breaker=False).breaker is None
    mine = CircuitBreaker(failure_threshold=2, recovery_timeout=1.0, name="mine")
    assert build(breaker=mine).breaker is mine
    tuned = build(failure_threshold=7, recovery_timeout=3.0).breaker
    assert (tuned.failure_threshold, tuned.recovery_timeout) == (7, 3.0)
    with pytest.raises(TypeError, match="breaker"):
        build(breaker="on")


def test_retry_none_is_the_default_false_is_one_attempt_an_instance_is_that_one(
    kind: str, build: Factory,
) -> None:
    attribute = {"publisher": "publish_policy", "consumer": "handler_policy"}.get(kind, "policy")

    def policy_of(client: Any) -> RetryPolicy:
        policy = getattr(client, attribute)
        assert isinstance(policy, RetryPolicy)
        return policy

    # A consumer's default is one run per delivery: the broker's redelivery is its retry.
    default_attempts = policy_of(build()).max_attempts
    if kind == "consumer":
        assert default_attempts == 1
    else:
        assert default_attempts > 1
    assert policy_of(build(retry=False)).max_attempts == 1
    mine = RetryPolicy(max_attempts=7, initial_delay=0.01)
    assert (policy_of(build(retry=mine)).max_attempts,
            policy_of(build(retry=mine)).initial_delay) == (7, 0.01)
    with pytest.raises(TypeError, match="retry"):
        build(retry="often")


def test_a_malformed_url_is_a_config_error_without_the_password(kind: str) -> None:
    with pytest.raises(ConfigError) as raised:
        FACTORIES[kind](MALFORMED_URLS[kind])
    assert isinstance(raised.value, ValueError)
    assert "pw@" not in str(raised.value)


def test_registry_honours_the_real_publishers_required() -> None:
    optional = ResilientPublisher(CLOSED_PORT_AMQP, name="optional-events")
    try:
        assert optional.required is False
        health = HealthRegistry()
        health.register(optional)  # required= not given: the publisher's own decides
        wait_until(lambda: optional.health()["last_error"] is not None, 10)
        report = health.check()
        assert report["status"] == "degraded"
        assert report["dependencies"]["optional-events"]["required"] is False
        with serve_metrics_and_health(0, registry=CollectorRegistry(), health=health,
                                      host="127.0.0.1") as server:
            status, _, _ = fetch(f"{server.url}/ready")
            assert status == 200
    finally:
        optional.close(timeout=0)


def test_consumer_stop_still_works_with_a_deprecation_warning() -> None:
    consumer = _consumer(auto_start=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        consumer.stop(timeout=0)
    assert [w.category for w in caught] == [DeprecationWarning]
    assert consumer.state is ConnectionState.CLOSED


UNREACHABLE_URLS = {"publisher": CLOSED_PORT_AMQP, "consumer": CLOSED_PORT_AMQP,
                    "redis": "redis://127.0.0.1:1/0", "redis-cluster": "redis://127.0.0.1:1/0",
                    "database": "postgresql+psycopg://postgres@127.0.0.1:1/test"}


def test_check_is_one_classified_attempt_that_never_raises(kind: str, build: Factory) -> None:
    client = build(UNREACHABLE_URLS[kind])
    assert client.check() is False
    report = client.health()
    assert report.connected is False
    assert "refused" in (report.last_error or "").lower()
    assert client.check() is False  # again, no exception, nothing cached


# -- the asyncio clients: the same contract, with coroutines for check() and close() ---------------


async def _ignore_async(_message: Any) -> None:
    return None


def _async_consumer(*args: Any, **kwargs: Any) -> AsyncResilientConsumer:
    queue = Queue(f"contract-{uuid.uuid4().hex[:8]}", durable=False, auto_delete=True)
    return AsyncResilientConsumer(*args, queue=queue, handler=_ignore_async, **kwargs)


ASYNC_FACTORIES: dict[str, Factory] = {
    "async-publisher": AsyncResilientPublisher,
    "async-consumer": _async_consumer,
}
ASYNC_POLICIES = {"async-publisher": "publish_policy", "async-consumer": "handler_policy"}


@pytest.fixture(params=sorted(ASYNC_FACTORIES))
def async_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest_asyncio.fixture
async def build_async(async_kind: str) -> AsyncIterator[Factory]:
    made: list[Any] = []

    def make(*args: Any, **kwargs: Any) -> Any:
        client = ASYNC_FACTORIES[async_kind](*args, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close(timeout=1)


@pytest.mark.asyncio
async def test_every_async_client_is_a_resilient_client_with_coroutines(
    build_async: Factory,
) -> None:
    client = build_async()
    assert isinstance(client, ResilientClient)
    assert client.system == "rabbitmq"
    assert client.name
    assert isinstance(client.required, bool)
    assert isinstance(client.state, ConnectionState)
    assert callable(type(client).from_env)
    assert inspect.iscoroutinefunction(client.check)
    assert inspect.iscoroutinefunction(client.close)


@pytest.mark.asyncio
@pytest.mark.usefixtures("no_blocking")
async def test_async_check_is_one_answer_and_health_a_typed_report(build_async: Factory) -> None:
    client = build_async()
    await client.start()
    await await_until(client.check, 10)
    await await_until(lambda: client.state is ConnectionState.CONNECTED, 10)
    assert await client.check() is True
    report = client.health()
    assert isinstance(report, HealthReport)
    as_dict = report.to_dict()
    for key in COMMON_KEYS:
        assert report[key] == as_dict[key]
    assert report.system == "rabbitmq"
    assert report.state == "connected"
    assert report.circuit_breaker == "closed"
    json.dumps(as_dict)
    await client.close()
    await client.close(timeout=0.5)  # twice is fine
    assert client.state in (ConnectionState.CLOSED, ConnectionState.CLOSING)


@pytest.mark.asyncio
async def test_async_breaker_and_retry_mean_what_they_mean_everywhere(
    async_kind: str, build_async: Factory,
) -> None:
    assert isinstance(build_async().breaker, CircuitBreaker)
    assert build_async(breaker=False).breaker is None
    mine = CircuitBreaker(failure_threshold=2, recovery_timeout=1.0, name="mine")
    assert build_async(breaker=mine).breaker is mine
    policy = RetryPolicy(max_attempts=7, initial_delay=0.01)
    assert getattr(build_async(retry=policy), ASYNC_POLICIES[async_kind]) is policy
    assert getattr(build_async(retry=False), ASYNC_POLICIES[async_kind]).max_attempts == 1
    with pytest.raises(TypeError, match="retry"):
        build_async(retry="often")


@pytest.mark.asyncio
async def test_async_malformed_url_is_a_config_error_without_the_password(
    async_kind: str,
) -> None:
    with pytest.raises(ConfigError) as raised:
        ASYNC_FACTORIES[async_kind]("http://guest:pw@broker/")
    assert "pw@" not in str(raised.value)


@pytest.mark.asyncio
@pytest.mark.usefixtures("no_blocking")
async def test_async_check_is_one_classified_attempt_that_never_raises(
    build_async: Factory,
) -> None:
    client = build_async(CLOSED_PORT_AMQP)
    assert await client.check() is False
    report = client.health()
    assert report.connected is False
    assert "refused" in (report.last_error or "").lower()
    assert await client.check() is False
