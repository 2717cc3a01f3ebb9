"""The README's metric and environment tables are the catalog's and the settings table's, and its
set-up commands are the Makefile's."""

from __future__ import annotations

import re
from pathlib import Path

from instrumented_clients import settings
from instrumented_clients.telemetry.catalog import METRICS, markdown_table

ROOT = Path(__file__).resolve().parents[2]
START, END = "<!-- metric-catalog:start -->", "<!-- metric-catalog:end -->"
SETTINGS_START, SETTINGS_END = "<!-- settings:start -->", "<!-- settings:end -->"
PACKAGE = ROOT / "instrumented_clients"


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


def test_readme_environment_table_matches_the_settings_table() -> None:
    readme = (ROOT / "README.md").read_text()
    assert SETTINGS_START in readme, "README lacks the settings start marker"
    assert SETTINGS_END in readme, "README lacks the settings end marker"
    block = readme.split(SETTINGS_START, 1)[1].split(SETTINGS_END, 1)[0].strip("\n") + "\n"
    assert block == settings.markdown_table(), (
        "README's environment table is stale: replace the block between the markers with the "
        "output of `instrumented-clients settings`"
    )
    for entry in settings.SETTINGS:
        assert f"| `{entry.env}` |" in block


def test_only_the_settings_table_reads_the_environment() -> None:
    """No second reader with its own defaults: the parsers are called from the table alone."""
    readers = re.compile(r"\benv_(str|int|float|bool)\(|os\.environ|os\.getenv")
    allowed = {PACKAGE / "config.py", PACKAGE / "settings.py",
               # the deprecated lower-case spelling of PROMETHEUS_MULTIPROC_DIR
               PACKAGE / "health" / "multiprocess.py"}
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted(PACKAGE.rglob("*.py")) if path not in allowed
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if readers.search(line) and not line.lstrip().startswith("#")
    ]
    assert offenders == []


def test_every_variable_named_in_the_package_is_in_the_table() -> None:
    known = {entry.env for entry in settings.SETTINGS}
    named: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        named.update(re.findall(r"\"((?:RABBITMQ|REDIS|DB|DATABASE|METRICS|PROMETHEUS)_[A-Z_]+)\"",
                                path.read_text()))
    assert named <= known, sorted(named - known)
