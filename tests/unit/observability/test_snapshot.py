"""The snapshot renderer's pure parts and its command-line errors (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from instrumented_clients.observability.snapshot import _legend, expand_query, main
from tests.observability_helpers import ROOT, dashboards

SQL = dashboards()["sql"]


def test_variables_become_their_all_value_and_intervals_are_filled() -> None:
    expr = ('sum by (client) (rate(m{job=~"$job", system=~"$system", client=~"${client}"}'
            "[$__rate_interval])) + increase(m[$__range])")
    assert expand_query(expr, SQL, rate_interval="10s", time_range="300s") == (
        'sum by (client) (rate(m{job=~".*", system=~"postgresql|mysql|mariadb|sqlite", '
        'client=~".*"}[10s])) + increase(m[300s])'
    )


def test_unknown_variables_are_left_for_prometheus_to_reject() -> None:
    assert expand_query("m{x=~\"$nope\"}", SQL) == "m{x=~\"$nope\"}"


def test_legend_templates() -> None:
    assert _legend("p99 {{client}} {{ operation }}", {"client": "cache", "operation": "get"}) == (
        "p99 cache get")
    assert _legend("", {"client": "cache"}) == "client=cache"
    assert _legend("{{missing}}", {}) == "value"


@pytest.mark.parametrize(("argv", "message"), [
    (["--prometheus", "http://127.0.0.1:9", "--dashboard", "no-such.json", "--out", "x"],
     "is not a file"),
    (["--prometheus", "http://127.0.0.1:9", "--dashboard", str(ROOT / "dashboards/slo.json"),
      "--out", "x", "--range", "soon"], "--range must be a duration"),
    (["--dashboard", "d.json", "--out", "x"], "--prometheus"),
])
def test_bad_input_is_one_line_and_exit_2(argv: list[str], message: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert err.startswith("instrumented-clients snapshot: error: ")
    assert message in err
