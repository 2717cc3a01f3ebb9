"""ResilientRedisCluster's construction: no I/O, so it is built while every node is down."""

from __future__ import annotations

import socket

import pytest

from instrumented_clients import ConfigError
from instrumented_clients.redis.cluster import ResilientRedisCluster
from instrumented_clients.testing import CapturedTelemetry


def test_built_without_io_reports_no_primaries_until_a_node_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("construction opened a connection")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    client = ResilientRedisCluster(startup_nodes=[("127.0.0.1", 1), ("127.0.0.1", 2)],
                                   name="cold", telemetry=CapturedTelemetry())
    assert client.slot_map_loaded is False
    assert client.health()["primaries"] == []
    assert client.address == "127.0.0.1:1"
    assert "cold" in repr(client)
    client.close()  # nothing to close yet: no I/O either


@pytest.mark.parametrize(("arguments", "named"), [
    ({"url": "redis://:pw@127.0.0.1:7000/2"}, "url"),
    ({"url": "http://127.0.0.1:7000"}, "url"),
    ({"startup_nodes": []}, "startup_nodes"),
    ({"startup_nodes": [("127.0.0.1", 70000)]}, "startup_nodes"),
])
def test_a_malformed_address_is_a_config_error_at_once(arguments: dict[str, object],
                                                       named: str) -> None:
    with pytest.raises(ConfigError) as raised:
        ResilientRedisCluster(**arguments)  # type: ignore[arg-type]
    assert named in str(raised.value)
    assert ":pw@" not in str(raised.value)


def test_options_that_do_not_apply_to_a_cluster_are_value_errors() -> None:
    with pytest.raises(ValueError, match="connection_pool"):
        ResilientRedisCluster(connection_pool=object())
    with pytest.raises(ValueError, match="exclusive"):
        ResilientRedisCluster("redis://127.0.0.1:7000", startup_nodes=[("127.0.0.1", 7000)])
    with pytest.raises(ValueError, match="name"):
        ResilientRedisCluster("redis://127.0.0.1:7000", name="")
