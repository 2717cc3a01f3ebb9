"""redis-py's own command and pipeline suites, run on plain ``redis.Redis`` and on ResilientRedis.

``ResilientRedis`` subclasses ``redis.Redis`` and promises to be a drop-in replacement. The
strongest evidence is redis-py's own tests: ``tests/test_commands.py`` and
``tests/test_pipeline.py`` of the installed redis-py version, taken from its sdist on PyPI at
install time (``python -m tests.upstream.redis_py_suite fetch``, run by ``make install``) into
the git-ignored ``.cache/``. They are never copied into this repository.

Each suite is run twice, in subprocesses, against the local Redis on a database of its own
(:data:`SUITE_DB`): once as upstream wrote it and once with :mod:`resilient_redis_plugin`, which
makes upstream's client factory build ``ResilientRedis``. Tests that need servers or modules this
machine lacks (a replica, Redis Stack, a cluster) fail or skip the same way on both; what is
compared is the set of test ids that pass.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Final

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
CACHE_ROOT: Final = REPO_ROOT / ".cache"
SUITES: Final = ("tests/test_commands.py", "tests/test_pipeline.py")
ASYNC_SUITES: Final = ("tests/test_asyncio/test_commands.py", "tests/test_asyncio/test_pipeline.py")
SUITE_DB: Final = 9
"""The suites FLUSHDB after every test: they get a database nobody else uses."""

CLIENTS: Final = ("redis.Redis", "ResilientRedis")
ASYNC_CLIENTS: Final = ("redis.asyncio.Redis", "AsyncResilientRedis")
"""The asyncio pair runs :data:`ASYNC_SUITES`; the sync pair :data:`SUITES`."""

DESELECTED: Final[dict[str, str]] = {
    # Run on neither client: they reach beyond the suite's own database.
    "tests/test_commands.py::TestRedisCommands::test_acl_getuser_setuser":
        "runs FLUSHALL, which empties every database of the shared server",
    "tests/test_commands.py::TestRedisCommands::test_copy_to_another_database":
        "writes to and flushes databases 0 and 1, where other tests and the demo keep data",
}

FLAKY: Final[dict[str, str]] = {
    # Left out of the comparison: their outcome varies from run to run on either client.
    "tests/test_commands.py::TestRedisCommands::test_interrupted_command":
        "gives a thread 0.1 s (thread.join(0.1)) to send two commands; on a loaded 2-core "
        "machine it sometimes needs longer, on either client (upstream calls it timing-sensitive)",
}


def redis_py_version() -> str:
    """The installed redis-py version: the suites must match the code they test."""
    return version("redis")


def suite_dir(redis_version: str | None = None) -> Path:
    return CACHE_ROOT / f"redis-py-{redis_version or redis_py_version()}"


def fetch(redis_version: str | None = None) -> Path:
    """Download redis-py's sdist once and unpack its ``tests/`` (and pytest settings)."""
    redis_version = redis_version or redis_py_version()
    target = suite_dir(redis_version)
    if all((target / suite).is_file() for suite in (*SUITES, *ASYNC_SUITES)):
        return target
    CACHE_ROOT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE_ROOT) as scratch:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--no-binary", ":all:", f"redis=={redis_version}", "--dest", scratch],
            check=True,
        )
        sdist = next(Path(scratch).glob("redis-*.tar.gz"))
        top = f"redis-{redis_version}/"
        unpacked = Path(scratch) / "unpacked"
        with tarfile.open(sdist) as archive:
            members = [member for member in archive.getmembers()
                       if member.name.startswith(f"{top}tests/")
                       or member.name == f"{top}pyproject.toml"]
            if not members:
                raise RuntimeError(f"{sdist.name} has no tests/ directory")
            if hasattr(tarfile, "data_filter"):
                archive.extractall(unpacked, members, filter="data")
            else:  # a Python without extraction filters; the archive is our own download
                archive.extractall(unpacked, members)
        if target.exists():
            shutil.rmtree(target)
        (unpacked / top).rename(target)
    return target


@dataclass(frozen=True)
class SuiteRun:
    """What one run of the suites showed."""

    client: str
    outcomes: dict[str, str]
    clients_built: dict[str, int]
    seconds: float
    output: str

    @property
    def passed(self) -> set[str]:
        return {test for test, outcome in self.outcomes.items() if outcome == "passed"}


def run(client: str, *, redis_url: str, timeout: float = 600) -> SuiteRun:
    """Run the suites with ``client`` in place of ``redis.Redis``; needs :func:`fetch` first."""
    if client not in (*CLIENTS, *ASYNC_CLIENTS):
        raise ValueError(f"client must be one of {CLIENTS + ASYNC_CLIENTS}, got {client!r}")
    suites = ASYNC_SUITES if client in ASYNC_CLIENTS else SUITES
    directory = suite_dir()
    if not all((directory / suite).is_file() for suite in suites):
        raise FileNotFoundError(
            f"redis-py's suites are not in {directory}: run `make install` "
            "(or `python -m tests.upstream.redis_py_suite fetch`)"
        )
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "outcomes.json"
        command = [
            sys.executable, "-m", "pytest", *suites, "-q", "-p", "no:cacheprovider",
            "-p", "resilient_redis_plugin", f"--redis-url={redis_url}",
            f"--instrumented-client={client}", f"--instrumented-report={report}",
            "-m", "not replica",  # they need a replica server on port 6380
            "-W", "ignore::pytest.PytestConfigWarning",
            *(f"--deselect={test}" for test in DESELECTED),
        ]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, (str(Path(__file__).parent), env.get("PYTHONPATH")))
        )
        completed = subprocess.run(
            command, cwd=directory, env=env, capture_output=True, text=True, timeout=timeout,
            check=False,
        )
        output = completed.stdout + completed.stderr
        if not report.is_file():
            raise RuntimeError(f"the {client} run wrote no report (exit {completed.returncode}):"
                               f"\n{output[-4000:]}")
        data = json.loads(report.read_text())
    return SuiteRun(client, data["outcomes"], data["clients_built"], data["seconds"], output)


def regressions(plain: SuiteRun, resilient: SuiteRun) -> list[str]:
    """Tests that pass on plain redis-py but not on its resilient twin (known-flaky ones aside)."""
    return sorted(plain.passed - resilient.passed - set(FLAKY))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.upstream.redis_py_suite")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("fetch", help="download redis-py's test suites into .cache/")
    compare = commands.add_parser("compare", help="run them on both clients and compare")
    compare.add_argument("--redis-url", default=f"redis://127.0.0.1:6379/{SUITE_DB}")
    arguments = parser.parse_args(argv)
    if arguments.command == "fetch":
        print(f"redis-py test suites in {fetch()}")
        return 0
    missing: list[str] = []
    for pair in (CLIENTS, ASYNC_CLIENTS):
        runs = [run(client, redis_url=arguments.redis_url) for client in pair]
        for suite_run in runs:
            print(f"{suite_run.client}: {len(suite_run.passed)} passed of "
                  f"{len(suite_run.outcomes)} in {suite_run.seconds:.1f} s")
        missing += regressions(*runs)
    for test in missing:
        print(f"passes on plain redis-py only: {test}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
