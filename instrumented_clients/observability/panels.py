"""Panel helpers: grafanalib behind a few functions, so a dashboard reads as a list of panels.

Every panel queries ``{"type": "prometheus", "uid": "${datasource}"}`` and says what a healthy
value looks like; positions and ids are assigned by :func:`build_dashboard` in reading order (rows
span the width, panels flow left to right and wrap), so dashboard modules never count grid cells.
Only grafanalib's public API is used: its objects' ``to_json_data()`` and a plain JSON encoder.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from grafanalib import core as g

__all__ = [
    "DATASOURCE",
    "DataLink",
    "Panel",
    "Query",
    "build_dashboard",
    "row",
    "stat",
    "state_timeline",
    "timeseries",
]

DATASOURCE: dict[str, str] = {"type": "prometheus", "uid": "${datasource}"}
GRID_WIDTH = 24


@dataclass(frozen=True)
class Query:
    """One PromQL target: expression, legend, and whether to request exemplars."""

    expr: str
    legend: str = ""
    exemplar: bool = False
    instant: bool = False


class _Target:
    """A Prometheus target with the fields grafanalib's ``Target`` lacks (exemplar, datasource
    object)."""

    def __init__(self, query: Query, ref_id: str) -> None:
        self.query = query
        self.ref_id = ref_id

    def to_json_data(self) -> dict[str, Any]:
        q = self.query
        return {
            "datasource": DATASOURCE,
            "expr": q.expr,
            "legendFormat": q.legend,
            "refId": self.ref_id,
            "exemplar": q.exemplar,
            "instant": q.instant,
            "range": not q.instant,
            "interval": "",
        }


@dataclass(frozen=True)
class DataLink:
    """A link from a series of a panel; ``url`` may use ``${__field.labels.<label>}``."""

    title: str
    url: str


def _field_defaults(links: Sequence[DataLink], decimals: int | None) -> dict[str, Any] | None:
    """Field options grafanalib has no argument for, through its ``extraJson``."""
    defaults: dict[str, Any] = {}
    if links:
        defaults["links"] = [g.DataLink(link.title, link.url).to_json_data() for link in links]
    if decimals is not None:
        defaults["decimals"] = decimals
    return {"fieldConfig": {"defaults": defaults}} if defaults else None


def _describe(description: str, healthy: str) -> str:
    return f"{description} Healthy: {healthy}".strip()


@dataclass
class Panel:
    """A panel before layout: its grafanalib object (without gridPos/id) and its size."""

    build: Any
    width: int = 12
    height: int = 8
    is_row: bool = False
    queries: tuple[Query, ...] = field(default_factory=tuple)


def _targets(queries: Sequence[Query]) -> list[_Target]:
    return [_Target(q, chr(ord("A") + i)) for i, q in enumerate(queries)]


def _thresholds(steps: Sequence[tuple[float | None, str]]) -> list[dict[str, Any]]:
    return [{"color": color, "value": value} for value, color in steps]


def timeseries(
    title: str,
    queries: Sequence[Query],
    *,
    healthy: str,
    unit: str = "short",
    description: str = "",
    width: int = 12,
    height: int = 8,
    stacked: bool = False,
    bars: bool = False,
    links: Sequence[DataLink] = (),
    whole: bool = False,
) -> Panel:
    """A TimeSeries panel. Latency panels pass queries with ``exemplar=True``; ``whole`` shows
    counts of discrete things without decimals."""

    def build(grid: g.GridPos, panel_id: int) -> g.TimeSeries:
        return g.TimeSeries(
            title=title,
            description=_describe(description, healthy),
            dataSource=DATASOURCE,
            targets=_targets(queries),
            gridPos=grid,
            id=panel_id,
            unit=unit,
            drawStyle="bars" if bars else "line",
            fillOpacity=30 if stacked or bars else 10,
            stacking={"mode": "normal", "group": "A"} if stacked else {"mode": "none"},
            legendDisplayMode="table",
            legendPlacement="bottom",
            legendCalcs=["lastNotNull", "max"],
            tooltipMode="multi",
            showPoints="never",
            spanNulls=True,
            extraJson=_field_defaults(links, 0 if whole else None),
        )

    return Panel(build, width, height, queries=tuple(queries))


def stat(
    title: str,
    queries: Sequence[Query],
    *,
    healthy: str,
    unit: str = "short",
    description: str = "",
    width: int = 6,
    height: int = 4,
    thresholds: Sequence[tuple[float | None, str]] = ((None, "green"),),
    reduce: str = "lastNotNull",
    whole: bool = False,
    links: Sequence[DataLink] = (),
) -> Panel:
    """A Stat panel, coloured by ``thresholds`` (``(None, colour)`` is the base step)."""

    def build(grid: g.GridPos, panel_id: int) -> g.Stat:
        return g.Stat(
            title=title,
            description=_describe(description, healthy),
            dataSource=DATASOURCE,
            targets=_targets(queries),
            gridPos=grid,
            id=panel_id,
            format=unit,
            reduceCalc=reduce,
            colorMode="background",
            graphMode="none",
            thresholds=_thresholds(thresholds),
            decimals=0 if whole else None,
            extraJson=_field_defaults(links, None),
        )

    return Panel(build, width, height, queries=tuple(queries))


def state_timeline(
    title: str,
    queries: Sequence[Query],
    *,
    states: Sequence[tuple[int, str, str]],
    healthy: str,
    description: str = "",
    width: int = 12,
    height: int = 8,
    links: Sequence[DataLink] = (),
) -> Panel:
    """A StateTimeline panel; ``states`` maps each numeric code to its text and colour."""
    mappings = [
        {
            "type": "value",
            "options": {
                str(code): {"text": text, "color": color, "index": index}
                for index, (code, text, color) in enumerate(states)
            },
        }
    ]

    def build(grid: g.GridPos, panel_id: int) -> g.StateTimeline:
        return g.StateTimeline(
            title=title,
            description=_describe(description, healthy),
            dataSource=DATASOURCE,
            targets=_targets(queries),
            gridPos=grid,
            id=panel_id,
            mappings=mappings,
            colorMode="fixed",
            mergeValues=True,
            showValue="never",
            rowHeight=0.8,
            extraJson=_field_defaults(links, None),
        )

    return Panel(build, width, height, queries=tuple(queries))


def row(title: str) -> Panel:
    """A full-width RowPanel that starts a new section."""

    def build(grid: g.GridPos, panel_id: int) -> g.RowPanel:
        return g.RowPanel(title=title, gridPos=grid, id=panel_id)

    return Panel(build, GRID_WIDTH, 1, is_row=True)


def _layout(panels: Iterable[Panel]) -> list[Any]:
    """Place panels in reading order; the tallest panel of a line sets where the next begins."""
    built: list[Any] = []
    x = y = line_height = 0
    for panel_id, panel in enumerate(panels, start=1):
        if panel.is_row or x + panel.width > GRID_WIDTH:
            y += line_height
            x = line_height = 0
        grid = g.GridPos(h=panel.height, w=panel.width, x=x, y=y)
        built.append(panel.build(grid, panel_id))
        if panel.is_row:
            y += panel.height
        else:
            x += panel.width
            line_height = max(line_height, panel.height)
    return built


def _variables(metric: str, job_selector: str, system_regex: str,
               grouping_labels: Sequence[str]) -> list[g.Template]:
    """``datasource``, the grouping labels, ``job``, ``instance``, ``system``, ``client``: each
    one's values are filtered by the variables before it."""
    common: dict[str, Any] = {
        "dataSource": DATASOURCE,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "default": "$__all",
        "refresh": 2,  # on time-range change, so new clients and processes appear
    }
    variables = [g.Template(name="datasource", label="Data source", query="prometheus",
                            type="datasource", default="Prometheus")]
    matchers = [job_selector] if job_selector else []
    chain = [(label, label.capitalize(), ".*") for label in grouping_labels]
    # "All" of system means this dashboard's systems, not every system: the SQL dashboard's All
    # is postgresql|mysql|..., never redis.
    chain += [("job", "Job", ".*"), ("instance", "Instance", ".*"),
              ("system", "System", system_regex), ("client", "Client", ".*")]
    for name, label, all_value in chain:
        own = [f'{name}=~"{all_value}"'] if all_value != ".*" else []
        selector = ", ".join([*matchers, *own])
        variables.append(g.Template(
            name=name, label=label,
            query=f"label_values({metric}{{{selector}}}, {name})" if selector
            else f"label_values({metric}, {name})",
            **{**common, "allValue": all_value}))
        matchers.append(f'{name}=~"${name}"')
    return variables


