"""Message properties, URL validation, settings validation and the spool (no network)."""

from __future__ import annotations

from pathlib import Path

import pika
import pytest
from hypothesis import given
from hypothesis import strategies as st

from instrumented_clients.config import ConfigError
from instrumented_clients.rabbitmq.connection import parse_urls
from instrumented_clients.rabbitmq.message import (
    build_properties,
    new_message_id,
    properties_to_dict,
)
from instrumented_clients.rabbitmq.publisher import ResilientPublisher
from instrumented_clients.rabbitmq.spool import SpooledMessages, SpoolLockedError
from instrumented_clients.testing import CapturedTelemetry


def test_message_ids_are_generated_unique_and_uuid_sized() -> None:
    ids = {new_message_id() for _ in range(10000)}
    assert len(ids) == 10000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_build_properties_keeps_the_callers_fields_and_fills_the_rest() -> None:
    given_props = pika.BasicProperties(message_id="mine", headers={"a": 1}, delivery_mode=1)
    props = build_properties(given_props, {"b": 2}, persistent=True)
    assert (props.message_id, props.headers, props.delivery_mode) == ("mine", {"a": 1, "b": 2}, 1)
    assert given_props.headers == {"a": 1}  # the caller's object is not changed
    fresh = build_properties(None, None, persistent=True)
    assert fresh.delivery_mode == 2
    assert fresh.message_id
    assert build_properties({"content_type": "text/plain"}, None, False).delivery_mode == 1
    with pytest.raises(TypeError, match="unknown fields"):
        build_properties({"colour": "red"}, None, True)
    with pytest.raises(TypeError, match="properties must be"):
        build_properties("text", None, True)


@given(st.dictionaries(st.text(min_size=1, max_size=8), st.integers(), max_size=5),
       st.dictionaries(st.text(min_size=1, max_size=8), st.integers(), max_size=5))
def test_extra_headers_win_over_the_properties_headers(base: dict[str, int],
                                                       extra: dict[str, int]) -> None:
    props = build_properties(pika.BasicProperties(headers=dict(base)), extra, True)
    assert (props.headers or {}) == {**base, **extra}


def test_parse_urls_splits_and_validates_without_leaking_passwords() -> None:
    assert parse_urls("amqp://a:b@h1:5672/, amqps://a:b@h2/") == ("amqp://a:b@h1:5672/",
                                                                  "amqps://a:b@h2/")
    assert parse_urls(["amqp://h/"]) == ("amqp://h/",)
    for bad in ("", " , ", "redis://u:topsecret@h/", "amqp://u:topsecret@h:port/",
                "amqp://u:topsecret@:5672/", "amqp://u:topsecret@h:0/"):
        with pytest.raises(ValueError, match="url") as info:
            parse_urls(bad)
        assert "topsecret" not in str(info.value)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"max_in_flight": 0}, "max_in_flight"),
    ({"max_in_flight": True}, "max_in_flight"),
    ({"confirm_timeout": 0}, "confirm_timeout"),
    ({"overflow": "sometimes"}, "overflow must be one of"),
    ({"heartbeat": -1}, "heartbeat"),
    ({"heartbeat": 0.5}, "whole"),
    ({"stack_timeout": 0}, "stack_timeout"),
    ({"connect_timeout": "10"}, "connect_timeout"),
    ({"max_pending_events": 0}, "max_pending_events"),
])
def test_bad_arguments_fail_at_construction(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ResilientPublisher("amqp://guest:guest@127.0.0.1:1/", telemetry=CapturedTelemetry(),
                           **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("variable", "value"), [
    ("RABBITMQ_MAX_RETRIES", "ten"), ("RABBITMQ_MAX_RETRIES", "0"),
    ("RABBITMQ_RETRY_DELAY", "soon"), ("RABBITMQ_RETRY_MAX_DELAY", "-1"),
    ("RABBITMQ_MAX_PENDING_EVENTS", "lots"), ("RABBITMQ_HEARTBEAT", "x"),
    ("RABBITMQ_CONNECT_TIMEOUT", "y"), ("RABBITMQ_REQUIRED", "maybe"),
])
def test_from_env_names_the_variable_that_does_not_parse(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        ResilientPublisher.from_env(environ={variable: value})
    assert info.value.variable == variable
    assert value in str(info.value)


def test_from_env_rejects_a_malformed_url_without_the_password() -> None:
    with pytest.raises(ValueError, match="url") as info:
        ResilientPublisher.from_env(environ={"RABBITMQ_URL": "amqp://u:topsecret@:x/"})
    assert "topsecret" not in str(info.value)


def test_spool_round_trip_and_single_owner(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    spool = SpooledMessages(path)
    try:
        props = properties_to_dict(build_properties(None, {"h": "v"}, True))
        first = spool.add("ex", "rk", b"\x00body", props, True)
        second = spool.add("", "q", b"two", {"message_id": "m2"}, False)
        with pytest.raises(SpoolLockedError):
            SpooledMessages(path)
        spool.remove([first])
        records = spool.load()
        assert [(r.spool_id, r.exchange, r.routing_key, r.body, r.mandatory)
                for r in records] == [(second, "", "q", b"two", False)]
        assert records[0].properties == {"message_id": "m2"}
        assert spool.count() == 1
    finally:
        spool.close()
    reopened = SpooledMessages(path)  # the lock was released on close
    try:
        assert reopened.count() == 1
    finally:
        reopened.close()
