"""serve_metrics_and_health over real HTTP on loopback, and multiprocess aggregation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from instrumented_clients.health import (
    HealthRegistry,
    clear_multiprocess_dir,
    serve_metrics_and_health,
)
from instrumented_clients.resilience import ConnectionState, ConnectionStateMachine
from instrumented_clients.telemetry import Telemetry
from tests.unit.health.test_registry import FakeClient

pytestmark = pytest.mark.integration

SECRET = "hunter2-Xy9"


def fetch(url: str, accept: str | None = None) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read().decode()


def test_server_serves_health_ready_and_metrics() -> None:
    registry = CollectorRegistry()
    telemetry = Telemetry(registry=registry, tracing=False, logs=False)
    telemetry.prepare("redis", "cache", ["get"])
    ConnectionStateMachine("redis", "cache", instrumentation=telemetry).transition(
        ConnectionState.CONNECTED
    )
    health = HealthRegistry()
    events = FakeClient("events", connected=False, pending_events=7,
                        url=f"amqp://guest:{SECRET}@broker:5672/")
    health.register(FakeClient("db"))
    health.register(events, required=False)
    with serve_metrics_and_health(0, registry=registry, health=health, host="127.0.0.1") as server:
        assert server.port > 0
        status, _, body = fetch(f"{server.url}/health")
        report = json.loads(body)
        assert status == 200
        assert report["status"] == "degraded"
        assert report["dependencies"]["events"]["pending_events"] == 7
        assert SECRET not in body
        assert fetch(f"{server.url}/ready")[0] == 200

        status, headers, text = fetch(f"{server.url}/metrics", accept="text/plain")
        assert status == 200
        assert headers["Content-Type"].startswith("text/plain")
        assert ('resilient_client_connection_state{client="cache",state="connected",'
                'system="redis"} 1.0') in text
        assert SECRET not in text
        _, headers, text = fetch(f"{server.url}/metrics",
                                 accept="application/openmetrics-text; version=1.0.0")
        assert headers["Content-Type"].startswith("application/openmetrics-text")
        assert text.endswith("# EOF\n")

        health.register(FakeClient("cache", connected=False))  # a required one goes down
        status, _, body = fetch(f"{server.url}/ready")
        assert status == 503
        assert json.loads(body)["status"] == "unhealthy"
        assert fetch(f"{server.url}/health")[0] == 200
    # after shutdown the port is closed
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{server.url}/health", timeout=2)


def test_port_in_use_raises_in_the_caller() -> None:
    with serve_metrics_and_health(0, registry=CollectorRegistry(), host="127.0.0.1") as server, \
            pytest.raises(OSError, match="in use"):
        serve_metrics_and_health(server.port, registry=CollectorRegistry(), host="127.0.0.1")


# A worker process: multiprocess mode is switched on by the environment *before* prometheus_client
# is imported, exactly as under gunicorn. It reports the same client's state and buffer, then
# (worker "serve") serves the scrape for everyone, or (worker "quiet") just stays alive.
WORKER = textwrap.dedent("""
    import sys
    from instrumented_clients.health import HealthRegistry, serve_metrics_and_health
    from instrumented_clients.resilience import ConnectionState, ConnectionStateMachine, EventBuffer
    from instrumented_clients.resilience import Guard, RetryPolicy
    from instrumented_clients.telemetry import Telemetry

    role, depth = sys.argv[1], int(sys.argv[2])
    telemetry = Telemetry(tracing=False, logs=False)
    telemetry.prepare("rabbitmq", "events", ["publish"])
    ConnectionStateMachine("rabbitmq", "events", instrumentation=telemetry).transition(
        ConnectionState.CONNECTED)
    buffer = EventBuffer(100, system="rabbitmq", client="events", instrumentation=telemetry)
    for item in range(depth):
        buffer.put(item)
    Guard(RetryPolicy(), instrumentation=telemetry, system="rabbitmq", client="events",
          operation="publish").call(lambda: None)
    if role == "serve":
        server = serve_metrics_and_health(0, health=HealthRegistry(), host="127.0.0.1")
        print(server.port, flush=True)
    else:
        print("ready", flush=True)
    sys.stdin.read()  # stay alive (live gauges) until the test closes our stdin
""")


def _metric_lines(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name + "{")]


def test_multiprocess_mode_sums_two_processes_without_pid(tmp_path: Path) -> None:
    directory = tmp_path / "prom"
    (directory / "stale.db").parent.mkdir()
    (directory / "stale.db").write_bytes(b"left over from a previous run")
    assert clear_multiprocess_dir(directory) == directory
    assert list(directory.iterdir()) == []

    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    quiet = subprocess.Popen([sys.executable, "-c", WORKER, "quiet", "3"], env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    serving = subprocess.Popen([sys.executable, "-c", WORKER, "serve", "5"], env=env,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert quiet.stdout is not None
        assert serving.stdout is not None
        assert quiet.stdout.readline().strip() == "ready"
        port = int(serving.stdout.readline())
        status, _, text = fetch(f"http://127.0.0.1:{port}/metrics", accept="text/plain")
    finally:
        for process in (quiet, serving):
            assert process.stdin is not None
            process.stdin.close()
            process.wait(timeout=30)
            if process.stdout is not None:
                process.stdout.close()
    assert status == 200
    assert 'pid="' not in text
    # The operation histogram falls back to prometheus_client's own in multiprocess mode.
    operations = _metric_lines(text, "resilient_client_operation_duration_seconds_count")
    assert ('resilient_client_operation_duration_seconds_count{client="events",'
            'operation="publish",outcome="success",system="rabbitmq"} 2.0') in operations
    depth = _metric_lines(text, "resilient_client_buffer_events")
    assert depth == ['resilient_client_buffer_events{client="events",system="rabbitmq"} 8.0']
    buffered = _metric_lines(text, "resilient_client_buffered_events_total")
    assert buffered == [
        'resilient_client_buffered_events_total{client="events",system="rabbitmq"} 8.0'
    ]
    connected = [line for line in _metric_lines(text, "resilient_client_connection_state")
                 if 'state="connected"' in line]
    assert connected == ['resilient_client_connection_state{client="events",state="connected",'
                         'system="rabbitmq"} 2.0']


def test_defaults_serve_the_global_registry_and_the_default_health_registry() -> None:
    from instrumented_clients.health import get_default_health_registry

    default_health = get_default_health_registry()
    assert get_default_health_registry() is default_health
    client = FakeClient(f"default-{os.getpid()}")
    default_health.register(client)
    try:
        with serve_metrics_and_health(0, host="127.0.0.1") as server:
            _, _, text = fetch(f"{server.url}/metrics")
            assert "python_info" in text  # prometheus_client's global REGISTRY
            report = json.loads(fetch(f"{server.url}/health")[2])
            assert client.name in report["dependencies"]
    finally:
        default_health.unregister(client.name)
