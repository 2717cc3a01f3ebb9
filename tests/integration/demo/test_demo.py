"""The demo as a new user meets it: Redis and RabbitMQ unreachable at start, then back."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from instrumented_clients.testing import FaultProxy, wait_until
from tests.integration.demo.helpers import (
    REPO,
    demo_env,
    get,
    health,
    metric,
    read_base_url,
    start_demo,
    stop,
    unique_prefix,
)

pytestmark = pytest.mark.integration


def test_demo_starts_degraded_buffers_and_recovers_without_losing_an_event(
    tmp_path: Path,
) -> None:
    with FaultProxy("127.0.0.1", 6379) as redis_proxy, \
            FaultProxy("127.0.0.1", 5672) as rabbit_proxy:
        redis_proxy.refuse()
        rabbit_proxy.refuse()
        env = demo_env(
            tmp_path,
            REDIS_URL=redis_proxy.url("redis://localhost:6379/0"),
            RABBITMQ_URL=rabbit_proxy.url("amqp://guest:guest@localhost:5672/"),
            RABBITMQ_RETRY_DELAY="0.2",
            RABBITMQ_RETRY_MAX_DELAY="1",
            REDIS_RETRY_BASE_DELAY="0.05",
        )
        started = time.monotonic()
        process = start_demo(tmp_path, env, "--prefix", unique_prefix(), "--rate", "20",
                             "--breaker-cooldown", "1", "--flush-timeout", "30")
        try:
            base = read_base_url(process)
            # /health answers, degraded, within 5 s of the process's start.
            wait_until(lambda: get(f"{base}/health")[0] == 200, timeout=5)
            wait_until(lambda: health(base)["status"] == "degraded",
                       timeout=max(0.1, 5 - (time.monotonic() - started)))
            assert time.monotonic() - started < 5
            assert get(f"{base}/ready")[0] == 200  # only optional dependencies are down

            # Events pile up in the buffer; retries and reconnect attempts are counted.
            wait_until(lambda: health(base)["dependencies"]["order-events"]["pending_events"]
                       >= 10, timeout=30)
            report = health(base)
            assert report["dependencies"]["order-events"]["connected"] is False
            assert report["dependencies"]["orders-cache"]["connected"] is False
            assert report["dependencies"]["orders-db"]["connected"] is True
            assert any("order-events" in issue and "pending events" in issue
                       for issue in report["issues"])
            wait_until(lambda: metric(base, "resilient_client_retries_total",
                                      system="redis") > 0, timeout=30)
            assert metric(base, "resilient_client_buffer_events", client="order-events") >= 10
            assert metric(base, "resilient_client_reconnect_attempts_total", system="rabbitmq",
                          outcome="failure") > 0
            assert metric(base, "resilient_client_operation_duration_seconds_count",
                          client="order-events",
                          outcome="buffered") >= 10

            # The servers "appear": the proxies let traffic through again.
            redis_proxy.pass_through()
            rabbit_proxy.pass_through()
            wait_until(lambda: health(base)["status"] == "healthy", timeout=60)
            wait_until(lambda: metric(base, "resilient_client_buffer_events",
                                      client="order-events") == 0, timeout=60)
            assert metric(base, "resilient_client_buffer_flushed_events_total",
                          client="order-events") >= 10
            assert metric(base, "resilient_client_buffer_dropped_events_total",
                          client="order-events") == 0
            wait_until(lambda: metric(base, "resilient_client_consumed_messages_total",
                                      client="order-consumer", outcome="ack") >= 10, timeout=30)
        finally:
            code, out = stop(process)
    assert code == 0, out
    assert "(SIGTERM)" in out
    assert "no event lost" in out, out
    assert " 0 dropped" in out


def test_chaos_moves_the_metrics_and_loses_nothing(tmp_path: Path) -> None:
    env = demo_env(tmp_path, REDIS_URL="redis://127.0.0.1:6379/0",
                   RABBITMQ_URL="amqp://guest:guest@127.0.0.1:5672/",
                   RABBITMQ_RETRY_DELAY="0.2", RABBITMQ_RETRY_MAX_DELAY="1",
                   REDIS_RETRY_BASE_DELAY="0.05")
    process = start_demo(tmp_path, env, "--prefix", unique_prefix(), "--rate", "20", "--chaos",
                         "--chaos-interval", "2", "--breaker-cooldown", "1",
                         "--flush-timeout", "30")
    try:
        base = read_base_url(process)
        # The schedule cuts Redis, then RabbitMQ: both clients see their connection go away.
        wait_until(lambda: metric(base, "resilient_client_connection_transitions_total",
                                  client="order-events", to_state="disconnected") >= 1
                   and metric(base, "resilient_client_connection_transitions_total",
                              client="orders-cache", to_state="disconnected") >= 1,
                   timeout=60)
        wait_until(lambda: metric(base, "resilient_client_reconnect_attempts_total",
                                  client="order-events", outcome="success") >= 1, timeout=60)
        wait_until(lambda: health(base)["status"] == "healthy", timeout=60)
        # The scrape, with every family the demo moved, is valid for Prometheus's own linter.
        promtool = shutil.which("promtool")
        assert promtool, "promtool is missing: run `make services`"
        linted = subprocess.run([promtool, "check", "metrics"], input=get(f"{base}/metrics")[1],
                                capture_output=True, text=True, timeout=30, check=False)
        assert linted.returncode == 0, linted.stdout + linted.stderr
    finally:
        code, out = stop(process)
    stderr = (tmp_path / "demo-stderr.log").read_text()
    assert code == 0, out
    assert "chaos: cut on orders-cache" in stderr
    assert "chaos: cut on order-events" in stderr
    assert "no event lost" in out, out + stderr[-3000:]


def test_demo_serves_on_metrics_port_like_the_compose_file_says(tmp_path: Path) -> None:
    """docker-compose.yml sets METRICS_PORT and publishes it; Prometheus scrapes demo:<it>."""
    compose = (REPO / "docker-compose.yml").read_text()
    port_in_compose = compose.split('METRICS_PORT: "', 1)[1].split('"', 1)[0]
    assert f'ports: ["{port_in_compose}:{port_in_compose}"]' in compose
    assert f"demo:{port_in_compose}" in (REPO / "prometheus" / "prometheus.yml").read_text()
    assert f"EXPOSE {port_in_compose}" in (REPO / "Dockerfile").read_text()

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = demo_env(tmp_path, METRICS_PORT=str(port), REDIS_URL="redis://127.0.0.1:6379/0",
                   RABBITMQ_URL="amqp://guest:guest@127.0.0.1:5672/")
    stderr = (tmp_path / "demo-stderr.log").open("w")
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "instrumented_clients", "demo", "--no-tui", "--prefix",
             unique_prefix(), "--host", "127.0.0.1"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
    finally:
        stderr.close()
    try:
        base = read_base_url(process)
        assert base == f"http://127.0.0.1:{port}"
        wait_until(lambda: get(f"{base}/health")[0] == 200, timeout=10)
    finally:
        code, out = stop(process)
    assert code == 0, out


def test_required_broker_that_stays_away_is_exit_1_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = demo_env(tmp_path, RABBITMQ_REQUIRED="true", RABBITMQ_MAX_RETRIES="2",
                   RABBITMQ_RETRY_DELAY="0.1",
                   RABBITMQ_URL=f"amqp://guest:Hidden-Pw@127.0.0.1:{port}/")
    process = start_demo(tmp_path, env, "--prefix", unique_prefix())
    base = read_base_url(process)  # /health is served while the publisher waits
    assert base.startswith("http://")
    try:
        out = process.communicate(timeout=60)[0]  # it exits by itself once the policy is spent
    finally:
        stop(process)
    code = process.returncode
    stderr = (tmp_path / "demo-stderr.log").read_text()
    assert code == 1, out + stderr
    line = next(line for line in stderr.splitlines() if line.startswith("instrumented-clients"))
    assert "BrokerUnavailableError" in line
    assert f"127.0.0.1:{port}" in line
    assert "Hidden-Pw" not in out + stderr
