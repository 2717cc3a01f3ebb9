"""Exit codes and one-line errors of ``python -m instrumented_clients`` (no network: every case
fails while parsing, before any connection is tried)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

SECRET = "Sup3rS3cret"


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {key: value for key, value in os.environ.items()
               if not key.startswith(("RABBITMQ_", "REDIS_", "DB_", "DATABASE_"))}
    environ.update(env)
    return subprocess.run([sys.executable, "-m", "instrumented_clients", *args], env=environ,
                          capture_output=True, text=True, timeout=60, check=False)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert result.stdout == ""
    return lines[0]


@pytest.mark.parametrize("args", [("demo", "--bogus"), ("check", "--nope"), ("frobnicate",)])
def test_bad_flag_or_command_is_one_line_exit_2(args: tuple[str, ...]) -> None:
    result = run(*args)
    assert result.returncode == 2
    line = one_line(result)
    assert line.startswith("instrumented-clients")
    assert args[-1] in line


def test_bad_flag_value_names_the_flag() -> None:
    result = run("demo", "--duration", "soon")
    assert result.returncode == 2
    assert "argument --duration: 'soon' is invalid: expected a number" in one_line(result)
    result = run("demo", "--rate", "0")
    assert result.returncode == 2
    assert "argument --rate: '0' is invalid: expected > 0" in one_line(result)


def test_no_command_is_exit_2() -> None:
    result = run()
    assert result.returncode == 2
    assert "COMMAND" in one_line(result)


@pytest.mark.parametrize(("variable", "value", "expected"), [
    ("DB_RETRY_MAX_ATTEMPTS", "abc", "expected an integer >= 1"),
    ("RABBITMQ_MAX_PENDING_EVENTS", "x", "expected an integer >= 1"),
    ("REDIS_RETRY_BASE_DELAY", "fast", "expected a number of seconds"),
    ("RABBITMQ_REQUIRED", "maybe", "expected one of true/false"),
])
@pytest.mark.parametrize("command", ["demo", "check"])
def test_bad_variable_names_the_variable(command: str, variable: str, value: str,
                                         expected: str) -> None:
    result = run(command, **{variable: value})
    assert result.returncode == 2
    line = one_line(result)
    assert line.startswith("instrumented-clients: configuration error: ")
    assert f"{variable}={value!r}" in line
    assert expected in line


def test_bad_url_is_reported_without_its_password() -> None:
    result = run("check", RABBITMQ_URL=f"http://guest:{SECRET}@broker:5672/")
    assert result.returncode == 2
    line = one_line(result)
    assert "RABBITMQ_URL" in line
    assert "amqp://" in line
    assert SECRET not in line
    result = run("check", REDIS_URL=f"redis://:{SECRET}@cache:notaport/0")
    assert result.returncode == 2
    assert "REDIS_URL" in one_line(result)
    assert SECRET not in result.stderr


def test_generate_without_the_module_is_a_clear_exit_2() -> None:
    result = run("generate", "--check")
    try:
        importlib.import_module("instrumented_clients.observability.generate")
    except ModuleNotFoundError:
        assert result.returncode == 2
        assert "generate needs the dashboards extra/module" in one_line(result)
    else:  # after the merge the command runs; it must not fail as "unknown command"
        assert "invalid choice" not in result.stderr


def test_help_and_version_exit_0() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("demo", "check", "generate", "snapshot"):
        assert command in result.stdout
    assert run("demo", "--help").returncode == 0
    version = run("--version")
    assert version.returncode == 0
    assert version.stdout.startswith("instrumented-clients ")


@pytest.mark.parametrize(("variable", "value"), [
    ("DATABASE_URL", f"postgresqlx://app:{SECRET}@db/app"),
    ("DATABASE_URL", f"mysql+nodriver://root:{SECRET}@db/test"),
    ("RABBITMQ_URL", f"amqp://guest:{SECRET}@broker:5672/?heartbeat=soon"),
])
def test_url_the_driver_cannot_use_is_a_configuration_error(variable: str, value: str) -> None:
    for command in ("demo", "check"):
        result = run(command, **{variable: value})
        assert result.returncode == 2
        line = one_line(result)
        assert line.startswith(f"instrumented-clients: configuration error: {variable}=")
        assert SECRET not in line
