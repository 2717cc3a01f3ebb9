"""An asyncio service with both async clients: a Starlette app with ``/metrics``, ``/health``
and ``/ready``.

Run it (any ASGI server)::

    REDIS_URL=redis://localhost:6379/0 DATABASE_URL=sqlite:///orders.db \\
        uvicorn examples.asgi_app:app

``POST /orders`` stores an order in the database (one guarded transaction) and counts it in
Redis (one guarded command); ``GET /orders/count`` reads both. The clients are made from the
environment when the app starts and closed when it stops.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from instrumented_clients import (
    AsyncResilientDatabase,
    AsyncResilientRedis,
    HealthRegistry,
    make_asgi_app,
)

ORDERS_COUNTER = "orders:count"


def build_app() -> Starlette:
    """The app; its clients are made at start-up and registered for ``/health``."""
    health = HealthRegistry(service="orders")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        redis = AsyncResilientRedis.from_env("cache")
        database = AsyncResilientDatabase.from_env("orders-db")
        await database.execute(
            "CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, item VARCHAR(100))")
        health.register(redis)
        health.register(database)
        app.state.redis, app.state.database = redis, database
        try:
            yield
        finally:
            await redis.aclose()
            await database.aclose()
            health.unregister(redis.name)
            health.unregister(database.name)

    return Starlette(
        routes=[Route("/orders", create_order, methods=["POST"]),
                Route("/orders/count", count_orders),
                Mount("/", make_asgi_app(REGISTRY, health))],  # /metrics, /health, /ready
        lifespan=lifespan,
    )


async def create_order(request: Request) -> JSONResponse:
    item = str((await request.json())["item"])

    async def insert(connection: AsyncConnection) -> None:
        await connection.execute(text("INSERT INTO orders (item) VALUES (:item)"), {"item": item})

    await request.app.state.database.transaction(insert)
    count = await request.app.state.redis.incr(ORDERS_COUNTER)
    return JSONResponse({"item": item, "counted": count}, status_code=201)


async def count_orders(request: Request) -> JSONResponse:
    stored = (await request.app.state.database.execute("SELECT count(*) FROM orders")).scalar()
    counted = await request.app.state.redis.get(ORDERS_COUNTER)
    return JSONResponse({"stored": stored, "counted": int(counted or 0)})


app = build_app()
__all__ = ["app", "build_app"]
