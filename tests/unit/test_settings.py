"""The settings table: one reader per variable, one default, one error shape."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from instrumented_clients import settings
from instrumented_clients.config import ConfigError
from instrumented_clients.demo.settings import Settings
from instrumented_clients.settings import DEMO

NOT_A_VALUE = {"integer": "lots", "number": "soon", "boolean": "perhaps"}


@pytest.mark.parametrize("entry", settings.SETTINGS, ids=lambda entry: entry.env)
def test_an_unset_or_blank_variable_reads_as_the_default(entry: settings.Setting) -> None:
    assert entry.read({}) == entry.default  # type: ignore[attr-defined]
    assert entry.read({entry.env: "  "}) == entry.default  # type: ignore[attr-defined]


@pytest.mark.parametrize("entry", [entry for entry in settings.SETTINGS
                                   if entry.type_name in NOT_A_VALUE], ids=lambda e: e.env)
def test_a_value_that_does_not_parse_names_the_variable_value_and_expectation(
    entry: settings.Setting,
) -> None:
    value = NOT_A_VALUE[entry.type_name]
    with pytest.raises(ConfigError) as caught:
        entry.read({entry.env: value})  # type: ignore[attr-defined]
    assert caught.value.variable == entry.env
    assert f"{entry.env}={value!r} is invalid: expected " in str(caught.value)


NUMERIC = [entry for entry in settings.SETTINGS
           if isinstance(entry, (settings.IntSetting, settings.FloatSetting))]


@given(entry=st.sampled_from(NUMERIC), offset=st.integers(min_value=0, max_value=10**6))
def test_a_number_in_range_reads_back_and_one_below_the_minimum_is_refused(
    entry: settings.IntSetting | settings.FloatSetting, offset: int,
) -> None:
    minimum = entry.minimum if entry.minimum is not None else 0
    maximum = getattr(entry, "maximum", None)
    value = minimum + (offset if maximum is None else offset % (maximum - minimum + 1))
    assert entry.read({entry.env: f" {value} "}) == value
    with pytest.raises(ConfigError) as caught:
        entry.read({entry.env: str(minimum - 1 - offset)})
    assert caught.value.variable == entry.env


def test_heartbeat_is_one_type_for_the_clients_and_the_demo() -> None:
    from instrumented_clients.rabbitmq.settings import connection_settings_from_env

    environ = {"RABBITMQ_HEARTBEAT": "2.5"}
    assert connection_settings_from_env(environ)["heartbeat"] == 2.5
    assert Settings.from_env(environ).rabbitmq_heartbeat == 2.5


def test_the_demo_reads_every_value_from_the_table() -> None:
    environ = {"RABBITMQ_MAX_RETRIES": "7", "DB_RETRY_BASE_DELAY": "0.25",
               "REDIS_RETRY_MAX_DELAY": "3", "RABBITMQ_PREFETCH": "9", "METRICS_PORT": "9100"}
    demo = Settings.from_env(environ)
    read_by_the_demo = [entry for entry in settings.SETTINGS if DEMO in entry.used_by]
    assert {entry.env for entry in settings.SETTINGS} - {e.env for e in read_by_the_demo} == {
        "PROMETHEUS_MULTIPROC_DIR"}
    for entry in read_by_the_demo:
        assert getattr(demo, entry.env.lower()) == entry.read(environ), entry.env


def test_the_clients_policies_follow_the_table() -> None:
    from instrumented_clients.db._rules import db_policy_from_env
    from instrumented_clients.rabbitmq.settings import reconnect_policy_from_env
    from instrumented_clients.redis.settings import policy_from_env

    assert list(db_policy_from_env({}).delays()) == [1.0, 2.0, 4.0]
    assert list(policy_from_env({}).delays()) == [0.5, 1.0, 2.0]
    reconnect = reconnect_policy_from_env({"RABBITMQ_RETRY_MAX_DELAY": "4"})
    assert (reconnect.max_attempts, reconnect.initial_delay, reconnect.max_delay) == (10, 1.0, 4.0)


def test_a_bad_broker_url_is_a_config_error_naming_the_variable_without_the_password() -> None:
    from instrumented_clients.rabbitmq.settings import urls_from_env

    with pytest.raises(ConfigError) as caught:
        urls_from_env({"RABBITMQ_URL": "amqp://u:topsecret@:x/"})
    assert caught.value.variable == "RABBITMQ_URL"
    assert "topsecret" not in str(caught.value)
    assert urls_from_env({"RABBITMQ_URL": "amqp://a:b@h1/, amqp://a:b@h2/"}) == (
        "amqp://a:b@h1/", "amqp://a:b@h2/")


def test_lookup_by_name() -> None:
    assert settings.setting("REDIS_URL") is settings.REDIS_URL
    with pytest.raises(KeyError, match="NOPE"):
        settings.setting("NOPE")


def test_the_settings_command_prints_the_table_and_the_values_without_passwords(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    from instrumented_clients.cli import main

    assert main(["settings"]) == 0
    assert capsys.readouterr().out == settings.markdown_table()
    monkeypatch.setenv("RABBITMQ_URL", "amqp://guest:hunter2@broker:5672/")
    monkeypatch.setenv("RABBITMQ_HEARTBEAT", "5")
    assert main(["settings", "--values"]) == 0
    lines = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()}
    assert lines["RABBITMQ_URL"][0] == "amqp://guest:***@broker:5672/"
    assert lines["RABBITMQ_HEARTBEAT"] == ["5", "s", "60", "s"]
    assert lines["RABBITMQ_REQUIRED"] == ["false", "false"]
    monkeypatch.setenv("RABBITMQ_PREFETCH", "lots")
    assert main(["settings", "--values"]) == 2
    assert "RABBITMQ_PREFETCH='lots' is invalid" in capsys.readouterr().err
