"""Shared pieces of the Redis integration tests."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from instrumented_clients.testing import CapturedTelemetry, FaultProxy

HOST = "127.0.0.1"
PORT = 6379
URL = f"redis://{HOST}:{PORT}/0"


def metric(telemetry: CapturedTelemetry, name: str, client: str, **labels: str) -> float:
    return telemetry.value(name, system="redis", client=client, **labels) or 0.0


def outcome(telemetry: CapturedTelemetry, client: str, operation: str, result: str) -> float:
    return metric(telemetry, "operation_duration_seconds_count",
                  client, operation=operation, outcome=result)


def retries(telemetry: CapturedTelemetry, client: str, operation: str) -> float:
    total = 0.0
    for error_type in ("connection", "timeout", "server_busy", "auth", "unknown"):
        total += metric(telemetry, "retries_total", client, operation=operation,
                        error_type=error_type)
    return total


def free_port() -> int:
    """A loopback port nothing listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Background:
    """Runs ``fn`` in a thread and keeps its result or exception."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.result = fn()
        except BaseException as error:
            self.error = error

    def join(self, timeout: float = 20.0) -> Background:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "background call did not finish"
        return self


# -- fixtures (imported by the test modules; no shared conftest.py to merge) ---------------------


@pytest.fixture
def admin() -> Iterator[redis.Redis]:
    """A plain redis-py client for setting up and checking, outside the code under test."""
    client = redis.Redis(host=HOST, port=PORT, socket_timeout=10)
    yield client
    client.close()


@pytest.fixture
def prefix(admin: redis.Redis) -> Iterator[str]:
    """A unique key prefix; every key under it is deleted afterwards."""
    value = f"ic:test:{uuid.uuid4().hex[:12]}"
    yield value
    keys = list(admin.scan_iter(f"{value}*"))
    if keys:
        admin.delete(*keys)


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    with FaultProxy(HOST, PORT) as fault_proxy:
        yield fault_proxy
