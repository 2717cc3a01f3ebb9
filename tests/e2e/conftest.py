"""A real Prometheus and Alertmanager on loopback ports, and the workload they scrape."""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from instrumented_clients.observability import generate
from instrumented_clients.testing import FaultProxy, wait_until
from tests.observability_helpers import ROOT
from tests.otlp_receiver import OtlpReceiver

TIME_SCALE = 0.02  # `for: 2m` becomes 3 s, a 5m window 6 s


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports: every socket stays bound until all are chosen, so the
    kernel cannot hand the same port out twice."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def not_up(stack: Stack, url: str) -> str:
    return f"{url} not up\n{stack.log_tail()}"


def reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass
class Stack:
    """Two workload processes with the same client names: ``metrics`` (instance ``faulted``)
    reaches the services through the proxies, ``healthy`` directly and is never faulted."""

    prometheus: str
    alertmanager: str
    metrics: str
    redis: FaultProxy
    rabbitmq: FaultProxy
    postgres: FaultProxy
    logs: Path
    faulted: str
    healthy: str
    otlp: OtlpReceiver
    started: float = field(default_factory=time.time)

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        result: list[dict[str, Any]] = get_json(url)["data"]["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        """Alertmanager's current alerts (resolved ones are not listed)."""
        alerts: list[dict[str, Any]] = get_json(f"{self.alertmanager}/api/v2/alerts")
        return alerts

    def log_tail(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
                         for p in sorted(self.logs.glob("*.log")))


class Processes:
    """Started subprocesses, each stopped (by its own handle) at the end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[tuple[subprocess.Popen[bytes], Any]] = []

    def start(self, name: str, argv: list[str], cwd: Path) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        process = subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        self.started.append((process, log))
        return process

    def stop_all(self) -> None:
        for process, _ in reversed(self.started):
            if process.poll() is None:
                process.terminate()
        for process, log in reversed(self.started):
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
            log.close()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    for tool in ("prometheus", "prometheus-alertmanager"):
        assert shutil.which(tool), f"{tool} is not installed (make services installs it)"
    root = tmp_path_factory.mktemp("e2e")
    logs = root / "logs"
    logs.mkdir()
    generate(root / "generated", time_scale=TIME_SCALE)
    processes = Processes(logs)
    proxies = [FaultProxy("127.0.0.1", port).start() for port in (6379, 5672, 5432)]
    redis_proxy, rabbitmq_proxy, postgres_proxy = proxies
    metrics_port, healthy_port, prometheus_port, alertmanager_port = free_ports(4)
    otlp = OtlpReceiver()
    try:
        processes.start("workload", [
            sys.executable, "-m", "tests.e2e.workload", "--metrics-port", str(metrics_port),
            "--redis-port", str(redis_proxy.port), "--rabbitmq-port", str(rabbitmq_proxy.port),
            "--postgres-port", str(postgres_proxy.port), "--otlp-endpoint", otlp.endpoint,
        ], cwd=ROOT)
        processes.start("workload-healthy", [
            sys.executable, "-m", "tests.e2e.workload", "--metrics-port", str(healthy_port),
            "--redis-port", "6379", "--rabbitmq-port", "5672", "--postgres-port", "5432",
            "--otlp-endpoint", otlp.endpoint,
        ], cwd=ROOT)
        shutil.copy(ROOT / "alertmanager" / "alertmanager.yml", root / "alertmanager.yml")
        processes.start("alertmanager", [
            "prometheus-alertmanager", f"--config.file={root / 'alertmanager.yml'}",
            f"--storage.path={root / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{alertmanager_port}",
            "--cluster.listen-address=",  # no gossip: a single, private instance
        ], cwd=root)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(root / "generated" / "alerts" / "*.rules.yml")],
            "alerting": {"alertmanagers": [
                {"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]},
            "scrape_configs": [{"job_name": "workload", "static_configs": [
                {"targets": [f"127.0.0.1:{metrics_port}", f"127.0.0.1:{healthy_port}"]}]}],
        }
        (root / "prometheus.yml").write_text(yaml.safe_dump(config))
        processes.start("prometheus", [
            "prometheus", f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
            "--enable-feature=exemplar-storage", "--rules.alert.resend-delay=1s",
        ], cwd=root)
        stack = Stack(f"http://127.0.0.1:{prometheus_port}",
                      f"http://127.0.0.1:{alertmanager_port}",
                      f"http://127.0.0.1:{metrics_port}/metrics",
                      redis_proxy, rabbitmq_proxy, postgres_proxy, logs,
                      faulted=f"127.0.0.1:{metrics_port}", healthy=f"127.0.0.1:{healthy_port}",
                      otlp=otlp)
        for url in (stack.metrics, f"http://{stack.healthy}/metrics", f"{stack.prometheus}/-/ready",
                    f"{stack.alertmanager}/-/ready"):
            wait_until(functools.partial(reachable, url), 30, interval=0.2,
                       message=functools.partial(not_up, stack, url))
        yield stack
    finally:
        processes.stop_all()
        for proxy in proxies:
            proxy.stop()
        otlp.close()


@dataclass
class OutageReport:
    firing: dict[str, list[dict[str, Any]]]
    resolved_after: float
    started: float
    ended: float
    alerts: list[dict[str, Any]] = field(default_factory=list)
    """Every alert in Alertmanager once the watched ones fired, inhibited ones included."""


WATCHED = ("ResilientClientCircuitBreakerOpen", "ResilientClientConnectionDown",
           "ResilientClientEventsDropped")
# Present as well before the faults are lifted: the Redis client's error ratio (inhibited by its
# connection-down alert) and its error budget burn (per client, across both processes).
ALSO_AWAITED = ("ResilientClientHighErrorRatio", "ResilientClientErrorBudgetBurnFast")


def _redis_cache(alert: dict[str, Any]) -> bool:
    return alert["labels"].get("system") == "redis" and alert["labels"].get("client") == "cache"


@pytest.fixture(scope="session")
def outage(stack: Stack) -> OutageReport:
    """Cut Redis and RabbitMQ (and reset PostgreSQL connections) until the alerts fire in
    Alertmanager, restore them, and wait until the alerts resolve."""
    wait_until(lambda: len(stack.query(
        'sum by (instance) '
        '(rate(resilient_client_operation_duration_seconds_count{outcome="success"}[5s])) > 0'
    )) == 2, 30, interval=0.5, message=lambda: f"no traffic scraped\n{stack.log_tail()}")
    started = time.time()
    # RabbitMQ first goes silent (a blackhole: publishes are written, never confirmed) and only
    # then refuses: the messages unconfirmed when the link dies are re-sent after the restore.
    stack.rabbitmq.blackhole()
    stack.redis.refuse()

    def cut_postgres_until_a_transaction_retried() -> bool:
        stack.postgres.cut()
        return bool(stack.query(
            'sum(resilient_client_retries_total{system="postgresql",operation="transaction"})'
            " > 0"))

    wait_until(cut_postgres_until_a_transaction_retried, 30, interval=0.3)
    # Scraped after the blackhole began: the publisher has had a scrape interval of publishes.
    wait_until(lambda: stack.query(
        'resilient_client_circuit_breaker_state{system="redis",state!="closed"} == 1'), 30,
        interval=0.3)
    stack.rabbitmq.refuse()

    def watched_firing() -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]] | None:
        everything = stack.alerts()
        alerts = [a for a in everything if a["labels"]["alertname"] in WATCHED]
        active = {name: [a for a in alerts if a["labels"]["alertname"] == name
                         and a["status"]["state"] == "active"] for name in WATCHED}
        awaited = all(any(a["labels"]["alertname"] == name and _redis_cache(a)
                          for a in everything) for name in ALSO_AWAITED)
        return (active, everything) if all(active.values()) and awaited else None

    peak = wait_until(watched_firing, 60, interval=0.5,
                      message=lambda: f"alerts now: {stack.alerts()}\n{stack.log_tail()}")
    assert peak is not None
    firing, everything = peak
    stack.redis.pass_through()
    stack.rabbitmq.pass_through()
    restored = time.time()
    wait_until(lambda: not [a for a in stack.alerts() if a["labels"]["alertname"] in WATCHED],
               90, interval=0.5, message=lambda: f"still firing: {stack.alerts()}")
    return OutageReport(firing, time.time() - restored, started, time.time(), everything)
