"""Structure of the generated dashboards, checked against the metric catalog."""

from __future__ import annotations

import itertools
import json
import re

import pytest

from instrumented_clients.observability import ObservabilityConfig
from instrumented_clients.observability.dashboards import build_all
from instrumented_clients.observability.panels import DATASOURCE
from instrumented_clients.telemetry.catalog import METRICS
from tests.observability_helpers import (
    all_panels,
    check_query,
    dashboard_queries,
    dashboards,
    recorded_names,
    rules,
)

DASHBOARDS = dashboards()
EXPECTED = {"overview", "rabbitmq", "redis", "sql", "slo"}
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range", "__all", "__value", "__field",
                    "__url_time_range"}
MODERN_TYPES = {"timeseries", "stat", "state-timeline", "row"}


def test_the_five_dashboards_are_committed() -> None:
    assert set(DASHBOARDS) == EXPECTED


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_dashboard_has_uid_title_and_the_five_variables(stem: str) -> None:
    dashboard = DASHBOARDS[stem]
    assert dashboard["uid"]
    assert len(dashboard["uid"]) <= 40
    assert dashboard["title"]
    names = [variable["name"] for variable in dashboard["templating"]["list"]]
    assert names == ["datasource", "job", "instance", "system", "client"]
    instance = dashboard["templating"]["list"][2]
    assert instance["multi"]
    assert instance["includeAll"]
    assert instance["query"] == (
        'label_values(resilient_client_operation_duration_seconds_count{job=~"$job"}, instance)')
    uids = [d["uid"] for d in DASHBOARDS.values()]
    assert len(set(uids)) == len(uids)


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_panel_ids_are_unique_and_types_modern(stem: str) -> None:
    panels = list(all_panels(DASHBOARDS[stem]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), ids
    assert {panel["type"] for panel in panels} <= MODERN_TYPES


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_grid_positions_do_not_overlap_and_fit_the_width(stem: str) -> None:
    boxes = [(p["title"], p["gridPos"]) for p in all_panels(DASHBOARDS[stem])]
    for title, grid in boxes:
        assert grid["x"] >= 0, title
        assert grid["x"] + grid["w"] <= 24, title
        assert grid["w"] > 0, title
        assert grid["h"] > 0, title
    for (t1, a), (t2, b) in itertools.combinations(boxes, 2):
        apart = (a["x"] + a["w"] <= b["x"] or b["x"] + b["w"] <= a["x"]
                 or a["y"] + a["h"] <= b["y"] or b["y"] + b["h"] <= a["y"])
        assert apart, f"{t1!r} {a} overlaps {t2!r} {b}"


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_only_defined_variables_are_used(stem: str) -> None:
    dashboard = DASHBOARDS[stem]
    defined = {variable["name"] for variable in dashboard["templating"]["list"]}
    text = json.dumps(dashboard["panels"]) + json.dumps(
        [v["query"] for v in dashboard["templating"]["list"]])
    used = set(re.findall(r"\$\{?(\w+)", text))
    assert used - GRAFANA_BUILTINS <= defined, used - GRAFANA_BUILTINS - defined
    # The variables are used, too: a dashboard ignoring $client would show every client.
    assert {"job", "instance", "system", "client", "datasource"} <= used


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_every_panel_and_target_uses_the_datasource_variable(stem: str) -> None:
    for panel in all_panels(DASHBOARDS[stem]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
    for variable in DASHBOARDS[stem]["templating"]["list"][1:]:
        assert variable["datasource"] == DATASOURCE


def test_latency_panels_request_exemplars() -> None:
    latency_targets = [
        target for d in DASHBOARDS.values() for p in all_panels(d)
        for target in p.get("targets", []) if "operation_duration_seconds_bucket" in target["expr"]
    ]
    assert len(latency_targets) >= 9
    assert all(target["exemplar"] for target in latency_targets)


def test_state_timelines_show_connection_and_breaker_states() -> None:
    for stem in ("overview", "rabbitmq", "redis", "sql"):
        timelines = {p["title"]: p for p in all_panels(DASHBOARDS[stem])
                     if p["type"] == "state-timeline"}
        assert {"Connection state", "Circuit breaker state"} <= set(timelines)
        mapping = timelines["Connection state"]["fieldConfig"]["defaults"]["mappings"][0]
        assert {m["text"] for m in mapping["options"].values()} >= {"connected", "failed"}


def test_every_query_names_only_catalog_metrics_labels_and_values() -> None:
    recorded = recorded_names(rules())
    problems: list[str] = []
    for dashboard in DASHBOARDS.values():
        for where, expr in dashboard_queries(dashboard):
            problems += check_query(where, expr, recorded)[1]
    assert problems == []


def test_every_catalog_metric_is_on_a_dashboard() -> None:
    recorded = recorded_names(rules())
    used: set[str] = set()
    for dashboard in DASHBOARDS.values():
        for where, expr in dashboard_queries(dashboard):
            used |= check_query(where, expr, recorded)[0]
    assert {spec.name for spec in METRICS} - used == set()


def test_the_checker_catches_a_wrong_metric_label_and_value() -> None:
    _, problems = check_query("t", 'sum by (pod) (rate(resilient_client_retries_totl[5m]))'
                                   ' + resilient_client_connection_state{state="up", host="x"}',
                              set())
    assert len(problems) == 4, problems


def test_a_namespace_renames_every_metric() -> None:
    built = build_all(ObservabilityConfig(namespace="acme_clients"))
    text = json.dumps(built)
    assert "resilient_client_" not in text
    assert "acme_clients_operation_duration_seconds_count" in text


def test_a_job_selector_reaches_the_variable_queries() -> None:
    built = build_all(ObservabilityConfig(job_selector='job=~"orders.*"'))
    queries = [v["query"] for v in built["overview"]["templating"]["list"]]
    assert all('job=~"orders.*"' in q for q in queries[1:])
