"""Redaction of credentials, and environment parsing errors that name the variable."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from instrumented_clients.config import ConfigError, env_bool, env_float, env_int, env_str
from instrumented_clients.redaction import redact_text, redact_url, safe_address

SECRET = "Zx9secret"


@pytest.mark.parametrize(
    "text",
    [
        f"amqp://guest:{SECRET}@broker:5672/vhost",
        f"redis://:{SECRET}@cache:6379/0",
        f"failed to connect to 'postgresql://app:{SECRET}@db:5432/test': refused",
        f"amqp://guest:{SECRET}/with/slash@broker:5672/",
        f"redis://user:{SECRET}@with-at@cache:6379",
        f"host=db user=app password={SECRET} dbname=test",
        f"password='{SECRET} with space' host=db",
        f'{{"user": "app", "password": "{SECRET}"}}',
        f"PWD={SECRET};UID=app",
        f"passwd: {SECRET}",
    ],
)
def test_redact_text_removes_passwords(text: str) -> None:
    redacted = redact_text(text)
    assert SECRET not in redacted
    assert "***" in redacted


def test_redact_text_keeps_the_rest() -> None:
    assert redact_text("amqp://guest:pw@broker:5672/vhost down") == (
        "amqp://guest:***@broker:5672/vhost down"
    )
    assert redact_text("nothing secret at redis://cache:6379") == (
        "nothing secret at redis://cache:6379"
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"amqp://guest:{SECRET}@broker:5672/vh?heartbeat=30", "amqp://guest:***@broker:5672/vh"),
        (f"redis://:{SECRET}@cache:6379/0", "redis://:***@cache:6379/0"),
        ("redis://cache:6379/0?password=x", "redis://cache:6379/0"),
        ("amqp://guest@broker/", "amqp://guest@broker/"),
        (f"guest:{SECRET}@broker:5672", "guest:***@broker:5672"),
        (f"postgresql://a:{SECRET}@[::1]:5432/db", "postgresql://a:***@[::1]:5432/db"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"amqp://guest:{SECRET}@broker:5672/vh", "broker:5672"),
        ("redis://cache", "cache"),
        ("localhost:6379", "localhost:6379"),
        (f"postgresql://a:{SECRET}@[::1]:5432/db", "[::1]:5432"),
        ("redis://cache:notaport", "<unparseable>"),
    ],
)
def test_safe_address(url: str, expected: str) -> None:
    assert safe_address(url) == expected


# -- config --------------------------------------------------------------------------------


def test_defaults_when_unset_or_blank() -> None:
    env = {"BLANK": "  "}
    assert env_int("MISSING", 10, environ=env) == 10
    assert env_int("BLANK", 10, environ=env) == 10
    assert env_float("MISSING", 1.5, environ=env) == 1.5
    assert env_bool("MISSING", True, environ=env) is True
    assert env_str("BLANK", "dflt", environ=env) == "dflt"


def test_parsed_values() -> None:
    env = {"N": " 42 ", "F": "0.25", "B1": "Yes", "B0": "off", "S": " amqp://x "}
    assert env_int("N", 0, environ=env) == 42
    assert env_float("F", 0, environ=env) == 0.25
    assert env_bool("B1", False, environ=env) is True
    assert env_bool("B0", True, environ=env) is False
    assert env_str("S", "", environ=env) == "amqp://x"


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IC_TEST_RETRIES", "7")
    assert env_int("IC_TEST_RETRIES", 1) == 7


@pytest.mark.parametrize(
    ("parse", "variable", "value", "expected"),
    [
        (lambda env: env_int("RABBITMQ_MAX_RETRIES", 10, minimum=0, environ=env),
         "RABBITMQ_MAX_RETRIES", "ten", "an integer >= 0"),
        (lambda env: env_int("RABBITMQ_MAX_RETRIES", 10, minimum=0, environ=env),
         "RABBITMQ_MAX_RETRIES", "-1", "an integer >= 0"),
        (lambda env: env_int("RABBITMQ_MAX_PENDING_EVENTS", 10, environ=env),
         "RABBITMQ_MAX_PENDING_EVENTS", "3.5", "an integer"),
        (lambda env: env_float("RABBITMQ_RETRY_DELAY", 1.0, minimum=0, environ=env),
         "RABBITMQ_RETRY_DELAY", "soon", "a number of seconds >= 0"),
        (lambda env: env_float("RABBITMQ_RETRY_DELAY", 1.0, minimum=0, environ=env),
         "RABBITMQ_RETRY_DELAY", "-2", "a number of seconds >= 0"),
        (lambda env: env_float("RABBITMQ_HEARTBEAT", 60.0, environ=env),
         "RABBITMQ_HEARTBEAT", "nan", "a number of seconds"),
        (lambda env: env_bool("RABBITMQ_REQUIRED", False, environ=env),
         "RABBITMQ_REQUIRED", "maybe", "one of true/false"),
    ],
)
def test_errors_name_variable_value_and_expectation(
    parse: Callable[[dict[str, str]], object], variable: str, value: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse({variable: value})
    error = info.value
    assert isinstance(error, ValueError)
    assert (error.variable, error.value) == (variable, value)
    assert error.expected.startswith(expected)
    assert str(error) == f"{variable}={value!r} is invalid: expected {error.expected}"


def test_config_error_message_never_shows_a_password() -> None:
    error = ConfigError("RABBITMQ_URL", f"amqp://guest:{SECRET}@broker:notaport/", "a URL")
    assert SECRET not in str(error)
    assert "amqp://guest:***@broker:notaport/" in str(error)
    assert "RABBITMQ_URL" in str(error)
