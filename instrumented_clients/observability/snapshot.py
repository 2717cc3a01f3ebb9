"""``instrumented-clients snapshot``: draw a dashboard from Prometheus into PNG images.

For people who cannot open Grafana right now, for the README, and for a failing test that wants
to show what the dashboard showed. Each panel's queries run as Prometheus range queries with the
dashboard's variables set to their "All" value; time series become line charts, state timelines
coloured bands, stats big numbers. One PNG per panel plus ``<dashboard uid>.png``, the whole
dashboard laid out by its grid positions.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from instrumented_clients.observability._cli import OneLineParser

__all__ = ["Series", "expand_query", "main", "query_range", "render_dashboard"]

_COLOURS = {"green": "#37872d", "yellow": "#e0b400", "orange": "#fa6400", "red": "#c4162a",
            "purple": "#8f3bb8", "text": "#8e8e8e", "blue": "#1f60c4"}
_GRID_COLUMNS = 24
_INCH_PER_ROW = 0.32


@dataclass(frozen=True)
class Series:
    """One series of a range query result."""

    labels: dict[str, str]
    times: list[float]
    values: list[float]


def expand_query(expr: str, dashboard: dict[str, Any], *, rate_interval: str = "1m",
                 time_range: str = "1h", selected: Mapping[str, str] | None = None) -> str:
    """``expr`` with Grafana's variables replaced: each template variable by its value in
    ``selected`` or else its "All" value (the ``allValue`` regex), ``$__rate_interval``/
    ``$__interval`` and ``$__range`` by the given durations."""
    values = {"__rate_interval": rate_interval, "__interval": rate_interval,
              "__range": time_range, **(selected or {})}
    for variable in dashboard.get("templating", {}).get("list", []):
        values.setdefault(variable["name"], variable.get("allValue") or ".*")

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return values.get(name, match.group(0))

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", substitute, expr)


def query_range(prometheus: str, expr: str, start: float, end: float, step: float,
                timeout: float = 15.0) -> list[Series]:
    """Run ``expr`` over [start, end] against the Prometheus at ``prometheus``.

    Raises:
        RuntimeError: Prometheus answered with an error (the message is Prometheus's own).
        OSError: Prometheus could not be reached.
    """
    params = urllib.parse.urlencode({"query": expr, "start": f"{start:.3f}",
                                     "end": f"{end:.3f}", "step": f"{step:g}"})
    url = f"{prometheus.rstrip('/')}/api/v1/query_range?{params}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = json.load(response)
    except urllib.error.HTTPError as error:
        try:
            body = json.load(error)
        except ValueError:
            raise RuntimeError(f"Prometheus answered HTTP {error.code}") from None
        finally:
            error.close()
    if body.get("status") != "success":
        raise RuntimeError(f"Prometheus refused the query: {body.get('error')}")
    return [
        Series(item["metric"], [float(t) for t, _ in item["values"]],
               [float(v) for _, v in item["values"]])
        for item in body["data"]["result"]
    ]


def _legend(template: str, labels: dict[str, str]) -> str:
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)
    return " ".join(text.split()) or ",".join(f"{k}={v}" for k, v in labels.items()) or "value"


def _panel_data(panel: dict[str, Any], dashboard: dict[str, Any], prometheus: str, start: float,
                end: float, step: float, rate_interval: str) -> list[tuple[str, Series]]:
    out = []
    time_range = f"{max(1, int(end - start))}s"
    for target in panel.get("targets", []):
        expr = expand_query(target["expr"], dashboard, rate_interval=rate_interval,
                            time_range=time_range)
        for series in query_range(prometheus, expr, start, end, step):
            out.append((_legend(target.get("legendFormat", ""), series.labels), series))
    return out


def _format_value(value: float, unit: str) -> str:
    if math.isnan(value):
        return "NaN"
    if unit == "percentunit":
        return f"{value * 100:.3g} %"
    if unit == "s":
        return f"{value * 1000:.3g} ms" if abs(value) < 1 else f"{value:.3g} s"
    return f"{value:.4g}"


def _draw_timeseries(ax: Any, data: list[tuple[str, Series]], unit: str, start: float) -> None:
    for legend, series in data[:12]:
        ax.plot([t - start for t in series.times], series.values, label=legend[:40],
                linewidth=1.2)
    if unit == "percentunit":
        ax.yaxis.set_major_formatter(lambda v, _pos: f"{v * 100:.3g}%")
    elif unit == "s":
        ax.set_ylabel("seconds", fontsize=7)
    ax.set_xlabel("seconds since start", fontsize=7)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if data:
        ax.legend(fontsize=6, loc="upper left", ncol=2, framealpha=0.6)


def _draw_state_timeline(ax: Any, panel: dict[str, Any], data: list[tuple[str, Series]],
                         start: float, step: float) -> None:
    mappings = panel["fieldConfig"]["defaults"].get("mappings") or [{"options": {}}]
    options = mappings[0]["options"]
    ax.set_yticks(range(len(data)))
    ax.set_yticklabels([legend[:30] for legend, _ in data], fontsize=7)
    for row, (_legend_text, series) in enumerate(data):
        for t, value in zip(series.times, series.values, strict=True):
            if math.isnan(value):
                continue
            option = options.get(str(int(value)), {})
            colour = _COLOURS.get(option.get("color", "text"), option.get("color", "gray"))
            ax.broken_barh([(t - start, step)], (row - 0.4, 0.8), facecolors=colour)
    handles = [
        _patch(_COLOURS.get(option["color"], option["color"]), option["text"])
        for option in sorted(options.values(), key=lambda o: o.get("index", 0))
    ]
    ax.legend(handles=handles, fontsize=6, loc="upper right", ncol=len(handles), framealpha=0.6)
    ax.set_ylim(-0.6, max(len(data), 1) - 0.4 + 0.6)
    ax.set_xlabel("seconds since start", fontsize=7)
    ax.tick_params(labelsize=7)


def _patch(colour: str, label: str) -> Any:
    from matplotlib.patches import Patch

    return Patch(facecolor=colour, label=label)


def _draw_stat(ax: Any, panel: dict[str, Any], data: list[tuple[str, Series]]) -> None:
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
    steps = panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps")
    ax.set_axis_off()
    shown = data[:4] or [("no data", Series({}, [], [float("nan")]))]
    for i, (legend, series) in enumerate(shown):
        finite = [v for v in series.values if not math.isnan(v)]
        value = finite[-1] if finite else float("nan")
        colour = "#8e8e8e"
        for threshold in steps or []:
            if threshold["value"] is None or (not math.isnan(value)
                                              and value >= threshold["value"]):
                colour = _COLOURS.get(threshold["color"], threshold["color"])
        y = 1 - (i + 0.5) / len(shown)
        ax.text(0.5, y, _format_value(value, unit), ha="center", va="center",
                fontsize=16 if len(shown) == 1 else 10, color=colour, weight="bold",
                transform=ax.transAxes)
        if len(shown) > 1:
            ax.text(0.02, y, legend[:24], ha="left", va="center", fontsize=6,
                    transform=ax.transAxes)


def _draw_panel(ax: Any, panel: dict[str, Any], data: list[tuple[str, Series]], start: float,
                step: float) -> None:
    ax.set_title(panel["title"], fontsize=8, loc="left")
    kind = panel["type"]
    if kind == "state-timeline":
        _draw_state_timeline(ax, panel, data, start, step)
    elif kind == "stat":
        _draw_stat(ax, panel, data)
    else:
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        _draw_timeseries(ax, data, unit, start)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:50]


def render_dashboard(
    dashboard_path: str | Path,
    prometheus: str,
    out_dir: str | Path,
    *,
    start: float | None = None,
    end: float | None = None,
    step: float | None = None,
    rate_interval: str = "1m",
) -> list[Path]:
    """Render every panel of the dashboard file into ``out_dir``; returns the PNGs written,
    the whole-dashboard image last."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dashboard = json.loads(Path(dashboard_path).read_text(encoding="utf-8"))
    end = time.time() if end is None else end
    start = end - 3600 if start is None else start
    step = step or max(1.0, (end - start) / 300)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    panels = dashboard["panels"]
    data = {panel["id"]: _panel_data(panel, dashboard, prometheus, start, end, step,
                                     rate_interval)
            for panel in panels if panel["type"] != "row"}
    written = []
    for panel in panels:
        if panel["type"] == "row":
            continue
        grid = panel["gridPos"]
        figure = plt.figure(figsize=(grid["w"] * 0.55, grid["h"] * 0.45), dpi=110)
        ax = figure.add_axes((0.2, 0.15, 0.78, 0.75) if panel["type"] == "state-timeline"
                             else (0.08, 0.15, 0.9, 0.75))
        _draw_panel(ax, panel, data[panel["id"]], start, step)
        path = out / f"{panel['id']:02d}-{_slug(panel['title'])}.png"
        figure.savefig(path)
        plt.close(figure)
        written.append(path)
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    figure = plt.figure(figsize=(18, rows * _INCH_PER_ROW + 0.6), dpi=100)
    taken = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(end))
    figure.suptitle(f"{dashboard['title']} — {taken}, last {int(end - start)} s", fontsize=11)
    top = rows * _INCH_PER_ROW / (rows * _INCH_PER_ROW + 0.6)
    for panel in panels:
        grid = panel["gridPos"]
        left = grid["x"] / _GRID_COLUMNS + 0.035
        width = grid["w"] / _GRID_COLUMNS - 0.045
        bottom = top * (1 - (grid["y"] + grid["h"]) / rows) + 0.012
        height = top * grid["h"] / rows - (0.012 if panel["type"] == "row" else 0.05)
        if panel["type"] == "row":
            figure.text(0.01, bottom + height / 2, panel["title"], fontsize=10, weight="bold")
            continue
        if panel["type"] == "state-timeline":  # room for the series names left of the bars
            left, width = left + 0.05, width - 0.05
        ax = figure.add_axes((left, bottom, width, max(height, 0.01)))
        _draw_panel(ax, panel, data[panel["id"]], start, step)
    whole = out / f"{dashboard['uid']}.png"
    figure.savefig(whole)
    plt.close(figure)
    written.append(whole)
    return written


