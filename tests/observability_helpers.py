"""Shared checks of generated queries against the metric catalog."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from instrumented_clients.telemetry.catalog import DEFAULT_NAMESPACE, METRICS, MetricSpec
from tests.promql import read

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_DIR = ROOT / "dashboards"
RULES_PATH = ROOT / "alerts" / "resilient-clients.rules.yml"
SCRAPE_LABELS = {"job", "instance"}
SLO_LABELS = {"sloth_id", "sloth_service", "sloth_slo", "sloth_window"}
_REGEX_META = re.compile(r"[\\.*+?()\[\]{}^$]")


def dashboards(directory: Path = DASHBOARD_DIR) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}


def rules(path: Path = RULES_PATH) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, expr) for every panel target and every query variable."""
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            yield f"{dashboard['uid']}/{panel['title']}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query, re.S)
            assert match, f"unexpected variable query {query!r}"
            yield f"{dashboard['uid']}/${variable['name']}", match.group(1)


def rule_queries(data: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for group in data["groups"]:
        for rule in group["rules"]:
            yield rule.get("alert") or rule["record"], rule["expr"]


def recorded_names(data: dict[str, Any]) -> set[str]:
    return {rule["record"] for g in data["groups"] for rule in g["rules"] if "record" in rule}


def spec_of(name: str, namespace: str = DEFAULT_NAMESPACE) -> tuple[MetricSpec, str] | None:
    """The catalog entry behind a full series name, and the suffix (``_bucket``...) used."""
    for spec in METRICS:
        full = spec.full_name(namespace)
        if name == full:
            return spec, ""
        if spec.kind == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                if name == full + suffix:
                    return spec, suffix
    return None


def check_query(where: str, expr: str, recorded: set[str],
                namespace: str = DEFAULT_NAMESPACE) -> tuple[set[str], list[str]]:
    """Catalog metrics used by ``expr`` and every problem found in it."""
    names = read(expr)
    used: set[str] = set()
    problems: list[str] = []
    all_labels = (SCRAPE_LABELS | SLO_LABELS | {"le"}
                  | {label for spec in METRICS for label in spec.labels})
    for label in names.grouping_labels - all_labels:
        problems.append(f"{where}: groups by unknown label {label!r}")
    for selector in names.selectors:
        metric = selector.metric
        if metric is None:
            problems.append(f"{where}: selector without a metric name")
            continue
        if metric in recorded:
            allowed = SCRAPE_LABELS | {"system", "client"}
            found = None
        else:
            found = spec_of(metric, namespace)
            if found is None:
                problems.append(f"{where}: metric {metric!r} is not in the catalog")
                continue
            spec, suffix = found
            used.add(spec.name)
            allowed = SCRAPE_LABELS | set(spec.labels) | ({"le"} if suffix == "_bucket" else set())
        for label, op, value in selector.matchers:
            if label not in allowed:
                problems.append(f"{where}: {metric} has no label {label!r}")
                continue
            if found is None or value.startswith("$") or value in (".*", ".+"):
                continue
            enum = found[0].values_of(label)
            if not enum:
                continue
            alternatives = value.split("|") if op in ("=~", "!~") else [value]
            for alternative in alternatives:
                if _REGEX_META.search(alternative):
                    continue
                if alternative not in enum:
                    problems.append(f"{where}: {label}={alternative!r} is not one of {enum}")
    return used, problems
