"""Invariants of the duration formatter and the panel layout, for any input."""

from __future__ import annotations

import itertools
import math
import re

from hypothesis import given
from hypothesis import strategies as st

from instrumented_clients.observability.config import format_duration
from instrumented_clients.observability.panels import Query, build_dashboard, row, timeseries

UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def _seconds(text: str) -> int:
    return sum(int(n) * UNITS[u] for n, u in re.findall(r"(\d+)([dhms])", text))


@given(st.floats(min_value=0, max_value=10 * 86400, allow_nan=False))
def test_format_duration_rounds_up_to_a_valid_whole_second_duration(seconds: float) -> None:
    text = format_duration(seconds)
    assert re.fullmatch(r"(\d+d)?(\d+h)?(\d+m)?(\d+s)?", text)
    assert _seconds(text) == max(1, math.ceil(round(seconds, 6)))


@given(st.lists(st.tuples(st.booleans(), st.integers(1, 24), st.integers(1, 10)), max_size=25))
def test_layout_never_overlaps_and_stays_in_the_grid(shapes: list[tuple[bool, int, int]]) -> None:
    panels = [row(f"row {i}") if is_row else
              timeseries(f"p{i}", [Query("up")], healthy="-", width=width, height=height)
              for i, (is_row, width, height) in enumerate(shapes)]
    built = build_dashboard(uid="u", title="t", description="", panels=panels,
                            variable_metric="up")
    boxes = [p["gridPos"] for p in built["panels"]]
    assert [p["id"] for p in built["panels"]] == list(range(1, len(shapes) + 1))
    for box in boxes:
        assert box["x"] + box["w"] <= 24
    for a, b in itertools.combinations(boxes, 2):
        assert (a["x"] + a["w"] <= b["x"] or b["x"] + b["w"] <= a["x"]
                or a["y"] + a["h"] <= b["y"] or b["y"] + b["h"] <= a["y"])
