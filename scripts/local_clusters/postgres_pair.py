"""A local PostgreSQL primary with a synchronous streaming standby, on loopback ports of their own.

Both servers are clusters of this machine's PostgreSQL installation (``initdb``/``pg_ctl`` from
``/usr/lib/postgresql/<version>/bin``), run as the ``postgres`` user when started by root, with
data directories under ``root``. The standby is cloned with ``pg_basebackup -R`` and named in the
primary's ``synchronous_standby_names``, so a COMMIT returns only once the standby has the WAL.
Replication timeouts are shortened so a stopped server is noticed in about two seconds.

Used by the tests (one pair per session) and by humans through ``scripts/clusters.sh``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from instrumented_clients.testing import free_port
from scripts.local_clusters._process import port_open, run, wait_for

__all__ = ["PostgresNode", "PostgresPair"]

STANDBY_NAME = "ic_standby"
_USER = "postgres"
_SETTINGS = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{socket_dir}'
max_connections = 60
shared_buffers = 32MB
fsync = off
wal_level = replica
max_wal_senders = 5
wal_keep_size = 64MB
synchronous_commit = on
wal_sender_timeout = 2s
wal_receiver_timeout = 2s
wal_receiver_status_interval = 1s
wal_retrieve_retry_interval = 200ms
"""


@dataclass(frozen=True)
class PostgresNode:
    name: str
    port: int

    @property
    def data(self) -> str:
        return self.name

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{_USER}@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={_USER} dbname={database}"


class PostgresPair:
    """A primary (``pg1`` at first) and a synchronous standby (``pg2``) under ``root``.

    After :meth:`promote_standby` the standby is the primary; :meth:`rebuild` starts a fresh pair.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.nodes = [PostgresNode("pg1", free_port()), PostgresNode("pg2", free_port())]
        self.primary, self.standby = self.nodes
        self._bin = _bin_dir()

    # -- state file -------------------------------------------------------------------------------

    def save(self) -> None:
        state = {"nodes": [asdict(node) for node in self.nodes],
                 "primary": self.primary.name}
        (self.root / "pair.json").write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, root: Path) -> PostgresPair:
        state = json.loads((Path(root) / "pair.json").read_text())
        pair = cls.__new__(cls)
        pair.root = Path(root)
        pair.nodes = [PostgresNode(**node) for node in state["nodes"]]
        first, second = pair.nodes
        pair.primary, pair.standby = (first, second) if state["primary"] == first.name else (
            second, first)
        pair._bin = _bin_dir()
        return pair

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> PostgresPair:
        """initdb the primary, clone the standby, start both; wait until replication is sync."""
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.root, _USER)
        self.primary, self.standby = self.nodes
        self.save()
        primary, standby = self.primary, self.standby
        self._pg("initdb", "-D", self._data(primary), "-U", _USER, "-N", "--auth=trust",
                 "--no-instructions")
        # Synchronous only once the standby exists: until then a COMMIT would wait for it.
        self._configure(primary)
        self._ctl(primary, "start")
        self._pg("psql", "-d", primary.dsn(), "-qAtc", "CREATE DATABASE test")
        self._pg("pg_basebackup", "-D", self._data(standby), "-X", "stream", "-c", "fast", "-R",
                 "-d", f"{primary.dsn()} application_name={STANDBY_NAME}")
        # The clone carries the primary's settings: its own port, and no synchronous standby of
        # its own (once promoted it has none, and its COMMITs must not wait for one).
        self._configure(standby)
        with (Path(self._data(standby)) / "postgresql.auto.conf").open("a") as auto:
            auto.write(f"primary_conninfo = '{primary.dsn()} application_name={STANDBY_NAME}'\n")
        self._ctl(standby, "start")
        self._pg("psql", "-d", primary.dsn(), "-qAt",
                 "-c", f"ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'",
                 "-c", "SELECT pg_reload_conf()")
        wait_for(self.replication_is_sync, timeout, "the standby to stream synchronously")
        return self

    def stop(self) -> None:
        """Stop both servers (immediate) and remove ``root``. Idempotent."""
        for node in self.nodes:
            self.stop_node(node)
        shutil.rmtree(self.root, ignore_errors=True)

    def stop_node(self, node: PostgresNode, mode: str = "immediate") -> None:
        if (Path(self._data(node)) / "postmaster.pid").exists():
            self._ctl(node, "stop", "-m", mode, check=False)

    def start_node(self, node: PostgresNode) -> None:
        """Start a node stopped with :meth:`stop_node` again, in its role."""
        self._ctl(node, "start")

    def running(self, node: PostgresNode) -> bool:
        return port_open(node.port)

    def promote_standby(self, *, stop_primary: bool = True) -> PostgresNode:
        """Stop the primary (unless told not to) and promote the standby; the new primary."""
        if stop_primary:
            self.stop_node(self.primary, "fast")
        self._ctl(self.standby, "promote")
        self.primary, self.standby = self.standby, self.primary
        self.save()
        return self.primary

    def rebuild(self) -> PostgresPair:
        """A fresh pair on the same ports: after a promotion, tests start again from here."""
        for node in self.nodes:
            self.stop_node(node)
            shutil.rmtree(self._data(node), ignore_errors=True)
        return self.start()

    def replication_is_sync(self) -> bool:
        out = self._pg("psql", "-d", self.primary.dsn(), "-qAtc",
                       "SELECT sync_state FROM pg_stat_replication "
                       f"WHERE application_name = '{STANDBY_NAME}'", check=False)
        return out.strip() == "sync"

    def multi_host_url(self, database: str = "test") -> str:
        """One URL naming both servers; libpq picks the one that accepts writes."""
        hosts = "&".join(f"host=127.0.0.1:{node.port}" for node in self.nodes)
        return f"postgresql://{_USER}@/{database}?{hosts}&target_session_attrs=read-write"

    def multi_host_dsn(self, database: str = "test") -> str:
        """The same as a libpq connection string (for psycopg and psql)."""
        hosts = ",".join("127.0.0.1" for _ in self.nodes)
        ports = ",".join(str(node.port) for node in self.nodes)
        return (f"host={hosts} port={ports} user={_USER} dbname={database} "
                "target_session_attrs=read-write")

    def status(self) -> dict[str, Any]:
        return {"root": str(self.root), "primary": self.primary.name,
                "nodes": [{**asdict(node), "running": port_open(node.port),
                           "url": node.url("test")} for node in self.nodes],
                "multi_host_url": self.multi_host_url()}

    # -- plumbing -------------------------------------------------------------------------------

    def _data(self, node: PostgresNode) -> str:
        return str(self.root / node.data)

    def _configure(self, node: PostgresNode) -> None:
        settings = _SETTINGS.format(port=node.port, socket_dir=self.root)
        with (Path(self._data(node)) / "postgresql.conf").open("a") as conf:
            conf.write(settings)

    def _ctl(self, node: PostgresNode, action: str, *options: str, check: bool = True) -> None:
        self._pg("pg_ctl", "-D", self._data(node), "-w", "-t", "60",
                 "-l", str(self.root / f"{node.name}.log"), action, *options, check=check)

    def _pg(self, tool: str, *arguments: str, check: bool = True) -> str:
        return run([str(self._bin / tool), *arguments], user=_USER, check=check, timeout=60)


def _bin_dir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0)
    if not found:
        raise RuntimeError("initdb not found under /usr/lib/postgresql: install postgresql")
    return found[-1].parent

