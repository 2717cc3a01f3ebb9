"""The whole loop on a real Prometheus and Alertmanager: a workload's telemetry, the generated
dashboards and rules, faults through FaultProxy, alerts that fire and resolve."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from instrumented_clients.observability.snapshot import expand_query, query_range, render_dashboard
from instrumented_clients.testing import wait_until
from tests.e2e.conftest import WATCHED, OutageReport, Stack
from tests.observability_helpers import ROOT, all_panels, dashboards

pytestmark = pytest.mark.e2e


def test_breaker_connection_and_drop_alerts_fire_then_resolve(outage: OutageReport) -> None:
    assert set(outage.firing) == set(WATCHED)
    breaker = outage.firing["ResilientClientCircuitBreakerOpen"]
    assert {(a["labels"]["system"], a["labels"]["client"]) for a in breaker} >= {("redis", "cache")}
    down = outage.firing["ResilientClientConnectionDown"]
    assert ("rabbitmq", "events") in {(a["labels"]["system"], a["labels"]["client"]) for a in down}
    dropped = outage.firing["ResilientClientEventsDropped"]
    assert dropped[0]["labels"]["reason"] == "overflow"
    assert dropped[0]["labels"]["severity"] == "critical"
    assert dropped[0]["annotations"]["runbook_url"].endswith("ResilientClientEventsDropped.md")
    # Resolution went through the keep_firing_for of the drop alert (10m × 0.02 = 12 s).
    assert outage.resolved_after < 90


def test_the_real_clients_report_resends_consumption_and_pools(stack: Stack,
                                                                outage: OutageReport) -> None:
    def total(expr: str) -> float:
        return sum(float(series["value"][1]) for series in stack.query(expr))

    # Published into the blackhole, unconfirmed when the link died, re-sent after the restore.
    assert total('resilient_client_publish_resent_total{client="events"}') > 0
    assert total('resilient_client_publish_confirms_total{client="events",outcome="returned"}') > 0
    for outcome in ("ack", "reject"):
        assert total('resilient_client_consumed_messages_total'
                     f'{{client="events-worker",outcome="{outcome}"}}') > 0, outcome
    for system in ("redis", "postgresql"):
        assert total(f'resilient_client_pool_max_connections{{system="{system}"}}') > 0, system
        assert total(f'resilient_client_pool_wait_seconds_count{{system="{system}"}}') > 0, system


@pytest.mark.parametrize("instance", ["All", "faulted"])
def test_every_dashboard_query_returns_data(stack: Stack, outage: OutageReport,
                                            instance: str) -> None:
    end = time.time()
    empty = []
    checked = 0
    selected = {} if instance == "All" else {"instance": stack.faulted}
    for stem, dashboard in dashboards().items():
        for panel in all_panels(dashboard):
            for target in panel.get("targets", []):
                expr = expand_query(target["expr"], dashboard, rate_interval="10s",
                                    time_range=f"{int(end - stack.started)}s",
                                    selected=selected)
                series = query_range(stack.prometheus, expr, stack.started, end, 2)
                checked += 1
                if not series:
                    empty.append(f"{stem} / {panel['title']}: {expr}")
                elif selected and "$instance" in target["expr"]:
                    # Only the selected process, whenever the series says which one it is.
                    assert {s.labels.get("instance", stack.faulted) for s in series} == {
                        stack.faulted}, (stem, panel["title"])
    assert checked > 80
    assert empty == []


def test_per_process_alerts_name_the_faulted_instance_only(stack: Stack,
                                                           outage: OutageReport) -> None:
    # The Redis client's error ratio besides the watched alerts. (The consumer's ratio alert
    # can fire on both processes: its handler rejects one message in 17, 5.9 % > 5 %.)
    seen = [a for a in outage.alerts if a["labels"]["alertname"] in WATCHED
            or (a["labels"]["alertname"] == "ResilientClientHighErrorRatio"
                and a["labels"]["client"] == "cache")]
    assert {a["labels"]["alertname"] for a in seen} == {*WATCHED,
                                                        "ResilientClientHighErrorRatio"}
    # The healthy process has the same client names: only the label tells them apart.
    assert {a["labels"]["instance"] for a in seen} == {stack.faulted}


def test_the_slo_alert_covers_the_client_across_its_processes(outage: OutageReport) -> None:
    burn = [a for a in outage.alerts
            if a["labels"]["alertname"] == "ResilientClientErrorBudgetBurnFast"
            and (a["labels"]["system"], a["labels"]["client"]) == ("redis", "cache")]
    assert len(burn) == 1
    assert "instance" not in burn[0]["labels"]
    assert burn[0]["annotations"]["dashboard_url"].endswith(
        "/d/resilient-clients-slo?var-job=workload&var-system=redis&var-client=cache")


def test_connection_down_inhibits_the_ratio_alert_of_the_same_instance(
        stack: Stack, outage: OutageReport) -> None:
    def one(name: str) -> dict[str, Any]:
        (alert,) = [a for a in outage.alerts if a["labels"]["alertname"] == name
                    and (a["labels"]["system"], a["labels"]["client"]) == ("redis", "cache")]
        return alert

    ratio, down = one("ResilientClientHighErrorRatio"), one("ResilientClientConnectionDown")
    assert ratio["labels"]["instance"] == down["labels"]["instance"] == stack.faulted
    assert ratio["status"]["state"] == "suppressed"
    assert ratio["status"]["inhibitedBy"] == [down["fingerprint"]]


def test_inhibition_holds_for_the_same_instance_only(stack: Stack,
                                                    outage: OutageReport) -> None:
    """Alerts posted to the real Alertmanager (job ``inhibition-check``, apart from the
    workload's): process a is down, processes a and b both fail; only a's ratio alert is
    silenced, b's still notifies."""
    now = datetime.now(UTC)

    def alert(name: str, instance: str) -> dict[str, Any]:
        return {"labels": {"alertname": name, "severity": "warning", "job": "inhibition-check",
                           "instance": instance, "system": "redis", "client": "cache"},
                "startsAt": now.isoformat(),
                "endsAt": (now + timedelta(minutes=2)).isoformat()}

    body = json.dumps([alert("ResilientClientConnectionDown", "a"),
                       alert("ResilientClientHighErrorRatio", "a"),
                       alert("ResilientClientHighErrorRatio", "b")]).encode()
    request = urllib.request.Request(f"{stack.alertmanager}/api/v2/alerts", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200

    def posted() -> dict[tuple[str, str], dict[str, Any]] | None:
        mine = {(a["labels"]["alertname"], a["labels"]["instance"]): a for a in stack.alerts()
                if a["labels"].get("job") == "inhibition-check"}
        return mine if len(mine) == 3 else None

    alerts = wait_until(posted, 10, interval=0.2)
    assert alerts is not None
    down = alerts["ResilientClientConnectionDown", "a"]
    assert alerts["ResilientClientHighErrorRatio", "a"]["status"] == {
        "state": "suppressed", "inhibitedBy": [down["fingerprint"]], "silencedBy": []}
    assert alerts["ResilientClientHighErrorRatio", "b"]["status"]["state"] == "active"


def test_exemplars_reach_prometheus(stack: Stack, outage: OutageReport) -> None:
    query = "resilient_client_operation_duration_seconds_bucket"
    url = (f"{stack.prometheus}/api/v1/query_exemplars?query={query}"
           f"&start={stack.started - 120:.0f}&end={time.time():.0f}")


    with urllib.request.urlopen(url, timeout=10) as response:
        data = json.load(response)["data"]
    trace_ids = [e["labels"]["trace_id"] for series in data for e in series["exemplars"]]
    assert trace_ids
    assert all(len(trace_id) == 32 for trace_id in trace_ids)
    # each refers to a trace whose spans the workload exported over OTLP
    wait_until(lambda: set(trace_ids) <= {span.trace_id for span in stack.otlp.spans}, 15,
               message=lambda: f"{len(set(trace_ids) - {s.trace_id for s in stack.otlp.spans})}"
                               f" of {len(set(trace_ids))} exemplar trace ids never arrived")


def test_the_workload_scrape_passes_promtool_check_metrics(stack: Stack) -> None:
    request = urllib.request.Request(stack.metrics, headers={"Accept": "text/plain"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        scrape = response.read()
    assert b"resilient_client_operation_duration_seconds_count" in scrape
    result = subprocess.run(["promtool", "check", "metrics"], input=scrape, capture_output=True,
                            timeout=30, check=False)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_snapshots_render_every_panel(stack: Stack, outage: OutageReport, tmp_path: Path) -> None:
    keep = os.environ.get("INSTRUMENTED_CLIENTS_SNAPSHOT_DIR")
    for stem in ("overview", "rabbitmq", "slo"):
        path = ROOT / "dashboards" / f"{stem}.json"
        written = render_dashboard(path, stack.prometheus, tmp_path / stem,
                                   start=outage.started - 20, end=time.time(),
                                   step=1, rate_interval="10s")
        panels = [p for p in all_panels(dashboards()[stem]) if p["type"] != "row"]
        assert len(written) == len(panels) + 1
        assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)
        assert written[-1].stat().st_size > 50_000  # the whole dashboard, not a blank page
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(written[-1], Path(keep) / f"{stem}.png")
