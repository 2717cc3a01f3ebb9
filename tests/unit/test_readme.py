"""The README's metric table is the catalog's, and its set-up commands are the Makefile's."""

from __future__ import annotations

from pathlib import Path

from instrumented_clients.telemetry.catalog import METRICS, markdown_table

ROOT = Path(__file__).resolve().parents[2]
START, END = "<!-- metric-catalog:start -->", "<!-- metric-catalog:end -->"


def test_readme_metric_table_matches_the_catalog() -> None:
    readme = (ROOT / "README.md").read_text()
    assert START in readme, "README lacks the metric-catalog start marker"
    assert END in readme, "README lacks the metric-catalog end marker"
    block = readme.split(START, 1)[1].split(END, 1)[0].strip("\n") + "\n"
    assert block == markdown_table(), (
        "README's metric table is stale: replace the block between the markers with the output of "
        "python -c 'from instrumented_clients.telemetry.catalog import markdown_table as t; "
        "print(t(), end=\"\")'"
    )
    for spec in METRICS:
        assert f"`resilient_client_{spec.name}`" in block


def test_readme_names_the_two_setup_commands_that_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "test"):
        assert f"make {target}" in readme
        assert f"\n{target}:" in makefile
