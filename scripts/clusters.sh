#!/usr/bin/env bash
# Local clusters for failover tests and experiments, on loopback ports of their own:
#   scripts/clusters.sh start|stop|status rabbitmq   3 RabbitMQ nodes joined in one cluster
#   scripts/clusters.sh start|stop|status postgres   PostgreSQL primary + synchronous standby
#   scripts/clusters.sh start|stop|status redis-sentinel   Redis primary + replica + 3 Sentinels
#   scripts/clusters.sh start|stop|status redis-cluster    Redis Cluster: 3 primaries, 3 replicas
# No Docker: the machine's rabbitmq-server, PostgreSQL and redis-server binaries (scripts/ensure-services.sh
# installs them). Needs root or the postgres user for PostgreSQL. IC_CLUSTER_DIR: where the
# clusters' directories go (default: instrumented-clients-clusters in the temporary directory).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${here}/.venv/bin/python"
[ -x "$python" ] || python=python3
dir_option=()
[ -z "${IC_CLUSTER_DIR:-}" ] || dir_option=(--dir "$IC_CLUSTER_DIR")
cd "$here"
exec "$python" -m scripts.local_clusters "${dir_option[@]}" "$@"
