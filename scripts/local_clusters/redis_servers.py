"""Local Redis topologies on loopback ports of their own: Sentinel, and a Redis Cluster.

- :class:`RedisSentinelSet`: one primary, one replica and three Sentinels
  (``redis-server <conf> --sentinel``) watching the service ``ic-primary``, with
  ``down-after-milliseconds`` shortened so a killed primary is replaced in a few seconds.
- :class:`RedisClusterSet`: six ``cluster-enabled`` servers joined by
  ``redis-cli --cluster create`` into three primaries with one replica each, with
  ``cluster-node-timeout`` shortened for the same reason.

Every server is this machine's ``redis-server``, daemonized with its own directory, pid file and
log under ``root``, persistence off, bound to 127.0.0.1: the shared Redis on 6379 is never
touched. Used by the tests (one of each per session) and by humans through
``scripts/clusters.sh``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from instrumented_clients.testing import free_port
from scripts.local_clusters._process import port_open, run, wait_for

__all__ = ["SERVICE", "RedisClusterSet", "RedisNode", "RedisSentinelSet"]

SERVICE = "ic-primary"
DOWN_AFTER_MS = 1000
CLUSTER_NODE_TIMEOUT_MS = 1000
_SERVER = """\
port {port}
bind 127.0.0.1
daemonize yes
pidfile {root}/{name}.pid
logfile {root}/{name}.log
dir {root}/{name}
save ""
appendonly no
protected-mode no
"""
_SENTINEL = """\
sentinel monitor {service} 127.0.0.1 {primary_port} 2
sentinel down-after-milliseconds {service} {down_after}
sentinel failover-timeout {service} 4000
sentinel parallel-syncs {service} 1
"""
_CLUSTER = """\
cluster-enabled yes
cluster-config-file nodes.conf
cluster-node-timeout {timeout}
cluster-port {bus_port}
"""


@dataclass(frozen=True)
class RedisNode:
    """One ``redis-server`` process (a data node or a Sentinel) and its ports."""

    name: str
    port: int
    bus_port: int = 0  # the cluster bus (cluster nodes only)

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"


class _Servers:
    """What both topologies share: start, kill, restart and stop daemonized servers."""

    kind = ""

    def __init__(self, root: Path, nodes: list[RedisNode]) -> None:
        self.root = Path(root)
        self.nodes = nodes

    # -- state file -------------------------------------------------------------------------

    def save(self) -> None:
        state = {"nodes": [asdict(node) for node in self.nodes]}
        (self.root / f"{self.kind}.json").write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, root: Path) -> Any:
        state = json.loads((Path(root) / f"{cls.kind}.json").read_text())
        servers = cls.__new__(cls)
        _Servers.__init__(servers, root, [RedisNode(**node) for node in state["nodes"]])
        return servers

    # -- processes --------------------------------------------------------------------------

    def _conf(self, node: RedisNode) -> Path:
        return self.root / f"{node.name}.conf"

    def _write_conf(self, node: RedisNode, extra: str = "") -> None:
        (self.root / node.name).mkdir(parents=True, exist_ok=True)
        self._conf(node).write_text(_SERVER.format(port=node.port, root=self.root,
                                                   name=node.name) + extra)

    def start_node(self, node: RedisNode, *options: str, timeout: float = 20) -> None:
        run(["redis-server", str(self._conf(node)), *options])
        wait_for(lambda: self.cli(node, "PING", check=False).strip() == "PONG", timeout,
                 f"redis {node.name} on port {node.port}")

    def pid(self, node: RedisNode) -> int | None:
        try:
            return int((self.root / f"{node.name}.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def kill(self, node: RedisNode, sig: int = signal.SIGKILL) -> None:
        """``kill -9`` (by default) the server, and wait until its port is closed."""
        pid = self.pid(node)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        wait_for(lambda: not port_open(node.port), 10, f"redis {node.name} to stop")
        with contextlib.suppress(FileNotFoundError):
            (self.root / f"{node.name}.pid").unlink()

    def running(self, node: RedisNode) -> bool:
        return port_open(node.port)

    def cli(self, node: RedisNode, *command: str, check: bool = True) -> str:
        return run(["redis-cli", "-h", "127.0.0.1", "-p", str(node.port), *command],
                   check=check, timeout=15)

    def kill_all(self, *, wipe: bool) -> None:
        """``kill -9`` every server and wait until its port is closed; ``wipe``: remove their
        data directories too (a rebuild starts from nothing)."""
        for node in self.nodes:
            pid = self.pid(node)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for node in self.nodes:
            with contextlib.suppress(TimeoutError):
                wait_for(lambda node=node: not port_open(node.port), 10, f"{node.name} to stop")
            if wipe:
                shutil.rmtree(self.root / node.name, ignore_errors=True)

    def stop(self) -> None:
        """Kill every server and remove ``root``. Idempotent."""
        self.kill_all(wipe=False)
        shutil.rmtree(self.root, ignore_errors=True)


class RedisSentinelSet(_Servers):
    """A primary (``r1`` at first), a replica (``r2``) and Sentinels ``s1``..``s3``."""

    kind = "sentinel"

    def __init__(self, root: Path) -> None:
        nodes = [RedisNode("r1", free_port()), RedisNode("r2", free_port()),
                 *(RedisNode(f"s{i}", free_port()) for i in (1, 2, 3))]
        super().__init__(root, nodes)

    @property
    def data_nodes(self) -> list[RedisNode]:
        return self.nodes[:2]

    @property
    def sentinels(self) -> list[RedisNode]:
        return self.nodes[2:]

    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [node.address for node in self.sentinels]

    def sentinel_url(self, db: int = 0) -> str:
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/{db}"

    def start(self, timeout: float = 30) -> RedisSentinelSet:
        self.root.mkdir(parents=True, exist_ok=True)
        self.save()
        first, second = self.data_nodes
        for node in self.data_nodes:
            self._write_conf(node)
        self.start_node(first)
        self.start_node(second, "--replicaof", "127.0.0.1", str(first.port))
        for sentinel in self.sentinels:
            self._write_conf(sentinel, _SENTINEL.format(
                service=SERVICE, primary_port=first.port, down_after=DOWN_AFTER_MS))
            self.start_node(sentinel, "--sentinel")
        wait_for(lambda: self.primary() == first and self.replica_in_sync(), timeout,
                 "the replica to sync and the Sentinels to agree")
        return self

    def primary(self) -> RedisNode | None:
        """The data node every Sentinel names as the primary (None while they disagree)."""
        named = set()
        for sentinel in self.sentinels:
            out = self.cli(sentinel, "SENTINEL", "get-master-addr-by-name", SERVICE,
                           check=False).split()
            named.add(int(out[1]) if len(out) == 2 and out[1].isdigit() else None)
        ports = {node.port: node for node in self.data_nodes}
        return ports.get(named.pop()) if len(named) == 1 else None  # type: ignore[arg-type]

    def replica_in_sync(self) -> bool:
        """The primary sees a replica online, and the Sentinels know it."""
        primary = self.primary()
        if primary is None:
            return False
        info = self.cli(primary, "INFO", "replication", check=False)
        if "state=online" not in info:
            return False
        replicas = self.cli(self.sentinels[0], "SENTINEL", "replicas", SERVICE, check=False)
        return "127.0.0.1" in replicas

    def failover(self) -> None:
        """``SENTINEL FAILOVER``: promote the replica without waiting for the primary to fail."""
        self.cli(self.sentinels[0], "SENTINEL", "FAILOVER", SERVICE)

    def restart(self, node: RedisNode) -> None:
        """Start a killed data node again; the Sentinels make it a replica of the new primary."""
        self.start_node(node)

    def pristine(self) -> bool:
        return (all(self.running(node) for node in self.nodes)
                and self.primary() == self.data_nodes[0] and self.replica_in_sync())

    def rebuild(self) -> RedisSentinelSet:
        """A fresh set on the same ports (after a test failed the primary over)."""
        self.kill_all(wipe=True)
        return self.start()

    def status(self) -> dict[str, Any]:
        primary = self.primary()
        return {"root": str(self.root), "service": SERVICE,
                "primary": primary.name if primary else None,
                "sentinel_url": self.sentinel_url(),
                "nodes": [{**asdict(node), "running": port_open(node.port)}
                          for node in self.nodes]}


class RedisClusterSet(_Servers):
    """Six cluster nodes ``c1``..``c6``: three primaries with one replica each."""

    kind = "cluster"

    def __init__(self, root: Path) -> None:
        super().__init__(root, [RedisNode(f"c{i}", free_port(), free_port())
                                for i in range(1, 7)])

    def start(self, timeout: float = 60) -> RedisClusterSet:
        self.root.mkdir(parents=True, exist_ok=True)
        self.save()
        for node in self.nodes:
            self._write_conf(node, _CLUSTER.format(timeout=CLUSTER_NODE_TIMEOUT_MS,
                                                   bus_port=node.bus_port))
            self.start_node(node)
        run(["redis-cli", "--cluster", "create",
             *(f"127.0.0.1:{node.port}" for node in self.nodes),
             "--cluster-replicas", "1", "--cluster-yes"], timeout=60)
        wait_for(self.healthy, timeout, "the cluster to report state ok on every node")
        return self

    def startup_url(self) -> str:
        return self.nodes[0].url()

    def cluster_info(self, node: RedisNode) -> dict[str, str]:
        out = self.cli(node, "CLUSTER", "INFO", check=False)
        return dict(line.strip().split(":", 1) for line in out.splitlines() if ":" in line)

    def roles(self) -> dict[str, str]:
        """Node name -> ``master``/``slave``/``fail`` as a running node's CLUSTER NODES says."""
        for node in self.nodes:
            if not self.running(node):
                continue
            out = self.cli(node, "CLUSTER", "NODES", check=False)
            by_port = {n.port: n.name for n in self.nodes}
            roles = {}
            for line in out.splitlines():
                fields = line.split()
                if len(fields) < 3:
                    continue
                port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
                flags = fields[2]
                role = "fail" if "fail" in flags and "?" not in flags else (
                    "master" if "master" in flags else "slave")
                roles[by_port.get(port, str(port))] = role
            return roles
        return {}

    def primaries(self) -> list[RedisNode]:
        roles = self.roles()
        return [node for node in self.nodes if roles.get(node.name) == "master"]

    def healthy(self) -> bool:
        """Every node up, cluster_state ok everywhere, three primaries each with a replica."""
        if not all(self.running(node) for node in self.nodes):
            return False
        if any(self.cluster_info(node).get("cluster_state") != "ok" for node in self.nodes):
            return False
        roles = self.roles()
        return sorted(roles.values()) == ["master"] * 3 + ["slave"] * 3

    def restart(self, node: RedisNode) -> None:
        """Start a killed node again; it rejoins (as a replica of whoever took its slots)."""
        self.start_node(node)

    def rebuild(self) -> RedisClusterSet:
        """A fresh cluster on the same ports (after a test left a node killed or promoted)."""
        self.kill_all(wipe=True)
        return self.start()

    def status(self) -> dict[str, Any]:
        roles = self.roles()
        return {"root": str(self.root), "startup_url": self.startup_url(),
                "nodes": [{**asdict(node), "running": port_open(node.port),
                           "role": roles.get(node.name)} for node in self.nodes]}
