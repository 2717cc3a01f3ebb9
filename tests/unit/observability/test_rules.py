"""The generated rules: style (mixtool's lint), catalog names, time scale, freshness."""

from __future__ import annotations

import filecmp
import re
from pathlib import Path

import pytest
import yaml

from instrumented_clients.observability import ObservabilityConfig, SystemThresholds, generate
from instrumented_clients.observability.config import DEFAULT_RUNBOOK_URL_BASE, format_duration
from instrumented_clients.observability.generate import main, render_rules
from instrumented_clients.observability.rules import ALERT_NAMES, SLO_WINDOWS
from tests.observability_helpers import ROOT, check_query, recorded_names, rule_queries, rules

RULES = rules()
ALERTS = [rule for group in RULES["groups"] for rule in group["rules"] if "alert" in rule]
REQUIRED = {
    "ResilientClientConnectionDown", "ResilientClientConnectionFailed",
    "ResilientClientCircuitBreakerOpen", "ResilientClientCircuitBreakerFlapping",
    "ResilientClientHighRetryRatio", "ResilientClientRetriesExhausted",
    "ResilientClientEventsDropped", "ResilientClientBufferNearlyFull",
    "ResilientClientPublishNacked", "ResilientClientUnroutableMessages",
    "ResilientClientReconnectChurn", "ResilientClientHighP99Latency",
    "ResilientClientPoolSaturated", "ResilientClientErrorBudgetBurnFast",
    "ResilientClientErrorBudgetBurnSlow", "ResilientClientMetricsAbsent",
}
DURATION = re.compile(r"^(\d+d)?(\d+h)?(\d+m)?(\d+s)?$")


def _seconds(duration: str) -> int:
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([dhms])", duration))


def test_the_issue_s_alerts_exist() -> None:
    assert {alert["alert"] for alert in ALERTS} >= REQUIRED


@pytest.mark.parametrize("alert", ALERTS, ids=lambda a: a["alert"])
def test_alert_style_follows_mixtool_lint(alert: dict) -> None:
    name = alert["alert"]
    assert re.fullmatch(r"[A-Z][a-z0-9]+(?:[A-Z0-9][a-z0-9]*)+", name), name
    assert alert["labels"]["severity"] in {"critical", "warning", "info"}
    annotations = alert["annotations"]
    summary = annotations["summary"]
    assert "{{" not in summary, summary
    assert summary.endswith("."), summary
    assert "$labels" in annotations["description"]
    assert annotations["runbook_url"] == f"{DEFAULT_RUNBOOK_URL_BASE}/{name}.md"
    assert (ROOT / "docs" / "runbooks" / f"{name}.md").is_file()


def test_every_runbook_belongs_to_an_alert() -> None:
    pages = {path.stem for path in (ROOT / "docs" / "runbooks").glob("*.md")}
    assert pages == {alert["alert"] for alert in ALERTS}


def test_design_expressions_are_kept() -> None:
    by_name = {alert["alert"]: alert for alert in ALERTS}
    down = by_name["ResilientClientConnectionDown"]
    assert down["expr"] == ("sum by (job, instance, system, client) "
                            "(resilient_client_connection_state"
                            '{state=~"disconnected|connecting|failed"}) > 0')
    assert down["for"] == "2m"
    breaker = by_name["ResilientClientCircuitBreakerOpen"]
    assert 'state!="closed"' in breaker["expr"]
    assert breaker["for"] == "2m"
    dropped = by_name["ResilientClientEventsDropped"]
    assert "increase(resilient_client_buffer_dropped_events_total[5m])" in dropped["expr"]
    assert dropped["expr"].endswith("> 0")
    assert dropped["keep_firing_for"]
    assert dropped["labels"]["severity"] == "critical"
    fast = by_name["ResilientClientErrorBudgetBurnFast"]["expr"]
    assert "14.4 *" in fast
    assert "6 *" in fast
    assert "ratio_rate5m" in fast
    assert "ratio_rate6h" in fast
    slow = by_name["ResilientClientErrorBudgetBurnSlow"]["expr"]
    assert "3 *" in slow
    assert "1 *" in slow
    assert "ratio_rate1d" in slow
    assert "ratio_rate3d" in slow


def test_recording_rules_cover_every_slo_window() -> None:
    recorded = recorded_names(RULES)
    for window in (*SLO_WINDOWS, "30d"):
        name = f"slo:sli_error:ratio_rate{window}"
        assert name in recorded
    ratio = next(r for g in RULES["groups"] for r in g["rules"]
                 if r.get("record", "").endswith("ratio_rate5m"))
    assert ratio["labels"] == {"sloth_window": "5m"}
    assert 'outcome=~"failure|failure_after_retry|rejected"' in ratio["expr"]
    assert 'outcome!="buffered"' in ratio["expr"]


