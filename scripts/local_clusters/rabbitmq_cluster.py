"""A local RabbitMQ cluster of several nodes on loopback ports of their own, without Docker.

Every node is a ``rabbitmq-server`` of this machine's installation started with its own node name,
AMQP and distribution ports, data and log directories, configuration (management plugin off) and
Erlang cookie, and its own ``epmd`` port, so it never meets a RabbitMQ already running here. The
nodes join the first one with ``rabbitmqctl join_cluster``. Failure detection is shortened
(``net_ticktime``) so a killed node is noticed in seconds.

Used by the tests (one cluster per session) and by humans through ``scripts/clusters.sh``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from instrumented_clients.testing import free_port
from scripts.local_clusters._process import port_open, run, wait_for

__all__ = ["RabbitCluster", "RabbitNode"]

_CONFIG = """\
listeners.tcp.1 = 127.0.0.1:{amqp_port}
disk_free_limit.absolute = 50MB
log.console = false
log.file.level = info
"""
# Short distribution ticks: a node that stops answering is declared down in ~net_ticktime s.
_ADVANCED = "[{kernel, [{net_ticktime, 8}, {inet_dist_use_interface, {127,0,0,1}}]}].\n"
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Two cores are shared with other work: the VM must not spin its schedulers waiting for work.
_ERL_ARGS = "+sbwt none +sbwtdcpu none +sbwtdio none +S 2:2"


@dataclass(frozen=True)
class RabbitNode:
    """One node of the cluster: its Erlang node name and its loopback ports."""

    index: int
    nodename: str
    amqp_port: int
    dist_port: int

    def url(self, user: str = "guest", password: str = "guest", vhost: str = "%2F") -> str:
        return f"amqp://{user}:{password}@127.0.0.1:{self.amqp_port}/{vhost}"


class RabbitCluster:
    """``size`` RabbitMQ nodes clustered together under ``root`` (created; removed by stop).

    Args:
        root: a directory of its own for data, logs, configuration and the cookie.
        size: number of nodes (3 for quorum queues that survive one node's loss).
        prefix: node names are ``<prefix><n>@localhost``.
    """

    def __init__(self, root: Path, *, size: int = 3, prefix: str = "ic-rabbit") -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size!r}")
        self.root = Path(root)
        self.epmd_port = free_port()
        ports = [(free_port(), free_port()) for _ in range(size)]
        self.nodes = [RabbitNode(n + 1, f"{prefix}{n + 1}@localhost", amqp, dist)
                      for n, (amqp, dist) in enumerate(ports)]

    # -- state file: lets `scripts/clusters.sh stop` find what `start` made ----------------------

    def save(self) -> None:
        state = {"epmd_port": self.epmd_port, "nodes": [asdict(node) for node in self.nodes]}
        (self.root / "cluster.json").write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, root: Path) -> RabbitCluster:
        state = json.loads((Path(root) / "cluster.json").read_text())
        cluster = cls.__new__(cls)
        cluster.root = Path(root)
        cluster.epmd_port = int(state["epmd_port"])
        cluster.nodes = [RabbitNode(**node) for node in state["nodes"]]
        return cluster

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self, timeout: float = 180) -> RabbitCluster:
        """Start every node at once, then join the others to the first. Returns self."""
        (self.root / "home").mkdir(parents=True, exist_ok=True)
        cookie = self.root / "home" / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(os.urandom(16).hex().upper())
            cookie.chmod(0o400)
        (self.root / "enabled_plugins").write_text("[].\n")
        (self.root / "advanced.config").write_text(_ADVANCED)
        (self.root / "rabbitmq-env.conf").write_text("")
        self.save()
        for node in self.nodes:
            self._launch(node)
        for node in self.nodes:
            self.await_node(node, timeout)
        first = self.nodes[0].nodename
        for node in self.nodes[1:]:
            self.ctl(node, "stop_app")
            self.ctl(node, "join_cluster", first)
            self.ctl(node, "start_app")
        return self

    def _launch(self, node: RabbitNode) -> None:
        config = self.root / f"node{node.index}.conf"
        config.write_text(_CONFIG.format(amqp_port=node.amqp_port))
        env = self._env()
        env.update({
            "RABBITMQ_NODENAME": node.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(node.amqp_port),
            "RABBITMQ_DIST_PORT": str(node.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_PID_FILE": str(self._pid_file(node)),
            "RABBITMQ_CONFIG_FILE": str(config),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.root / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": _ERL_ARGS,
        })
        with contextlib.suppress(FileNotFoundError):
            self._pid_file(node).unlink()
        # -detached forks the VM and returns at once; its output goes to the node's log files.
        subprocess.run([_tool("rabbitmq-server"), "-detached"], env=env, check=True, timeout=60,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def await_node(self, node: RabbitNode, timeout: float = 120) -> None:
        """Wait until the node's application runs and its AMQP port accepts connections."""
        wait_for(lambda: self._pid(node) is not None, min(timeout, 60),
                 f"{node.nodename} to write its pid file (logs: {self.root / 'log'})")
        self.ctl(node, "await_startup", "--timeout", str(int(timeout)), timeout=timeout + 10)
        wait_for(lambda: port_open(node.amqp_port), timeout, f"{node.nodename} AMQP port")

    def stop(self) -> None:
        """Kill every node, stop the cluster's epmd and remove ``root``. Idempotent."""
        for node in self.nodes:
            self.kill(node)
        self._stop_epmd()
        shutil.rmtree(self.root, ignore_errors=True)

    def _stop_epmd(self, timeout: float = 10) -> None:
        # epmd refuses -kill while it still lists a node, and it notices a killed node's death a
        # moment later: ask until its port is closed.
        deadline = time.monotonic() + timeout
        while port_open(self.epmd_port) and time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                run(["epmd", "-port", str(self.epmd_port), "-kill"], env=self._env(),
                    timeout=10, check=False)
            time.sleep(0.2)

    def kill(self, node: RabbitNode) -> int | None:
        """``kill -9`` the node's Erlang VM (no goodbye to its peers or clients); its pid."""
        pid = self._pid(node)
        if pid is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not _alive(pid), 30, f"{node.nodename} (pid {pid}) to exit")
        return pid

    def restart(self, node: RabbitNode, timeout: float = 120) -> None:
        """Start a killed node again; it rejoins the cluster from its own data directory."""
        self._launch(node)
        self.await_node(node, timeout)

    def running(self, node: RabbitNode) -> bool:
        pid = self._pid(node)
        return pid is not None and _alive(pid)

    def status(self) -> dict[str, Any]:
        return {"root": str(self.root), "epmd_port": self.epmd_port,
                "nodes": [{**asdict(node), "running": self.running(node), "url": node.url()}
                          for node in self.nodes]}

    def urls(self) -> list[str]:
        return [node.url() for node in self.nodes]

    def ctl(self, node: RabbitNode, *arguments: str, timeout: float = 120) -> str:
        """``rabbitmqctl -n <node> ...`` with the cluster's cookie and epmd port."""
        return run([_tool("rabbitmqctl"), "-n", node.nodename, *arguments], env=self._env(),
                   timeout=timeout)

    # -- plumbing -------------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        # A fixed environment, not the caller's: no RABBITMQ_* or ERL_* variable of the machine's
        # own broker leaks into the cluster.
        env = {"PATH": _PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        env.update({
            "HOME": str(self.root / "home"),  # the cluster's own Erlang cookie lives here
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_CONF_ENV_FILE": str(self.root / "rabbitmq-env.conf"),
        })
        return env

    def _pid_file(self, node: RabbitNode) -> Path:
        return self.root / f"node{node.index}.pid"

    def _pid(self, node: RabbitNode) -> int | None:
        try:
            return int(self._pid_file(node).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None


def _tool(name: str) -> str:
    # Debian's /usr/sbin wrappers switch to the rabbitmq user and its fixed directories; the
    # scripts behind them take our environment as it is.
    direct = Path("/usr/lib/rabbitmq/bin") / name
    return str(direct) if direct.exists() else (shutil.which(name) or name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return False
