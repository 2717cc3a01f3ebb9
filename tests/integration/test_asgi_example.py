"""The ASGI example runs: both async clients behind Starlette, /metrics, /health and /ready."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import redis

from examples.asgi_app import ORDERS_COUNTER, build_app

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]
REDIS_URL = "redis://127.0.0.1:6379/12"


@pytest_asyncio.fixture
async def app_client(monkeypatch: pytest.MonkeyPatch,
                     tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    monkeypatch.setenv("REDIS_URL", REDIS_URL)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/orders.db")
    admin = redis.Redis.from_url(REDIS_URL)
    admin.delete(ORDERS_COUNTER)
    app = build_app()
    try:
        async with app.router.lifespan_context(app):  # start-up and shutdown, as a server runs
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://orders") as client:
                yield client
    finally:
        admin.delete(ORDERS_COUNTER)
        admin.close()


async def test_orders_metrics_health_and_ready(app_client: httpx.AsyncClient) -> None:
    for item in ("tea", "cake"):
        response = await app_client.post("/orders", json={"item": item})
        assert response.status_code == 201
    assert (await app_client.post("/orders", json={"item": "jam"})).json()["counted"] == 3
    assert (await app_client.get("/orders/count")).json() == {"stored": 3, "counted": 3}

    metrics = (await app_client.get("/metrics")).text
    assert 'resilient_client_operation_duration_seconds_count{client="cache",operation="incrby",' \
           'outcome="success",system="redis"} 3.0' in metrics
    assert 'client="orders-db",operation="transaction",outcome="success",system="sqlite"' \
           in metrics

    health = await app_client.get("/health")
    assert health.status_code == 200
    report = health.json()
    assert report["status"] == "healthy"
    assert report["dependencies"]["cache"]["state"] == "connected"
    assert report["dependencies"]["orders-db"]["state"] == "connected"
    assert (await app_client.get("/ready")).status_code == 200
