"""The ASGI example runs: both async clients behind Starlette, /metrics, /health and /ready."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from starlette.testclient import TestClient

from examples.asgi_app import ORDERS_COUNTER, build_app

pytestmark = pytest.mark.integration
REDIS_URL = "redis://127.0.0.1:6379/12"


@pytest.fixture
def app_client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[TestClient]:
    monkeypatch.setenv("REDIS_URL", REDIS_URL)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/orders.db")
    admin = redis.Redis.from_url(REDIS_URL)
    admin.delete(ORDERS_COUNTER)
    try:
        with TestClient(build_app()) as client:
            yield client
    finally:
        admin.delete(ORDERS_COUNTER)
        admin.close()


def test_orders_metrics_health_and_ready(app_client: TestClient) -> None:
    for item in ("tea", "cake"):
        response = app_client.post("/orders", json={"item": item})
        assert response.status_code == 201
    assert app_client.post("/orders", json={"item": "jam"}).json()["counted"] == 3
    assert app_client.get("/orders/count").json() == {"stored": 3, "counted": 3}

    metrics = app_client.get("/metrics").text
    assert 'resilient_client_operations_total{client="cache",operation="incrby",' \
           'outcome="success",system="redis"} 3.0' in metrics
    assert 'client="orders-db",operation="transaction",outcome="success",system="sqlite"' \
           in metrics

    health = app_client.get("/health")
    assert health.status_code == 200
    report = health.json()
    assert report["status"] == "healthy"
    assert report["dependencies"]["cache"]["state"] == "connected"
    assert report["dependencies"]["orders-db"]["state"] == "connected"
    assert app_client.get("/ready").status_code == 200
