"""The committed observability files through the real tools: promtool, amtool, docker-compose."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from instrumented_clients.observability import DEFAULT_CONFIG
from tests.observability_helpers import ROOT

pytestmark = pytest.mark.integration


def run(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    assert shutil.which(argv[0]), f"{argv[0]} is not installed (make services installs it)"
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def test_promtool_check_rules_with_fatal_lint() -> None:
    result = run("promtool", "check", "rules", "--lint=all", "--lint-fatal",
                 "alerts/resilient-clients.rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_lint_fails_on_a_duplicated_rule(tmp_path: Path) -> None:
    text = (ROOT / "alerts" / "resilient-clients.rules.yml").read_text()
    group = text.split("- name: resilient-clients.alerts")[0]
    broken = tmp_path / "broken.rules.yml"
    broken.write_text(group + group.split("  rules:\n", 1)[1])  # the recording rules twice
    result = run("promtool", "check", "rules", "--lint=all", "--lint-fatal", str(broken))
    assert result.returncode != 0


def test_promtool_unit_tests_pass() -> None:
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "alerts" / "tests").glob("*.yml"))
    assert len(files) >= 5
    result = run("promtool", "test", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(files)


def test_promtool_unit_tests_of_a_per_client_objective_pass() -> None:
    directory = ROOT / "alerts" / "tests" / "client-objective"
    result = run("promtool", "test", "rules", "client-objective.yml", cwd=directory)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_30_day_tests_tell_a_ratio_of_sums_from_an_average(tmp_path: Path) -> None:
    """Proof the uneven-traffic case can fail: Sloth's average of 5-minute ratios misses it."""
    (tmp_path / "tests").mkdir()
    rules = (ROOT / "alerts" / "resilient-clients.rules.yml").read_text()
    start = rules.index("sum_over_time(", rules.index("record: slo:sli_error:ratio_rate30d"))
    end = rules.index(",\n", start)
    ratio_of_sums = rules[start:end]
    assert "settled:rate1h[30d:1h]" in ratio_of_sums
    average = ("avg without (sloth_window, sloth_id, sloth_service, sloth_slo) "
               "(avg_over_time(slo:sli_error:ratio_rate5m[30d:1h])))")
    (tmp_path / "resilient-clients.rules.yml").write_text(rules.replace(ratio_of_sums, average))
    shutil.copy(ROOT / "alerts" / "tests" / "slo-period.yml", tmp_path / "tests")
    result = run("promtool", "test", "rules", "tests/slo-period.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "uneven" in result.stdout + result.stderr


def test_promtool_unit_tests_catch_a_broken_threshold(tmp_path: Path) -> None:
    """Proof the unit tests can fail: the connection-down alert with `for: 10m` misses its case."""
    (tmp_path / "tests").mkdir()
    rules = (ROOT / "alerts" / "resilient-clients.rules.yml").read_text()
    broken = rules.replace("> 0\n    for: 2m\n", "> 0\n    for: 10m\n", 1)
    assert broken != rules
    (tmp_path / "resilient-clients.rules.yml").write_text(broken)
    shutil.copy(ROOT / "alerts" / "tests" / "connection.yml", tmp_path / "tests")
    result = run("promtool", "test", "rules", "tests/connection.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "ResilientClientConnectionDown" in result.stdout + result.stderr


def test_promtool_check_config_loads_the_rules() -> None:
    result = run("promtool", "check", "config", "prometheus/prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_amtool_check_config() -> None:
    result = run("amtool", "check-config", "alertmanager/alertmanager.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("labels", "receiver"), [
    (["severity=critical", "alertname=ResilientClientEventsDropped"], "pager"),
    (["severity=warning", "alertname=ResilientClientConnectionDown"], "tickets"),
    (["severity=info", "alertname=ResilientClientIllegalTransitions"], "info"),
])
def test_amtool_routes_by_severity(labels: list[str], receiver: str) -> None:
    result = run("amtool", "config", "routes", "test",
                 "--config.file=alertmanager/alertmanager.yml",
                 f"--verify.receivers={receiver}", *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def test_amtool_route_test_fails_for_the_wrong_receiver() -> None:
    result = run("amtool", "config", "routes", "test",
                 "--config.file=alertmanager/alertmanager.yml", "--verify.receivers=tickets",
                 "severity=critical")
    assert result.returncode != 0


def test_docker_compose_config_is_valid() -> None:
    result = run("docker-compose", "-f", "docker-compose.yml", "config", "-q")
    assert result.returncode == 0, result.stdout + result.stderr
    full = run("docker-compose", "-f", "docker-compose.yml", "config", "--services")
    assert set(full.stdout.split()) == {
        "rabbitmq", "redis", "postgres", "demo", "prometheus", "alertmanager", "grafana"}
    config = run("docker-compose", "-f", "docker-compose.yml", "config").stdout
    assert "--enable-feature=exemplar-storage" in config
    # The retention covers the SLO period, or the 30-day budget would silently shrink.
    retention = re.search(r"--storage\.tsdb\.retention\.time=(\d+)d", config)
    assert retention, config
    assert int(retention.group(1)) >= DEFAULT_CONFIG.slo_period_days


def test_snapshot_reports_an_unreachable_prometheus_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    from instrumented_clients.observability.snapshot import main

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = main(["--prometheus", f"http://127.0.0.1:{port}", "--dashboard",
                 str(ROOT / "dashboards" / "overview.json"), "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "Connection refused" in err
