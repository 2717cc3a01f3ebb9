"""Running the demo as a user would: ``python -m instrumented_clients demo`` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[3]


def demo_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("RABBITMQ_", "REDIS_", "DB_", "DATABASE_", "PROMETHEUS_"))}
    env.update({"DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}", "PYTHONUNBUFFERED": "1"})
    env.update(overrides)
    return env


def unique_prefix() -> str:
    return f"ic_test_{uuid.uuid4().hex[:10]}"


def start_demo(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    stderr = (tmp_path / "demo-stderr.log").open("w")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "instrumented_clients", "demo", "--no-tui", "--port", "0",
             *args],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True,
        )
    finally:
        stderr.close()  # the child holds its own descriptor


def read_base_url(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("serving http://"), line
    return line.split()[1].rsplit("/", 1)[0]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()


def health(base: str) -> dict[str, Any]:
    return dict(json.loads(get(f"{base}/health")[1]))


def metric(base: str, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    text = get(f"{base}/metrics")[1]
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def stop(process: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    """SIGTERM (what ``docker stop`` sends), then the exit status and the rest of stdout."""
    if process.poll() is None:
        process.terminate()
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
        raise
    return process.returncode, out
