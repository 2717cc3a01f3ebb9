"""Redis Sentinel and Redis Cluster for the tests, and one fixture that runs a test on either a
single server or the cluster client.

The topologies are started by the tests themselves (``scripts/local_clusters``), once per session,
on loopback ports of their own, in temporary directories, and stopped at the end; a test that
leaves one failed over or with a node killed gets a rebuilt one at the next use.

:class:`Target` is what a fault test needs to know of where it runs: the client class and URL,
an ``admin`` on the server that holds every key under ``prefix``, and a proxy in front of it.
On the cluster, every key of a test carries one hash tag, chosen so that its slot is served by
the client's default node (the first primary of the slot map, where redis-py sends key-less
commands such as ``CLIENT ID``): one node, as with a single server, while the client really is
a ``RedisCluster`` routing by slot.
"""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from instrumented_clients.redis import ResilientRedis
from instrumented_clients.redis.cluster import ResilientRedisCluster
from instrumented_clients.testing import FaultProxy
from scripts.local_clusters.redis_servers import RedisClusterSet, RedisSentinelSet

from .helpers import HOST, PORT, URL


@pytest.fixture(scope="session")
def redis_sentinel_session() -> Iterator[RedisSentinelSet]:
    servers = RedisSentinelSet(Path(tempfile.mkdtemp(prefix="ic-redis-sentinel-")))
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


@pytest.fixture
def redis_sentinel(redis_sentinel_session: RedisSentinelSet) -> RedisSentinelSet:
    """The session's Sentinel set as new (rebuilt after a test failed it over)."""
    if not redis_sentinel_session.pristine():
        redis_sentinel_session.rebuild()
    return redis_sentinel_session


@pytest.fixture(scope="session")
def redis_cluster_session() -> Iterator[RedisClusterSet]:
    servers = RedisClusterSet(Path(tempfile.mkdtemp(prefix="ic-redis-cluster-")))
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


@pytest.fixture
def redis_cluster(redis_cluster_session: RedisClusterSet) -> RedisClusterSet:
    """The session's cluster as new: rebuilt when a test left a node killed or promoted."""
    servers = redis_cluster_session
    roles = servers.roles()
    pristine = servers.healthy() and all(
        roles.get(node.name) == ("master" if index < 3 else "slave")
        for index, node in enumerate(servers.nodes))
    if not pristine:
        servers.rebuild()
    return servers


class ProxyGroup:
    """A FaultProxy in front of every cluster node; faults act on the keys' node only.

    A cluster client learns the nodes' real addresses from ``CLUSTER SLOTS``; ``remap`` (its
    ``address_remap``) sends it through the proxies instead. It is started through another
    node's proxy, so the faulted proxy carries only the commands of the test.
    """

    def __init__(self, proxies: dict[int, FaultProxy], faulted: int, startup: int) -> None:
        self.by_port = proxies
        self.faulted = proxies[faulted]
        self.startup = proxies[startup]
        self._remap = {port: proxy.port for port, proxy in proxies.items()}

    def remap(self, address: tuple[str, int]) -> tuple[str, int]:
        host, port = address
        return (HOST, self._remap[port]) if port in self._remap else (host, port)

    def url(self, template: str) -> str:
        return self.startup.url(template)

    def __getattr__(self, name: str) -> Any:  # cut, refuse, add_latency, connections, ...
        return getattr(self.faulted, name)


class Target:
    """Where a fault test runs: a single server, or the cluster client on the Redis Cluster."""

    def __init__(self, kind: str, url: str, admin_port: int,
                 cluster: RedisClusterSet | None = None, tag: str = "") -> None:
        self.kind = kind
        self.url = url
        self.admin_port = admin_port
        self.cluster = cluster
        self.tag = tag
        self.proxies: ProxyGroup | None = None

    @property
    def client_class(self) -> type[Any]:
        return ResilientRedisCluster if self.kind == "cluster" else ResilientRedis

    def make(self, url: str, **options: Any) -> Any:
        """The client under test at ``url`` (the proxies' when ``url`` points at one)."""
        if self.kind != "cluster":
            return ResilientRedis(url, **options)
        if self.proxies is not None and url == self.proxies.url(self.url):
            options.setdefault("address_remap", self.proxies.remap)
        return ResilientRedisCluster(url, **options)

    def pool_of(self, client: Any) -> Any:
        """The connection pool of the node that holds the test's keys."""
        if self.kind != "cluster":
            return client.connection_pool
        return client.get_default_node().redis_connection.connection_pool

    @contextlib.contextmanager
    def proxy(self) -> Iterator[FaultProxy | ProxyGroup]:
        if self.cluster is None:
            with FaultProxy(HOST, PORT) as proxy:
                yield proxy
            return
        with contextlib.ExitStack() as stack:
            proxies = {node.port: stack.enter_context(FaultProxy(HOST, node.port))
                       for node in self.cluster.nodes}
            startup = next(port for port in proxies if port != self.admin_port)
            self.proxies = ProxyGroup(proxies, self.admin_port, startup)
            try:
                yield self.proxies
            finally:
                self.proxies = None


def _tag_on_default_node(cluster: RedisClusterSet) -> tuple[str, int]:
    """A hash tag whose slot the default node of a fresh client serves, and that node's port."""
    with RedisCluster.from_url(cluster.startup_url()) as probe:
        default = probe.get_default_node()
        for _ in range(10_000):
            tag = uuid.uuid4().hex[:8]
            if probe.get_node_from_key(f"{{{tag}}}").name == default.name:
                return tag, int(default.port)
    raise AssertionError("no hash tag found on the default node")


@pytest.fixture(params=["server", "cluster"])
def target(request: pytest.FixtureRequest) -> Target:
    if request.param == "server":
        return Target("server", URL, PORT)
    cluster: RedisClusterSet = request.getfixturevalue("redis_cluster")
    tag, port = _tag_on_default_node(cluster)
    return Target("cluster", cluster.startup_url(), port, cluster, tag)


@pytest.fixture
def target_admin(target: Target) -> Iterator[redis.Redis]:
    """A plain redis-py client on the server that holds the test's keys."""
    client = redis.Redis(host=HOST, port=target.admin_port, socket_timeout=10)
    yield client
    client.close()


@pytest.fixture
def target_prefix(target: Target, target_admin: redis.Redis) -> Iterator[str]:
    """A unique key prefix (one hash tag on the cluster); its keys are deleted afterwards."""
    value = f"ic:test:{{{target.tag}}}:{uuid.uuid4().hex[:8]}" if target.tag else \
        f"ic:test:{uuid.uuid4().hex[:12]}"
    yield value
    keys = list(target_admin.scan_iter(f"{value}*".replace("{", "\\{").replace("}", "\\}")))
    if keys:
        target_admin.delete(*keys)


@pytest.fixture
def target_proxy(target: Target) -> Iterator[Any]:
    with target.proxy() as proxy:
        yield proxy


MakeClient = Callable[..., Any]
