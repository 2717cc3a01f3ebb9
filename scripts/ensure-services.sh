#!/usr/bin/env bash
# Make sure the local services and tools the tests use are installed and running.
# Idempotent: a service already listening is left alone. Needs root (apt-get) only for what is
# missing, as on a fresh Debian machine.
set -euo pipefail

log() { printf 'ensure-services: %s\n' "$*"; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

wait_port() {  # port name seconds
  for _ in $(seq 1 "$3"); do
    listening "$1" && return 0
    sleep 1
  done
  log "$2 did not start listening on port $1" >&2
  return 1
}

# Tools: promtool/prometheus, alertmanager/amtool, docker-compose (offline validation), tmux.
missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v amtool >/dev/null || missing+=(prometheus-alertmanager)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v tmux >/dev/null || missing+=(tmux)
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"

# PostgreSQL
if ! listening 5432; then
  command -v pg_lsclusters >/dev/null || apt_install postgresql
  cluster=$(pg_lsclusters -h | awk 'NR==1{print $1}')
  log "starting PostgreSQL $cluster"
  pg_ctlcluster --skip-systemctl-redirect "$cluster" main start || true
  wait_port 5432 PostgreSQL 60
  su postgres -c "psql -tAc \"SELECT 1 FROM pg_database WHERE datname='test'\"" | grep -q 1 \
    || su postgres -c "createdb test"
fi

# MariaDB
if ! listening 3306; then
  command -v mariadbd >/dev/null || apt_install mariadb-server
  log "starting MariaDB"
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
  start-stop-daemon --start --oknodo --background --exec "$(command -v mariadbd)"
  wait_port 3306 MariaDB 60
  mariadb -uroot -e "CREATE DATABASE IF NOT EXISTS test" || true
fi

# Redis
if ! listening 6379; then
  command -v redis-server >/dev/null || apt_install redis-server
  log "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  wait_port 6379 Redis 30
fi

# RabbitMQ
if ! listening 5672; then
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
  log "starting RabbitMQ"
  rabbitmq-server -detached
  wait_port 5672 RabbitMQ 120
  rabbitmqctl await_startup >/dev/null 2>&1 || true
fi

# The local clusters of the failover tests (scripts/clusters.sh) run the same servers' binaries
# themselves, even where the shared services above come from elsewhere.
compgen -G "/usr/lib/postgresql/*/bin/pg_basebackup" >/dev/null || apt_install postgresql
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || command -v rabbitmq-server >/dev/null \
  || apt_install rabbitmq-server
command -v runuser >/dev/null || apt_install util-linux

log "PostgreSQL, MariaDB, Redis and RabbitMQ are up"