def test_ratio_alerts_use_per_system_thresholds_and_a_traffic_guard() -> None:
    config = ObservabilityConfig(thresholds={"redis": SystemThresholds(retry_ratio=0.3)})
    text = render_rules(config)
    retry = next(a for g in yaml.safe_load(text)["groups"] for a in g["rules"]
                 if a.get("alert") == "ResilientClientHighRetryRatio")["expr"]
    assert 'system=~"redis"' in retry
    assert ") > 0.3" in retry
    assert 'system!~"redis"' in retry
    assert ") > 0.1" in retry
    assert "and on (job, instance, system, client)" in retry
    assert "> 0.1" in retry.split("and on")[1]


def test_every_expression_names_only_catalog_metrics_and_labels() -> None:
    recorded = recorded_names(RULES)
    problems: list[str] = []
    for where, expr in rule_queries(RULES):
        problems += check_query(where, expr, recorded)[1]
    assert problems == []


def test_every_alert_has_a_firing_and_a_silent_promtool_case() -> None:
    fires: set[str] = set()
    silent: set[str] = set()
    for path in (ROOT / "alerts" / "tests").glob("*.yml"):
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (fires if case["exp_alerts"] else silent).add(case["alertname"])
    assert fires == set(ALERT_NAMES)
    assert silent == set(ALERT_NAMES)


def test_time_scale_shrinks_every_duration_and_keeps_them_valid() -> None:
    scaled = yaml.safe_load(render_rules(ObservabilityConfig(time_scale=0.02)))
    normal = RULES
    pairs = zip(
        (r for g in normal["groups"] for r in g["rules"]),
        (r for g in scaled["groups"] for r in g["rules"]),
        strict=True,
    )
    for original, small in pairs:
        for key in ("for", "keep_firing_for"):
            if key in original:
                assert DURATION.match(small[key])
                assert small[key]
                assert _seconds(small[key]) == max(1, -(-_seconds(original[key]) * 2 // 100))
        ranges = re.findall(r"\[(\w+)\]", original["expr"])
        small_ranges = re.findall(r"\[(\w+)\]", small["expr"])
        assert len(ranges) == len(small_ranges)
        for big, little in zip(ranges, small_ranges, strict=True):
            assert _seconds(little) == max(1, -(-_seconds(big) * 2 // 100)), (big, little)
    by_name = {r.get("alert"): r for g in scaled["groups"] for r in g["rules"]}
    assert by_name["ResilientClientConnectionDown"]["for"] == "3s"  # 2m × 0.02 = 2.4 s


@pytest.mark.parametrize(("seconds", "text"), [
    (120, "2m"), (2.4, "3s"), (0.01, "1s"), (5400, "1h30m"), (259200, "3d"), (86461, "1d1m1s"),
])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("bad", [
    {"namespace": "9lives"}, {"namespace": "a-b"}, {"time_scale": 0}, {"time_scale": -1.0},
    {"time_scale": True}, {"thresholds": {"redis": SystemThresholds(slo_objective=99.9)}},
])
def test_bad_config_is_refused_with_the_value_named(bad: dict) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(next(iter(bad.values()))))
                       if "thresholds" not in bad else "slo_objective"):
        ObservabilityConfig(**bad)


def test_committed_files_equal_a_fresh_generate(tmp_path: Path) -> None:
    written = generate(tmp_path)
    assert written
    stale = []
    for path in written:
        relative = path.relative_to(tmp_path)
        committed = ROOT / relative
        if not committed.is_file() or not filecmp.cmp(path, committed, shallow=False):
            stale.append(str(relative))
    assert stale == [], "stale generated files; run `instrumented-clients generate`"
    committed_dashboards = {p.name for p in (ROOT / "dashboards").glob("*.json")}
    assert committed_dashboards == {p.name for p in (tmp_path / "dashboards").glob("*.json")}


def test_generate_with_a_namespace(tmp_path: Path) -> None:
    generate(tmp_path, namespace="acme")
    text = (tmp_path / "alerts" / "resilient-clients.rules.yml").read_text()
    assert "resilient_client_" not in text
    assert "acme_connection_state" in text


def test_main_writes_files_and_returns_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                            ) -> None:
    assert main(["--out", str(tmp_path), "--time-scale", "0.5"]) == 0
    rules_text = (tmp_path / "alerts" / "resilient-clients.rules.yml").read_text()
    assert "for: 1m\n" in rules_text  # 2m halved
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--time-scale", "0"], ["--namespace", "bad-name"],
                                  ["--time-scale", "fast"]])
def test_main_reports_bad_input_in_one_line_with_exit_2(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert err.startswith("instrumented-clients generate: error: ")
    assert not (tmp_path / "dashboards").exists()
