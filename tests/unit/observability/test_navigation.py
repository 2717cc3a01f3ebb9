"""What lets an on-call engineer move around: links between dashboards, from a client to its
system's dashboard, from an alert to its runbook and dashboard; annotations; panel texts."""

from __future__ import annotations

import filecmp
import re
import urllib.parse
from pathlib import Path

import pytest
import yaml

from instrumented_clients.observability import DEFAULT_CONFIG, ObservabilityConfig
from instrumented_clients.observability.config import SYSTEM_DASHBOARDS
from instrumented_clients.observability.dashboards import build_all
from instrumented_clients.observability.generate import main, render_rules
from instrumented_clients.observability.rules import CLIENT, INSTANCE, alerts
from instrumented_clients.telemetry.catalog import SYSTEMS
from tests.observability_helpers import ROOT, all_panels, dashboards, rules

DASHBOARDS = dashboards()
UIDS = {dashboard["uid"]: stem for stem, dashboard in DASHBOARDS.items()}
ALERTS = [rule for group in rules()["groups"] for rule in group["rules"] if "alert" in rule]


def _variables(stem: str) -> set[str]:
    return {variable["name"] for variable in DASHBOARDS[stem]["templating"]["list"]}


@pytest.mark.parametrize("stem", sorted(DASHBOARDS))
def test_each_dashboard_links_to_the_other_four_with_time_and_variables(stem: str) -> None:
    links = DASHBOARDS[stem]["links"]
    targets = []
    for link in links:
        match = re.fullmatch(r"/d/([\w-]+)", link["url"])
        assert match, link
        assert match.group(1) in UIDS, link
        targets.append(UIDS[match.group(1)])
        assert link["keepTime"] is True
        assert link["includeVars"] is True
        # includeVars passes every variable; the target has the same ones, so all of them land.
        assert _variables(UIDS[match.group(1)]) == _variables(stem)
    assert sorted(targets) == sorted(set(DASHBOARDS) - {stem})


def test_a_client_s_series_on_the_overview_links_to_its_system_s_dashboard() -> None:
    linked = [p for p in all_panels(DASHBOARDS["overview"])
              if p.get("fieldConfig", {}).get("defaults", {}).get("links")]
    assert {p["title"] for p in linked} >= {"Connection state", "Circuit breaker state",
                                            "Error ratio"}
    for panel in linked:
        for link in panel["fieldConfig"]["defaults"]["links"]:
            url = urllib.parse.urlsplit(link["url"])
            assert url.path == "/d/${__field.labels.dashboard}"
            query = url.query.split("&")
            for variable in ("system", "client", "instance"):
                assert f"var-{variable}=${{__field.labels.{variable}}}" in query
            assert {"${job:queryparam}", "${datasource:queryparam}",
                    "${__url_time_range}"} <= set(query)
        # Every system's series get the uid of a committed dashboard that shows that system.
        for target in panel["targets"]:
            mapped = dict(re.findall(r'"dashboard", "([\w-]+)",\s*"system", "([\w|]+)"',
                                     target["expr"]))
            systems = {s: uid for uid, regex in mapped.items() for s in regex.split("|")}
            assert set(systems) == set(SYSTEMS), target["expr"]
            for system, uid in systems.items():
                assert UIDS[uid] == SYSTEM_DASHBOARDS[system]