def dashboard_link(title: str, uid: str) -> g.DashboardLink:
    """A link to dashboard ``uid`` that carries the time range and every variable."""
    return g.DashboardLink(title=title, type="link", uri=f"/d/{uid}", icon="dashboard",
                           includeVars=True, keepTime=True,
                           tooltip=f"{title}, same time range and selection")


def alerts_annotation(expr: str) -> dict[str, Any]:
    """An annotation of every firing alert the ``ALERTS`` series ``expr`` selects."""
    return {
        "name": "Firing alerts",
        "datasource": DATASOURCE,
        "enable": True,
        "hide": False,
        "iconColor": "red",
        "expr": expr,
        "step": "30s",
        "titleFormat": "{{alertname}}",
        "textFormat": "{{severity}}: {{system}} {{client}} {{instance}}",
        "tagKeys": "severity",
        "useValueForTime": False,
    }


def _to_json(value: Any) -> Any:
    """grafanalib's objects serialise themselves through their public ``to_json_data()``."""
    to_json_data = getattr(value, "to_json_data", None)
    if to_json_data is None:
        raise TypeError(f"cannot serialise {type(value).__name__} into a dashboard")
    return to_json_data()


def build_dashboard(
    *,
    uid: str,
    title: str,
    description: str,
    panels: Sequence[Panel],
    variable_metric: str,
    job_selector: str = "",
    system_regex: str = ".*",
    tags: Sequence[str] = (),
    grouping_labels: Sequence[str] = (),
    links: Sequence[g.DashboardLink] = (),
    annotations: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """The dashboard as JSON-ready data, with the variables ``datasource``, the grouping labels,
    ``job``, ``instance``, ``system`` and ``client`` read from ``variable_metric``."""
    dashboard = g.Dashboard(
        title=title,
        uid=uid,
        description=description,
        tags=list(tags),
        panels=_layout(panels),
        templating=g.Templating(_variables(variable_metric, job_selector, system_regex,
                                           grouping_labels)),
        links=list(links),
        annotations=g.Annotations(list(annotations)),
        time=g.Time("now-1h", "now"),
        refresh="30s",
        timezone="browser",
        graphTooltip=1,  # shared crosshair: an outage lines up across panels
        schemaVersion=39,
    )
    data: dict[str, Any] = json.loads(json.dumps(dashboard.to_json_data(), default=_to_json))
    for variable in data["templating"]["list"]:
        if variable.get("includeAll"):  # Grafana's own form of a multi-value "All" selection
            variable["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    return data
