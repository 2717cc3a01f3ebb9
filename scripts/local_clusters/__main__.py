"""Start, stop and inspect the local clusters: ``python -m instrumented_clients.testing.clusters``.

Usage: ``clusters [--dir DIR] (start|stop|status) KIND`` where KIND is ``rabbitmq``,
``postgres``, ``redis-sentinel`` or ``redis-cluster``. ``start`` prints the status (ports,
URLs) as JSON; the clusters live under ``DIR`` (default: a directory in the system's temporary
directory) until ``stop`` removes them. ``scripts/clusters.sh`` runs this.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scripts.local_clusters.postgres_pair import PostgresPair
from scripts.local_clusters.rabbitmq_cluster import RabbitCluster
from scripts.local_clusters.redis_servers import RedisClusterSet, RedisSentinelSet

__all__ = ["main"]

_USAGE = ("usage: clusters [--dir DIR] (start|stop|status) "
          "(rabbitmq|postgres|redis-sentinel|redis-cluster)")
_KINDS: dict[str, tuple[Any, str]] = {
    "rabbitmq": (RabbitCluster, "cluster.json"),
    "postgres": (PostgresPair, "pair.json"),
    "redis-sentinel": (RedisSentinelSet, "sentinel.json"),
    "redis-cluster": (RedisClusterSet, "cluster.json"),
}
_DEFAULT_DIR = Path(tempfile.gettempdir()) / "instrumented-clients-clusters"


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    base = _DEFAULT_DIR
    if len(arguments) >= 2 and arguments[0] == "--dir":
        base = Path(arguments[1])
        del arguments[:2]
    if len(arguments) != 2 or arguments[0] not in ("start", "stop", "status") or \
            arguments[1] not in _KINDS:
        print(_USAGE, file=sys.stderr)
        return 2
    action, kind = arguments
    root = base / kind
    cluster_class, state_name = _KINDS[kind]
    state_file = root / state_name
    if action == "start":
        if state_file.exists():
            print(f"{kind}: already started under {root}; stop it first", file=sys.stderr)
            return 1
        root.mkdir(parents=True, exist_ok=True)
        cluster = cluster_class(root)
        try:
            cluster.start()
        except BaseException:
            cluster.stop()
            raise
    elif not state_file.exists():
        print(f"{kind}: not started (nothing under {root})", file=sys.stderr)
        return 1 if action == "status" else 0
    else:
        cluster = cluster_class.load(root)
        if action == "stop":
            cluster.stop()
            print(f"{kind}: stopped and removed {root}")
            return 0
    print(json.dumps(cluster.status(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