def _duration(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text)
    if not match:
        raise ValueError(f"--range must be a duration like 15m or 900s, got {text!r}")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: ``snapshot --prometheus URL --dashboard FILE --out DIR [--range 1h]``.

    Returns 0 on success; on bad input or an unreachable Prometheus prints one line to stderr
    and returns 2.
    """
    parser = OneLineParser(prog="instrumented-clients snapshot",
                           description="Render a dashboard's panels from Prometheus into PNGs.")
    parser.add_argument("--prometheus", required=True, help="Prometheus base URL")
    parser.add_argument("--dashboard", required=True, help="dashboard JSON file")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--range", default="1h", dest="time_range",
                        help="how far back from now (default: 1h)")
    parser.add_argument("--rate-interval", default="1m",
                        help="value of $__rate_interval (default: 1m)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        span = _duration(args.time_range)
        if not Path(args.dashboard).is_file():
            raise ValueError(f"--dashboard {args.dashboard!r} is not a file")
        end = time.time()
        written = render_dashboard(args.dashboard, args.prometheus, args.out, start=end - span,
                                   end=end, rate_interval=args.rate_interval)
    except (ValueError, OSError, RuntimeError, KeyError) as error:
        print(f"instrumented-clients snapshot: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} images to {Path(args.out).resolve()}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
