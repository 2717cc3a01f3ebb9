"""``instrumented-clients check`` against the real services, and credentials kept out of every
output of ``check`` and ``demo``."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from instrumented_clients.testing import wait_until
from tests.integration.demo.helpers import (
    demo_env,
    get,
    health,
    read_base_url,
    start_demo,
    stop,
    unique_prefix,
)

pytestmark = pytest.mark.integration

SECRET = "Pa55w0rd-Do-Not-Leak"


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def check(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "instrumented_clients", "check", *args],
                          env=demo_env(tmp_path, **env), cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, check=False)


def test_check_all_up_exits_0(tmp_path: Path) -> None:
    result = check(tmp_path, DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:5432/test",
                   REDIS_URL="redis://127.0.0.1:6379/0",
                   RABBITMQ_URL="amqp://guest:guest@127.0.0.1:5672/")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["DEPENDENCY", "SYSTEM", "ADDRESS", "REQUIRED", "STATE",
                                "LATENCY", "ERROR"]
    assert [line.split()[:5] for line in lines[1:4]] == [
        ["database", "postgresql", "127.0.0.1:5432", "yes", "up"],
        ["redis", "redis", "127.0.0.1:6379", "no", "up"],
        ["rabbitmq", "rabbitmq", "127.0.0.1:5672", "no", "up"],
    ]
    assert "status: healthy" in result.stdout


def test_check_required_down_exits_1_optional_down_exits_0(tmp_path: Path) -> None:
    port = closed_port()
    down_db = check(tmp_path, "--timeout", "2",
                    DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:{port}/test")
    assert down_db.returncode == 1
    assert "status: unhealthy (required down: database)" in down_db.stdout
    row = next(line for line in down_db.stdout.splitlines() if line.startswith("database"))
    assert " down " in row
    assert "connection: OperationalError" in row

    down_redis = check(tmp_path, "--only", "redis", "--json",
                       REDIS_URL=f"redis://127.0.0.1:{port}/0")
    assert down_redis.returncode == 0  # optional: degraded, not failed
    report = json.loads(down_redis.stdout)
    assert report["status"] == "degraded"
    assert report["dependencies"]["redis"]["state"] == "down"
    assert report["dependencies"]["redis"]["error_category"] == "connection"
    assert report["dependencies"]["redis"]["latency_seconds"] >= 0

    required_rabbit = check(tmp_path, "--only", "rabbitmq",
                            RABBITMQ_URL=f"amqp://guest:guest@127.0.0.1:{port}/",
                            RABBITMQ_REQUIRED="true")
    assert required_rabbit.returncode == 1
    assert check(tmp_path, "--only", "redis", "--require", "redis",
                 REDIS_URL=f"redis://127.0.0.1:{port}/0").returncode == 1


def test_check_reports_a_wrong_password_as_auth_without_printing_it(tmp_path: Path) -> None:
    result = check(tmp_path, "--only", "rabbitmq", "--require", "rabbitmq",
                   RABBITMQ_URL=f"amqp://guest:{SECRET}@127.0.0.1:5672/")
    assert result.returncode == 1
    assert "auth: ProbableAuthenticationError" in result.stdout
    assert SECRET not in result.stdout + result.stderr


def test_no_password_in_health_metrics_logs_or_output(tmp_path: Path) -> None:
    port = closed_port()
    env = demo_env(
        tmp_path,
        DATABASE_URL=f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:{port}/test",
        REDIS_URL=f"redis://default:{SECRET}@127.0.0.1:{port}/0",
        RABBITMQ_URL=f"amqp://guest:{SECRET}@127.0.0.1:{port}/",
        DB_RETRY_BASE_DELAY="0.05", REDIS_RETRY_BASE_DELAY="0.05", RABBITMQ_RETRY_DELAY="0.1",
        RABBITMQ_RETRY_MAX_DELAY="0.5",
    )
    started = time.monotonic()
    process = start_demo(tmp_path, env, "--prefix", unique_prefix(), "--rate", "20",
                         "--flush-timeout", "1")
    try:
        base = read_base_url(process)
        wait_until(lambda: health(base)["status"] == "unhealthy",
                   timeout=max(0.1, 5 - (time.monotonic() - started)))
        wait_until(lambda: health(base)["dependencies"]["order-events"]["reconnect_attempts"]
                   >= 2 and health(base)["dependencies"]["orders-db"]["last_error"], timeout=30)
        ready_status, ready_body = get(f"{base}/ready")
        assert ready_status == 503
        bodies = [get(f"{base}/health")[1], ready_body, get(f"{base}/metrics")[1]]
        report = json.loads(bodies[0])
        assert report["dependencies"]["orders-db"]["address"] == f"127.0.0.1:{port}"
        assert "OperationalError" in report["dependencies"]["orders-db"]["last_error"]
    finally:
        code, out = stop(process)
    stderr = (tmp_path / "demo-stderr.log").read_text()
    assert code == 0
    assert "reconnect attempt" in stderr  # the logs did run
    for text in (*bodies, out, stderr):
        assert SECRET not in text
    checked = check(tmp_path, "--timeout", "2", **{k: v for k, v in env.items()
                                                   if k.endswith("_URL")})
    assert checked.returncode == 1
    assert SECRET not in checked.stdout + checked.stderr