@pytest.mark.parametrize("stem", sorted(DASHBOARDS))
def test_firing_alerts_are_annotated_from_the_alerts_series(stem: str) -> None:
    (annotation,) = DASHBOARDS[stem]["annotations"]["list"]
    assert annotation["enable"] is True
    assert annotation["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert annotation["expr"].startswith('ALERTS{alertstate="firing", job=~"$job|"')
    assert 'instance=~"$instance|"' in annotation["expr"]
    assert annotation["titleFormat"] == "{{alertname}}"


@pytest.mark.parametrize("stem", sorted(DASHBOARDS))
def test_every_panel_says_what_healthy_looks_like(stem: str) -> None:
    for panel in all_panels(DASHBOARDS[stem]):
        if panel["type"] != "row":
            assert re.search(r"Healthy: \S", panel["description"]), panel["title"]


def test_counts_of_discrete_things_are_whole_numbers() -> None:
    counted = 0
    for dashboard in DASHBOARDS.values():
        for panel in all_panels(dashboard):
            exprs = [target["expr"] for target in panel.get("targets", [])]
            if any("increase(" in expr for expr in exprs):
                counted += 1
                assert panel["fieldConfig"]["defaults"]["decimals"] == 0, panel["title"]
                for expr in exprs:
                    if "increase(" in expr:
                        assert expr.startswith("round("), (panel["title"], expr)
    assert counted >= 10
    dropped = next(p for p in all_panels(DASHBOARDS["overview"])
                   if p["title"] == "Events dropped in range")
    assert dropped["targets"][0]["expr"].startswith("round(sum(increase(")


def test_the_panels_use_only_grafanalib_s_public_api() -> None:
    source = (ROOT / "instrumented_clients" / "observability" / "panels.py").read_text()
    assert "grafanalib._" not in source
    assert "_gen" not in source


@pytest.mark.parametrize("alert", ALERTS, ids=lambda a: a["alert"])
def test_every_alert_links_to_an_absolute_runbook_and_an_existing_dashboard(alert: dict) -> None:
    name = alert["alert"]
    annotations = alert["annotations"]
    runbook = urllib.parse.urlsplit(annotations["runbook_url"])
    assert runbook.scheme == "https"
    assert runbook.netloc
    assert runbook.path.endswith(f"/docs/runbooks/{name}.md")
    assert (ROOT / "docs" / "runbooks" / f"{name}.md").is_file()
    url = annotations["dashboard_url"]
    uids = re.findall(r"http://localhost:3000/d/([\w-]+)", url)
    assert uids, url
    assert set(uids) <= set(UIDS), url
    variables = re.findall(r"var-(\w+)=\{\{ \$labels\.(\w+) \| urlquery \}\}", url)
    for variable, label in variables:
        assert variable == label
        for uid in uids:
            assert variable in _variables(UIDS[uid]), (uid, variable)
        # The alert keeps every label its URL reads.
        assert re.search(rf"\bby \([^)]*\b{label}\b", alert["expr"]), (name, label)


def test_per_process_symptoms_keep_instance_and_slo_alerts_do_not() -> None:
    by_name = {alert.name: alert for alert in alerts()}
    for name in ("ResilientClientConnectionDown", "ResilientClientCircuitBreakerOpen",
                 "ResilientClientEventsDropped", "ResilientClientConnectionBlocked",
                 "ResilientClientHighErrorRatio", "ResilientClientHighRetryRatio"):
        assert by_name[name].scope == INSTANCE
        assert "instance" in by_name[name].expr
    for name in ("ResilientClientErrorBudgetBurnFast", "ResilientClientErrorBudgetBurnSlow"):
        assert by_name[name].scope == CLIENT
        assert by_name[name].expr.startswith("max by (job, system, client) (")


def test_the_pool_alert_opens_the_dashboard_of_its_system() -> None:
    pool = next(a for a in ALERTS if a["alert"] == "ResilientClientPoolSaturated")
    url = pool["annotations"]["dashboard_url"]
    assert '{{ if eq $labels.system "rabbitmq" }}' in url
    assert '{{ else if eq $labels.system "redis" }}' in url
    assert url.index("resilient-clients-sql") > url.index("{{ else }}")


def test_grouping_labels_reach_aggregations_variables_and_urls() -> None:
    config = ObservabilityConfig(grouping_labels=("cluster", "namespace"))
    data = yaml.safe_load(render_rules(config))
    by_name = {r["alert"]: r for g in data["groups"] for r in g["rules"] if "alert" in r}
    down = by_name["ResilientClientConnectionDown"]
    assert down["expr"].startswith("sum by (cluster, namespace, job, instance, system, client)")
    assert "var-cluster={{ $labels.cluster | urlquery }}" in down["annotations"]["dashboard_url"]
    fast = by_name["ResilientClientErrorBudgetBurnFast"]["expr"]
    assert fast.startswith("max by (cluster, namespace, job, system, client) (")
    ratio = next(r for g in data["groups"] for r in g["rules"]
                 if r.get("record") == "slo:sli_error:ratio_rate5m")
    assert '"sloth_service", "-", "cluster", "namespace", "job"' in ratio["expr"]
    overview = build_all(config)["overview"]
    names = [v["name"] for v in overview["templating"]["list"]]
    assert names == ["datasource", "cluster", "namespace", "job", "instance", "system", "client"]
    assert overview["templating"]["list"][2]["query"] == (
        'label_values(resilient_client_operation_duration_seconds_count{cluster=~"$cluster"}, '
        'namespace)')
    targets = [t["expr"] for p in all_panels(overview) for t in p.get("targets", [])]
    assert all('cluster=~"$cluster", namespace=~"$namespace"' in t for t in targets
               if "resilient_client_" in t)


def test_sloth_s_contract_is_recorded() -> None:
    recorded = {r["record"]: r for g in rules()["groups"] for r in g["rules"] if "record" in r}
    for window in ("5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"):
        rule = recorded[f"slo:sli_error:ratio_rate{window}"]
        assert rule["labels"] == {"sloth_window": window}
        for label in ("sloth_service", "sloth_slo", "sloth_id"):
            assert f'"{label}", "-"' in rule["expr"]
    for name in ("slo:objective:ratio", "slo:error_budget:ratio", "slo:time_period:days",
                 "slo:current_burn_rate:ratio", "slo:period_burn_rate:ratio",
                 "slo:period_error_budget_remaining:ratio", "sloth_slo_info"):
        assert name in recorded
    assert "* 30" in recorded["slo:time_period:days"]["expr"]
    # The period: a ratio of sums of hourly rates, not an average of ratios.
    period = recorded["slo:sli_error:ratio_rate30d"]["expr"]
    assert "sum_over_time(job_system_client:resilient_client_operations_errors:rate1h" in period
    assert "avg_over_time" not in period


def test_the_per_client_objective_fixture_equals_a_fresh_render(tmp_path: Path) -> None:
    config = DEFAULT_CONFIG.with_changes(client_objectives={"payments": 0.99})
    fresh = tmp_path / "rules.yml"
    fresh.write_text(render_rules(config))
    committed = ROOT / "alerts" / "tests" / "client-objective" / "resilient-clients.rules.yml"
    assert filecmp.cmp(fresh, committed, shallow=False), "stale fixture: run `make generate`"
    assert "client:resilient_client_slo_objective:ratio" in fresh.read_text()


def test_generate_takes_the_runbook_and_grafana_bases(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path), "--runbook-base-url", "https://wiki.example/runbooks/",
                 "--grafana-url", "https://grafana.example/", "--grouping-labels",
                 "cluster"]) == 0
    text = (tmp_path / "alerts" / "resilient-clients.rules.yml").read_text()
    assert "runbook_url: https://wiki.example/runbooks/ResilientClientConnectionDown.md" in text
    assert "https://grafana.example/d/resilient-clients-overview?var-cluster=" in text


@pytest.mark.parametrize(("argv", "named"), [
    (["--runbook-base-url", "docs/runbooks"], "runbook_url_base"),
    (["--grafana-url", "grafana:3000"], "grafana_url"),
    (["--grouping-labels", "instance"], "grouping_labels"),
])
def test_generate_refuses_a_relative_url_or_a_taken_label(
    argv: list[str], named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert named in err
    assert argv[1] in err


@pytest.mark.parametrize("bad", [{"client_objectives": {"payments": 99.0}},
                                 {"slo_period_days": 0}, {"grouping_labels": "cluster"}])
def test_bad_slo_settings_are_refused_with_the_setting_named(bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        ObservabilityConfig(**bad)
