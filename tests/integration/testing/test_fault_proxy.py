"""FaultProxy against the real Redis on 127.0.0.1:6379, driven with raw redis-py connections."""

from __future__ import annotations

import socket
import statistics
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from instrumented_clients.testing import FaultProxy, ProxyMode, wait_until

pytestmark = pytest.mark.integration

REDIS = ("127.0.0.1", 6379)


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    with FaultProxy(*REDIS) as running:
        yield running


@pytest.fixture
def key() -> Iterator[str]:
    name = f"fault-proxy-test:{uuid.uuid4().hex}"
    yield name
    direct = redis.Redis(*REDIS)
    try:
        direct.delete(name)
    finally:
        direct.close()


def connect(proxy: FaultProxy, socket_timeout: float = 5.0) -> redis.Connection:
    """A raw connection with redis-py's own retries off, so every fault shows."""
    return redis.Connection(host=proxy.host, port=proxy.port, socket_timeout=socket_timeout,
                            socket_connect_timeout=5, retry=Retry(NoBackoff(), 0))


def command(connection: redis.Connection, *args: object) -> object:
    connection.send_command(*args)
    return connection.read_response()


def leave_lossy_mode(proxy: FaultProxy, held: socket.socket) -> None:
    """Switch back to pass-through: the held socket is reset (or closed), never resumed with a
    late reply."""
    proxy.pass_through()
    held.settimeout(5)
    try:
        data = held.recv(64)
    except ConnectionResetError:
        data = b""
    assert data == b""


def test_pass_through(proxy: FaultProxy, key: str) -> None:
    connection = connect(proxy)
    try:
        assert command(connection, "SET", key, "through the proxy") == b"OK"
        assert command(connection, "GET", key) == b"through the proxy"
    finally:
        connection.disconnect()
    assert proxy.mode is ProxyMode.PASS
    assert proxy.accepted == 1
    assert proxy.bytes_forwarded > 0
    direct = redis.Redis(*REDIS)
    try:
        assert direct.get(key) == b"through the proxy"  # it really reached the server
    finally:
        direct.close()


def test_cut_fails_the_next_command_and_the_one_after_reconnects(
    proxy: FaultProxy, key: str
) -> None:
    connection = connect(proxy)
    try:
        assert command(connection, "SET", key, "1") == b"OK"
        assert proxy.cut() == 1
        with pytest.raises(redis.ConnectionError):
            command(connection, "INCR", key)
        assert command(connection, "INCR", key) == 2  # reconnected through the proxy
    finally:
        connection.disconnect()
    assert proxy.accepted == 2


def test_refuse_rejects_new_connections(proxy: FaultProxy) -> None:
    connection = connect(proxy)
    try:
        assert command(connection, "PING") == b"PONG"
        proxy.refuse()
        assert proxy.connections == 0  # open connections were cut as well
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((proxy.host, proxy.port), timeout=5).close()
        with pytest.raises(redis.ConnectionError):
            command(connection, "PING")  # its socket was reset
        with pytest.raises(redis.ConnectionError, match="refused"):
            command(connection, "PING")  # a fresh connect now
        proxy.pass_through()
        assert command(connection, "PING") == b"PONG"
    finally:
        connection.disconnect()


def test_blackhole_makes_a_command_time_out(proxy: FaultProxy) -> None:
    connection = connect(proxy, socket_timeout=0.5)
    try:
        assert command(connection, "PING") == b"PONG"
        proxy.blackhole()
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            command(connection, "PING")
        assert time.monotonic() - started >= 0.45
        # New connections are accepted but get nothing back either.
        fresh = connect(proxy, socket_timeout=0.5)
        try:
            with pytest.raises(redis.TimeoutError):
                command(fresh, "PING")
        finally:
            fresh.disconnect()
    finally:
        connection.disconnect()
    proxy.pass_through()
    recovered = connect(proxy)
    try:
        assert command(recovered, "PING") == b"PONG"
    finally:
        recovered.disconnect()


def test_leaving_blackhole_resets_the_held_sockets(proxy: FaultProxy, key: str) -> None:
    with socket.create_connection((proxy.host, proxy.port), timeout=5) as held:
        held.sendall(b"PING\r\n")
        assert held.recv(64) == b"+PONG\r\n"
        proxy.blackhole()
        # Sent into the blackhole: it must never reach Redis, not even after the switch back.
        held.sendall(f"SET {key} leaked\r\n".encode())
        held.settimeout(0.3)
        with pytest.raises(TimeoutError):
            held.recv(64)
        leave_lossy_mode(proxy, held)
    wait_until(lambda: proxy.connections == 0, timeout=10)
    direct = redis.Redis(*REDIS)
    try:
        assert direct.get(key) is None
    finally:
        direct.close()


def test_drop_replies_lets_requests_through_but_no_answer_back(
    proxy: FaultProxy, key: str
) -> None:
    direct = redis.Redis(*REDIS)
    try:
        with socket.create_connection((proxy.host, proxy.port), timeout=5) as held:
            held.sendall(b"PING\r\n")
            assert held.recv(64) == b"+PONG\r\n"
            proxy.drop_replies()
            assert proxy.mode is ProxyMode.DROP_REPLIES
            held.sendall(f"SET {key} applied\r\n".encode())
            # The server acted on the request...
            wait_until(lambda: direct.get(key) == b"applied", timeout=5)
            # ...and its reply was read by the proxy and thrown away, never delivered.
            wait_until(lambda: proxy.bytes_dropped >= len(b"+OK\r\n"), timeout=5)
            held.settimeout(0.3)
            with pytest.raises(TimeoutError):
                held.recv(64)
            leave_lossy_mode(proxy, held)
        wait_until(lambda: proxy.connections == 0, timeout=10)
        fresh = connect(proxy)
        try:
            assert command(fresh, "GET", key) == b"applied"
        finally:
            fresh.disconnect()
    finally:
        direct.close()


def test_latency_adds_measurable_delay(proxy: FaultProxy) -> None:
    connection = connect(proxy)

    def round_trip() -> float:
        started = time.monotonic()
        assert command(connection, "PING") == b"PONG"
        return time.monotonic() - started

    try:
        baseline = statistics.median(round_trip() for _ in range(5))
        proxy.add_latency(0.1)
        delayed = statistics.median(round_trip() for _ in range(3))
        proxy.pass_through()
        after = statistics.median(round_trip() for _ in range(5))
    finally:
        connection.disconnect()
    assert delayed >= 0.1  # at least one delayed chunk per round trip
    assert delayed - baseline >= 0.09
    assert after < delayed


def test_add_latency_rejects_negative_values(proxy: FaultProxy) -> None:
    with pytest.raises(ValueError, match="latency"):
        proxy.add_latency(-1)


def test_url_points_at_the_proxy(proxy: FaultProxy) -> None:
    assert proxy.url("redis://user:pw@cache.internal:6379/2?x=1") == (
        f"redis://user:pw@{proxy.host}:{proxy.port}/2?x=1"
    )
    assert proxy.url("redis://cache:6379/0") == f"redis://{proxy.host}:{proxy.port}/0"
