"""Panel helpers: grafanalib behind a few functions, so a dashboard reads as a list of panels.

Every panel queries ``{"type": "prometheus", "uid": "${datasource}"}``; positions and ids are
assigned by :func:`build_dashboard` in reading order (rows span the width, panels flow left to
right and wrap), so dashboard modules never count grid cells.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from grafanalib import core as g
from grafanalib._gen import DashboardEncoder

__all__ = [
    "DATASOURCE",
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
    unit: str = "short",
    description: str = "",
    width: int = 12,
    height: int = 8,
    stacked: bool = False,
    bars: bool = False,
) -> Panel:
    """A TimeSeries panel. Latency panels pass queries with ``exemplar=True``."""

    def build(grid: g.GridPos, panel_id: int) -> g.TimeSeries:
        return g.TimeSeries(
            title=title,
            description=description,
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
        )

    return Panel(build, width, height, queries=tuple(queries))


def stat(
    title: str,
    queries: Sequence[Query],
    *,
    unit: str = "short",
    description: str = "",
    width: int = 6,
    height: int = 4,
    thresholds: Sequence[tuple[float | None, str]] = ((None, "green"),),
    reduce: str = "lastNotNull",
) -> Panel:
    """A Stat panel, coloured by ``thresholds`` (``(None, colour)`` is the base step)."""

    def build(grid: g.GridPos, panel_id: int) -> g.Stat:
        return g.Stat(
            title=title,
            description=description,
            dataSource=DATASOURCE,
            targets=_targets(queries),
            gridPos=grid,
            id=panel_id,
            format=unit,
            reduceCalc=reduce,
            colorMode="background",
            graphMode="none",
            thresholds=_thresholds(thresholds),
        )

    return Panel(build, width, height, queries=tuple(queries))


def state_timeline(
    title: str,
    queries: Sequence[Query],
    *,
    states: Sequence[tuple[int, str, str]],
    description: str = "",
    width: int = 12,
    height: int = 8,
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
            description=description,
            dataSource=DATASOURCE,
            targets=_targets(queries),
            gridPos=grid,
            id=panel_id,
            mappings=mappings,
            colorMode="fixed",
            mergeValues=True,
            showValue="never",
            rowHeight=0.8,
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


def _variables(metric: str, job_selector: str, system_regex: str) -> list[g.Template]:
    job_filter = f"{{{job_selector}}}" if job_selector else ""
    system_filter = ", ".join(m for m in (job_selector, 'job=~"$job"',
                                          f'system=~"{system_regex}"') if m)
    client_filter = ", ".join(m for m in (job_selector, 'job=~"$job"', 'system=~"$system"') if m)
    common: dict[str, Any] = {
        "dataSource": DATASOURCE,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "default": "$__all",
        "refresh": 2,  # on time-range change, so new clients appear
    }
    return [
        g.Template(name="datasource", label="Data source", query="prometheus",
                   type="datasource", default="Prometheus"),
        g.Template(name="job", label="Job", query=f"label_values({metric}{job_filter}, job)",
                   **common),
        # "All" means this dashboard's systems, not every system: the SQL dashboard's All is
        # postgresql|mysql|..., never redis.
        g.Template(name="system", label="System",
                   query=f"label_values({metric}{{{system_filter}}}, system)",
                   **{**common, "allValue": system_regex}),
        g.Template(name="client", label="Client",
                   query=f"label_values({metric}{{{client_filter}}}, client)", **common),
    ]


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
) -> dict[str, Any]:
    """The dashboard as JSON-ready data, with variables ``datasource``, ``job``, ``system`` and
    ``client`` read from ``variable_metric``."""
    dashboard = g.Dashboard(
        title=title,
        uid=uid,
        description=description,
        tags=list(tags),
        panels=_layout(panels),
        templating=g.Templating(_variables(variable_metric, job_selector, system_regex)),
        time=g.Time("now-1h", "now"),
        refresh="30s",
        timezone="browser",
        graphTooltip=1,  # shared crosshair: an outage lines up across panels
        schemaVersion=39,
    )
    data: dict[str, Any] = json.loads(json.dumps(dashboard.to_json_data(), cls=DashboardEncoder))
    for variable in data["templating"]["list"]:
        if variable.get("includeAll"):  # Grafana's own form of a multi-value "All" selection
            variable["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    return data
