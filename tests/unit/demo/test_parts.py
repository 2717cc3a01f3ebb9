"""The demo's pieces without any network: settings, error classification, chaos schedule, view."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from instrumented_clients.config import ConfigError
from instrumented_clients.demo.chaos import default_schedule
from instrumented_clients.demo.settings import Settings
from instrumented_clients.demo.view import DemoView, RecentLog, plain_line, render
from instrumented_clients.demo.workload import OrderFlow, order_id_of
from instrumented_clients.dependencies import (
    ClassifiedError,
    check_dependencies,
    classifier,
    database_system,
    display_address,
)
from instrumented_clients.health import HealthRegistry
from instrumented_clients.redaction import describe_error
from instrumented_clients.resilience import (
    ConnectionState,
    ConnectionStateMachine,
    ErrorCategory,
    EventBuffer,
)
from instrumented_clients.resilience import events as ev
from instrumented_clients.telemetry import Telemetry
from instrumented_clients.testing import FakeClock

# -- settings ----------------------------------------------------------------------------------


def test_settings_defaults_follow_the_design_table() -> None:
    settings = Settings.from_env({})
    assert settings.database_url == "sqlite:///instrumented-clients-demo.db"
    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.rabbitmq_url == "amqp://guest:guest@localhost:5672/"
    assert not settings.rabbitmq_required
    assert settings.rabbitmq_max_pending_events == 1000
    assert (settings.db_retry_max_attempts, settings.redis_retry_max_attempts) == (4, 4)
    assert list(settings.db_policy().delays()) == [1.0, 2.0, 4.0]
    assert list(settings.redis_policy().delays()) == [0.5, 1.0, 2.0]
    reconnect = settings.rabbitmq_reconnect_policy()
    assert reconnect.max_attempts == 10  # the RabbitMQ clients' reading of RABBITMQ_MAX_RETRIES
    assert reconnect.max_delay == 30.0


def test_settings_policies_carry_the_clients_classifiers() -> None:
    import redis.exceptions

    from instrumented_clients.rabbitmq.errors import classify as rabbitmq_classify
    from instrumented_clients.redis.errors import classify as redis_classify

    settings = Settings.from_env({"REDIS_RETRY_MAX_ATTEMPTS": "2", "RABBITMQ_MAX_RETRIES": "3"})
    assert settings.redis_policy().classifier is redis_classify
    assert settings.redis_policy().max_attempts == 2
    assert settings.rabbitmq_reconnect_policy().classifier is rabbitmq_classify
    assert settings.rabbitmq_reconnect_policy().max_attempts == 3
    assert settings.redis_policy().should_retry(redis.exceptions.ConnectionError("x"))


@pytest.mark.parametrize(("variable", "value", "expected"), [
    ("DATABASE_URL", "postgresqlx://app:hunter2@db/app", "unknown dialect"),
    ("DATABASE_URL", "mysql+nodriver://root:hunter2@db/test", "dialect or driver"),
    ("RABBITMQ_URL", "amqp://guest:hunter2@broker:5672/?heartbeat=soon", "amqp://"),
])
def test_validate_urls_uses_the_clients_parsers_and_names_the_variable(
    variable: str, value: str, expected: str,
) -> None:
    with pytest.raises(ConfigError) as caught:  # the broker URL fails in from_env already
        Settings.from_env({variable: value}).validate_urls()
    assert caught.value.variable == variable
    assert expected in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_metrics_port_is_read_from_the_environment_as_compose_sets_it() -> None:
    assert Settings.from_env({}).metrics_port == 8000
    assert Settings.from_env({"METRICS_PORT": "9123"}).metrics_port == 9123
    for bad in ("eighty", "-1", "70000"):
        with pytest.raises(ConfigError) as caught:
            Settings.from_env({"METRICS_PORT": bad})
        assert caught.value.variable == "METRICS_PORT"


def test_settings_read_comma_separated_broker_urls() -> None:
    settings = Settings.from_env({"RABBITMQ_URL": "amqp://a:1@h1:5672/, amqp://a:1@h2:5672/"})
    assert settings.rabbitmq_urls == ["amqp://a:1@h1:5672/", "amqp://a:1@h2:5672/"]


@pytest.mark.parametrize(("variable", "value"), [
    ("DB_RETRY_MAX_ATTEMPTS", "0"), ("RABBITMQ_MAX_PENDING_EVENTS", "x"),
    ("RABBITMQ_HEARTBEAT", "-1"), ("REDIS_URL", "http://cache:6379"),
    ("DATABASE_URL", "just-a-file.db"), ("RABBITMQ_URL", "amqp://h:port/"),
])
def test_settings_errors_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value})
    assert caught.value.variable == variable
    assert variable in str(caught.value)


def test_settings_error_never_shows_a_password() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"RABBITMQ_URL": "https://user:hunter2@broker/"})
    assert "hunter2" not in str(caught.value)
    assert "user:***@broker" in str(caught.value)


# -- classification ----------------------------------------------------------------------------


def test_check_classifies_with_each_clients_own_classifier() -> None:
    import pika.exceptions
    import redis.exceptions
    import sqlalchemy.exc

    from instrumented_clients.db import errors as db_errors
    from instrumented_clients.rabbitmq import errors as rabbitmq_errors
    from instrumented_clients.redis import errors as redis_errors

    assert classifier("database") is db_errors.classify
    assert classifier("redis") is redis_errors.classify
    assert classifier("rabbitmq") is rabbitmq_errors.classify
    redis_classify, rabbitmq_classify = classifier("redis"), classifier("rabbitmq")
    db_classify = classifier("database")
    assert redis_classify(redis.exceptions.ConnectionError("x")) is ErrorCategory.CONNECTION
    assert redis_classify(redis.exceptions.TimeoutError("x")) is ErrorCategory.TIMEOUT
    assert redis_classify(redis.exceptions.AuthenticationError("x")) is ErrorCategory.AUTH
    assert redis_classify(redis.exceptions.BusyLoadingError("x")) is ErrorCategory.SERVER_BUSY
    assert not redis_classify(redis.exceptions.ResponseError("WRONGTYPE")).is_transient
    assert rabbitmq_classify(pika.exceptions.AMQPConnectionError()) is ErrorCategory.CONNECTION
    assert rabbitmq_classify(pika.exceptions.StreamLostError("lost")) is \
        ErrorCategory.CONNECTION
    assert rabbitmq_classify(pika.exceptions.ProbableAuthenticationError(
        "ConnectionClosedByBroker: (403) 'ACCESS_REFUSED - Login was refused'")) is \
        ErrorCategory.AUTH
    assert not rabbitmq_classify(pika.exceptions.ChannelClosedByBroker(404, "NOT_FOUND")) \
        .is_transient
    import psycopg

    refused = sqlalchemy.exc.OperationalError("SELECT 1", {}, psycopg.OperationalError(
        "connection failed: Connection refused"))
    assert db_classify(refused) is ErrorCategory.CONNECTION
    auth = sqlalchemy.exc.OperationalError("x", {}, psycopg.OperationalError(
        'FATAL:  password authentication failed for user "app"'))
    assert db_classify(auth) is ErrorCategory.AUTH
    assert db_classify(sqlalchemy.exc.IntegrityError("x", {}, psycopg.errors.UniqueViolation(
        "dup"))) is ErrorCategory.INTEGRITY
    assert db_classify(ConnectionRefusedError()) is ErrorCategory.CONNECTION


def test_check_reports_a_failure_as_one_classified_row_without_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from instrumented_clients import dependencies

    class Offline:
        def health(self) -> dict[str, Any]:
            return {"state": "disconnected", "connected": False}

        def close(self) -> None:
            pass

    def build(url: str, timeout: float) -> Offline:
        return Offline()

    def wrapped(client: object, timeout: float) -> None:
        try:
            raise ConnectionRefusedError(111, "refused by amqp://u:hunter2@broker:5672/")
        except ConnectionRefusedError as error:
            raise ClassifiedError(ErrorCategory.AUTH, "ProbableAuthenticationError: "
                                  "ACCESS_REFUSED\nsecond line") from error

    def plain(client: object, timeout: float) -> None:
        raise ConnectionRefusedError(111, "refused by redis://:hunter2@cache:6379/0")

    monkeypatch.setitem(dependencies.CLIENTS, "rabbitmq", (build, wrapped))
    monkeypatch.setitem(dependencies.CLIENTS, "redis", (build, plain))
    report = check_dependencies(["rabbitmq", "redis"], require=["rabbitmq"], timeout=1, environ={
        "RABBITMQ_URL": "amqp://u:hunter2@broker:5672/",
        "REDIS_URL": "redis://:hunter2@cache:6379/0"})
    redis_row, row = report.results  # in the order of DEPENDENCIES
    assert (row.ok, row.state, row.category, row.required) == (False, "down", "auth", True)
    assert row.error == "ProbableAuthenticationError: ACCESS_REFUSED"
    assert row.address == "broker:5672"
    assert (redis_row.category, redis_row.state) == ("connection", "down")
    assert report.status == "unhealthy"
    assert "hunter2" not in str(report)


def test_describe_error_is_one_redacted_line() -> None:
    import pika.exceptions

    error = RuntimeError("failed for postgresql://app:hunter2@db/app\nsecond line")
    assert describe_error(error) == "RuntimeError: failed for postgresql://app:***@db/app"
    wrapped = pika.exceptions.AMQPConnectionError(ConnectionRefusedError(111, "refused"))
    assert "refused" in describe_error(wrapped)
    assert len(describe_error(ValueError("x" * 500), limit=50)) == 50


def test_addresses_and_systems() -> None:
    assert display_address("postgresql+psycopg://u:p@db:5432/x") == "db:5432"
    assert display_address("sqlite:///orders.db") == "orders.db"
    assert database_system("mysql+pymysql://root@h/test") == "mysql"
    assert database_system("postgres://x@h/y") == "postgresql"
    assert database_system("sqlite://") == "sqlite"


# -- workload ---------------------------------------------------------------------------------


def test_order_flow_books_balance_failures_and_duplicates() -> None:
    import json
    import threading

    from instrumented_clients.rabbitmq.incoming import IncomingMessage

    published: list[dict[str, Any]] = []
    store_ok = [True, False, True]

    def store(order: dict[str, Any]) -> None:
        if not store_ok.pop(0):
            raise ConnectionError("db down")

    def cache(order: dict[str, Any]) -> None:
        raise ConnectionError("cache down")

    flow = OrderFlow(store, cache, published.append, rate=1.0, stop=threading.Event())
    for _ in range(3):
        flow.step_once()
    assert len(published) == 2
    envelope = {"type": "order.created", "data": published[0], "timestamp": "t"}
    message = IncomingMessage(body=json.dumps(envelope).encode(), message_id="m",
                              routing_key="order.created", exchange="x", redelivered=False,
                              delivery_count=0)
    assert order_id_of(message) == published[0]["id"]
    flow.on_consumed(message)
    flow.on_consumed(message)  # at-least-once: a second copy is a duplicate, not a consumption
    snapshot = flow.snapshot()
    assert snapshot == {"created": 3, "stored": 2, "store_failed": 1, "cached": 0,
                        "cache_skipped": 2, "published": 2, "consumed": 1, "duplicates": 1,
                        "outstanding": 1}


def test_order_flow_counts_an_event_the_publisher_refused_as_outstanding() -> None:
    import threading

    def refuse(order: dict[str, Any]) -> None:
        raise RuntimeError("publisher closed")

    flow = OrderFlow(lambda order: None, None, refuse, rate=1.0, stop=threading.Event())
    flow.step_once()
    assert flow.snapshot()["outstanding"] == 1
    assert flow.outstanding == 1


# -- chaos -------------------------------------------------------------------------------------


def test_chaos_schedule_gives_each_target_each_of_its_faults() -> None:
    schedule = default_schedule([("db", "sql"), ("cache", "redis"), ("events", "rabbitmq")],
                                interval=10.0)
    kinds = {(fault.target, fault.kind) for fault in schedule}
    assert {kind for target, kind in kinds if target == "db"} == {"cut", "latency", "refuse"}
    assert {kind for target, kind in kinds if target == "events"} == {
        "cut", "blackhole", "refuse", "latency"}
    assert all(fault.duration == (0.0 if fault.kind == "cut" else 6.0) for fault in schedule)
    assert schedule[0].target == "db"
    assert schedule[1].target == "cache"  # round-robin, not one target at a time


# -- view --------------------------------------------------------------------------------------


class _Client:
    def __init__(self, name: str, system: str, health: dict[str, Any]) -> None:
        self.name = name
        self._health = {"system": system, "client": name, **health}

    def health(self) -> dict[str, Any]:
        return self._health


def _view(clock: FakeClock) -> tuple[DemoView, Telemetry]:
    registry = CollectorRegistry()
    telemetry = Telemetry(registry=registry, tracing=False, logs=False)
    telemetry.prepare("rabbitmq", "events", ["publish"])
    ConnectionStateMachine("rabbitmq", "events", instrumentation=telemetry).transition(
        ConnectionState.FAILED)
    health = HealthRegistry()
    health.register(_Client("db", "sqlite", {"state": "connected", "connected": True,
                                             "circuit_breaker": "closed"}))
    health.register(_Client("events", "rabbitmq", {
        "state": "failed", "connected": False, "circuit_breaker": "open",
        "pending_events": 3, "buffer_capacity": 10, "reconnect_attempts": 4,
        "last_error": "AMQPConnectionError: refused"}), required=False)
    view = DemoView(health, registry, orders=lambda: {"created": 5, "consumed": 2},
                    chaos=lambda: "refuse on events (3s left)", url="http://127.0.0.1:1",
                    clock=clock.monotonic)
    return view, telemetry


def test_view_reads_health_and_metrics_and_computes_rates() -> None:
    clock = FakeClock()
    view, telemetry = _view(clock)
    recorder = telemetry.observe_operation("rabbitmq", "events", "publish")
    for _ in range(4):
        recorder.record("buffered", 0.0)
    buffer: EventBuffer[int] = EventBuffer(5, system="rabbitmq", client="events",
                                           instrumentation=telemetry, overflow="drop_newest")
    for item in range(7):
        buffer.put(item)
    telemetry.emit(ev.RetryScheduled("rabbitmq", "events", "publish", 1, 3, 0.1, "connection",
                                     ConnectionError(), "t"))
    first = view.frame()
    assert first.status == "degraded"
    events = next(row for row in first.rows if row.name == "events")
    assert (events.operations, events.retries, events.drops) == (4.0, 1.0, 2.0)
    assert (events.buffer, events.capacity, events.reconnect_failures) == (3, 10, 4)
    assert (events.state, events.breaker, events.required) == ("failed", "open", False)
    assert events.ops_per_second == 0.0
    for _ in range(10):
        recorder.record("buffered", 0.0)
    clock.advance(2.0)
    assert next(r for r in view.frame().rows if r.name == "events").ops_per_second == 5.0

    line = plain_line(first)
    assert line.startswith("status=degraded ")
    assert "events=failed(ops/s=0.0 retries=1 breaker=open buffer=3 drops=2)" in line
    assert "chaos: refuse on events" in line


def test_render_draws_every_client(capsys: pytest.CaptureFixture[str]) -> None:
    from rich.console import Console

    view, _ = _view(FakeClock())
    recent = RecentLog(size=2, width=40)
    logger = logging.getLogger("test_render_draws_every_client")
    logger.addHandler(recent)
    try:
        for number in range(3):
            logger.warning("line %d %s", number, "x" * 60)
    finally:
        logger.removeHandler(recent)
    assert len(recent.lines()) == 2
    assert all(len(line) == 40 for line in recent.lines())
    view.recent = recent
    console = Console(width=160, record=True, color_system=None)
    console.print(render(view.frame()))
    text = console.export_text()
    for expected in ("DEGRADED", "db", "events (optional)", "failed", "3/10", "open",
                     "refuse on events", "recent events", "http://127.0.0.1:1/health"):
        assert expected in text, text


def test_render_leaves_the_error_column_out_on_a_narrow_terminal() -> None:
    from rich.console import Console

    view, _ = _view(FakeClock())
    narrow = Console(width=100, record=True, color_system=None)
    narrow.print(render(view.frame(), narrow.width))
    text = narrow.export_text()
    header = next(line for line in text.splitlines() if "client" in line and "state" in line)
    assert "last error" not in header
    assert "3/10" in text
    assert "reconnects" in text


def test_ops_per_second_is_smoothed_over_seconds_not_one_redraw() -> None:
    clock = FakeClock()
    view, telemetry = _view(clock)
    recorder = telemetry.observe_operation("rabbitmq", "events", "publish")
    rates = []
    for frame in range(24):  # 6 s of redraws every 0.25 s; 2 operations every other redraw
        if frame % 2 == 0:
            recorder.record("success", 0.0)
            recorder.record("success", 0.0)
        rates.append(next(r for r in view.frame().rows if r.name == "events").ops_per_second)
        clock.advance(0.25)
    # 4 operations per second in truth; between two redraws it would read 8 or 0.
    assert all(3.5 <= rate <= 4.5 for rate in rates[12:]), rates
