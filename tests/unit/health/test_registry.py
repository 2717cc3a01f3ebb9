"""HealthRegistry: verdicts, redaction and robustness against broken clients."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from instrumented_clients.health import HealthRegistry, is_dependency_up, sanitize

SECRET = "s3cr3t-Pa55"


class FakeClient:
    """A client-shaped object whose health() returns what the test says (no I/O)."""

    def __init__(self, name: str, connected: bool = True, **extra: Any) -> None:
        self.name = name
        self.connected = connected
        self.extra = extra

    def health(self) -> dict[str, Any]:
        return {
            "system": "redis",
            "client": self.name,
            "state": "connected" if self.connected else "disconnected",
            "connected": self.connected,
            "address": "127.0.0.1:6379",
            "last_error": None,
            "consecutive_failures": 0,
            "circuit_breaker": "closed",
            "circuit_breaker_open": False,
            "reconnect_attempts": 0,
            **self.extra,
        }


class Exploding:
    name = "exploding"

    def health(self) -> dict[str, Any]:
        raise ConnectionError(
            f"cannot reach amqp://guest:{SECRET}@broker:5672/ (password={SECRET})"
        )


def test_all_up_is_healthy() -> None:
    registry = HealthRegistry(service="orders")
    registry.register(FakeClient("db"))
    registry.register(FakeClient("cache"), required=False)
    report = registry.check()
    assert report["status"] == "healthy"
    assert report["service"] == "orders"
    assert report["issues"] == []
    assert set(report["dependencies"]) == {"db", "cache"}
    assert report["dependencies"]["db"]["required"] is True
    assert report["dependencies"]["cache"]["required"] is False
    assert registry.ready()


def test_optional_down_is_degraded_with_pending_events() -> None:
    registry = HealthRegistry()
    registry.register(FakeClient("db"))
    registry.register(FakeClient("events", connected=False, pending_events=15), required=False)
    report = registry.check()
    assert report["status"] == "degraded"
    assert report["dependencies"]["events"]["healthy"] is False
    assert report["dependencies"]["events"]["pending_events"] == 15
    assert len(report["issues"]) == 1
    assert "optional dependency 'events' is down" in report["issues"][0]
    assert "15 pending events" in report["issues"][0]
    assert registry.ready()


def test_required_down_is_unhealthy_even_with_optional_down() -> None:
    registry = HealthRegistry()
    registry.register(FakeClient("events", connected=False), required=False)
    registry.register(FakeClient("db", connected=False))
    report = registry.check()
    assert report["status"] == "unhealthy"
    assert len(report["issues"]) == 2
    assert not registry.ready()


def test_open_breaker_counts_as_down() -> None:
    registry = HealthRegistry()
    registry.register(FakeClient("db", circuit_breaker_open=True, circuit_breaker="open"))
    report = registry.check()
    assert report["status"] == "unhealthy"
    assert "circuit breaker open" in report["issues"][0]


def test_required_defaults_to_the_clients_own_attribute() -> None:
    publisher = FakeClient("events", connected=False)
    publisher.required = False  # type: ignore[attr-defined]  # as ResilientPublisher(required=False)
    registry = HealthRegistry()
    registry.register(publisher)
    assert registry.check()["status"] == "degraded"


def test_health_that_raises_is_down_and_redacted() -> None:
    registry = HealthRegistry()
    registry.register(Exploding(), required=False)
    registry.register(FakeClient("db"))
    report = registry.check()
    assert report["status"] == "degraded"
    broken = report["dependencies"]["exploding"]
    assert broken["healthy"] is False
    assert broken["state"] == "unknown"
    assert "ConnectionError" in broken["error"]
    assert SECRET not in json.dumps(report)


def test_health_returning_a_non_dict_is_down() -> None:
    class Wrong:
        name = "wrong"

        def health(self) -> Any:
            return "fine"

    registry = HealthRegistry()
    registry.register(Wrong())
    report = registry.check()
    assert report["status"] == "unhealthy"
    assert "TypeError" in report["dependencies"]["wrong"]["error"]


def test_credentials_in_a_health_dict_are_scrubbed() -> None:
    registry = HealthRegistry()
    registry.register(FakeClient(
        "events",
        url=f"amqp://guest:{SECRET}@rabbit:5672/vhost?token={SECRET}",
        urls=[f"amqp://u:{SECRET}@a:5672/", f"amqp://u:{SECRET}@b:5672/"],
        last_error=f"connect to postgresql://app:{SECRET}@db:5432/app failed",
        password=SECRET,
        nested={"dsn": f"mysql+pymysql://root:{SECRET}@db/test", "note": f"pwd={SECRET}"},
    ))
    text = json.dumps(registry.check())
    assert SECRET not in text
    assert "amqp://guest:***@rabbit:5672/vhost" in text
    assert "postgresql://app:***@db:5432/app" in text


def test_registration_errors() -> None:
    registry = HealthRegistry()
    with pytest.raises(TypeError, match="health"):
        registry.register(object())  # type: ignore[arg-type]
    nameless = FakeClient("x")
    del nameless.name
    with pytest.raises(ValueError, match="name="):
        registry.register(nameless)
    registry.register(FakeClient("db"))
    with pytest.raises(ValueError, match="already registered"):
        registry.register(FakeClient("db"))
    registry.unregister("db")
    assert len(registry) == 0
    assert registry.check()["status"] == "healthy"


def test_explicit_healthy_key_wins() -> None:
    assert is_dependency_up({"healthy": True, "connected": False})
    assert not is_dependency_up({"healthy": False, "connected": True})
    assert is_dependency_up({"state": "connected"})
    assert not is_dependency_up({"state": "failed"})


def test_report_is_json_serialisable_whatever_the_client_returns() -> None:
    import enum

    class Colour(enum.Enum):
        RED = "red"

    registry = HealthRegistry()
    registry.register(FakeClient("db", colour=Colour.RED, error=ValueError("x"), when={1, 2}))
    report = registry.check()
    decoded = json.loads(json.dumps(report))
    assert decoded["dependencies"]["db"]["colour"] == "red"


@given(
    user=st.text(alphabet="abcdefghijklmnop", min_size=1, max_size=8),
    password=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!$%*-_.~", min_size=6,
                     max_size=20),
    key=st.sampled_from(["url", "last_error", "message", "dsn"]),
)
def test_no_password_survives_sanitize(user: str, password: str, key: str) -> None:
    value = f"redis://{user}:{password}@cache:6379/0"
    cleaned = json.dumps(sanitize({key: value, "list": [value], "deep": {"x": value}}))
    assert password not in cleaned
