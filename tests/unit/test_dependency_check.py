"""``instrumented-clients check`` without a network: the client's own check(), the registry's
verdict, a real SQLite database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from instrumented_clients import dependencies
from instrumented_clients.config import ConfigError
from instrumented_clients.dependencies import attempt_once, check_dependencies


class Client:
    """A client with a ``check()`` of the given behaviour."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.checks = 0

    def check(self) -> Any:
        self.checks += 1
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer

    def health(self) -> dict[str, Any]:
        return {"state": "connected", "connected": True}

    def close(self, timeout: float | None = None) -> None:
        pass


def fallback_raises(client: object, timeout: float) -> None:
    raise ConnectionRefusedError(111, "refused")


def test_the_clients_check_is_the_attempt_when_it_exists() -> None:
    client = Client(True)
    attempt_once(client, fallback_raises, 1.0)  # the fallback is not called: no error
    assert client.checks == 1
    with pytest.raises(TimeoutError):
        attempt_once(Client(TimeoutError("slow")), fallback_raises, 1.0)


def test_a_check_that_only_says_false_is_followed_by_one_plain_attempt_to_learn_why() -> None:
    client = Client(False)
    with pytest.raises(ConnectionRefusedError):
        attempt_once(client, fallback_raises, 1.0)
    assert client.checks == 1


def test_a_check_result_carrying_its_error_raises_it() -> None:
    class Result:
        ok = False
        error = PermissionError("denied")

    with pytest.raises(PermissionError):
        attempt_once(Client(Result()), fallback_raises, 1.0)


def test_a_passed_attempt_is_still_down_when_the_registry_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class OpenBreaker(Client):
        def health(self) -> dict[str, Any]:
            return {"state": "connected", "connected": True, "circuit_breaker_open": True}

    monkeypatch.setitem(dependencies.CLIENTS, "redis",
                        (lambda url, timeout: OpenBreaker(True), fallback_raises))
    report = check_dependencies(["redis"], timeout=1, environ={})
    (row,) = report.results
    assert (row.ok, row.category, report.status) == (False, "unavailable", "degraded")


def test_a_real_sqlite_database_is_up_and_required(tmp_path: Path) -> None:
    report = check_dependencies(["database"], timeout=1,
                                environ={"DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}"})
    (row,) = report.results
    assert (row.name, row.system, row.state, row.required) == ("database", "sqlite", "up", True)
    assert row.address == str(tmp_path / "c.db").lstrip("/")
    assert report.status == "healthy"


def test_an_unreadable_sqlite_file_is_a_classified_required_failure(tmp_path: Path) -> None:
    report = check_dependencies(["database"], timeout=1, environ={
        "DATABASE_URL": f"sqlite:///{tmp_path / 'missing-dir' / 'c.db'}"})
    (row,) = report.results
    assert (row.state, report.status) == ("down", "unhealthy")
    assert row.category is not None
    assert row.error is not None
    assert "OperationalError" in row.error


def test_every_variable_is_read_before_any_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(url: str, timeout: float) -> None:
        raise AssertionError("no client may be built when a variable does not parse")

    monkeypatch.setitem(dependencies.CLIENTS, "redis", (never, fallback_raises))
    with pytest.raises(ConfigError) as caught:
        check_dependencies(["redis"], environ={"RABBITMQ_PREFETCH": "lots"})
    assert caught.value.variable == "RABBITMQ_PREFETCH"
