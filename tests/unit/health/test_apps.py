"""The WSGI and ASGI apps, driven in-process (wsgiref's test environ; a hand-made ASGI call)."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from wsgiref.util import setup_testing_defaults

from prometheus_client import CollectorRegistry, Counter

from instrumented_clients.health import HealthRegistry, make_asgi_app, make_wsgi_app
from tests.unit.health.test_registry import FakeClient


def _registries(db_up: bool = True, events_up: bool = True) -> tuple[CollectorRegistry,
                                                                      HealthRegistry]:
    registry = CollectorRegistry()
    counter = Counter("demo_requests", "Requests.", registry=registry)
    counter.inc(3, exemplar={"trace_id": "abc123"})
    health = HealthRegistry()
    health.register(FakeClient("db", connected=db_up))
    health.register(FakeClient("events", connected=events_up, pending_events=4), required=False)
    return registry, health


def call_wsgi(app: Any, path: str, accept: str = "",
              method: str = "GET") -> tuple[str, dict[str, str], bytes]:
    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": method}
    if accept:
        environ["HTTP_ACCEPT"] = accept
    setup_testing_defaults(environ)
    captured: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        captured["status"] = status
        captured["headers"] = dict(headers)

    body = b"".join(app(environ, start_response))
    return captured["status"], captured["headers"], body


def call_asgi(app: Any, path: str, accept: str = "", method: str = "GET",
              root_path: str = "") -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict[str, Any]] = []
    headers = [(b"accept", accept.encode())] if accept else []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "root_path": root_path,
             "headers": headers, "query_string": b""}
    asyncio.run(app(scope, receive, send))
    start, body = sent[0], sent[1]
    assert start["type"] == "http.response.start"
    return start["status"], dict(start["headers"]), body["body"]


def test_wsgi_health_is_200_even_when_unhealthy() -> None:
    app = make_wsgi_app(*_registries(db_up=False))
    status, headers, body = call_wsgi(app, "/health")
    assert status == "200 OK"
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["status"] == "unhealthy"


def test_wsgi_ready_codes() -> None:
    assert call_wsgi(make_wsgi_app(*_registries()), "/ready")[0] == "200 OK"
    degraded = call_wsgi(make_wsgi_app(*_registries(events_up=False)), "/ready")
    assert degraded[0] == "200 OK"
    assert json.loads(degraded[2])["status"] == "degraded"
    assert call_wsgi(make_wsgi_app(*_registries(db_up=False)), "/ready")[0] == (
        "503 Service Unavailable"
    )


def test_wsgi_metrics_text_and_openmetrics() -> None:
    app = make_wsgi_app(*_registries())
    status, headers, body = call_wsgi(app, "/metrics", accept="text/plain")
    assert status == "200 OK"
    assert headers["Content-Type"].startswith("text/plain")
    assert b"demo_requests_total 3.0" in body
    assert b"trace_id" not in body  # the text format has no exemplars
    status, headers, body = call_wsgi(
        app, "/metrics", accept="application/openmetrics-text; version=1.0.0"
    )
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert b'# {trace_id="abc123"} 3.0' in body
    assert body.endswith(b"# EOF\n")


def test_wsgi_mounted_under_a_prefix_and_unknown_paths() -> None:
    app = make_wsgi_app(*_registries())
    assert call_wsgi(app, "/ops/health")[0] == "200 OK"
    assert call_wsgi(app, "/nothing")[0] == "404 Not Found"
    assert call_wsgi(app, "/health", method="POST")[0] == "405 Method Not Allowed"
    head = call_wsgi(app, "/health", method="HEAD")
    assert head[0] == "200 OK"
    assert head[2] == b""


def test_asgi_health_ready_metrics() -> None:
    app = make_asgi_app(*_registries(db_up=False))
    status, headers, body = call_asgi(app, "/health")
    assert status == 200
    assert headers[b"content-type"] == b"application/json"
    assert json.loads(body)["status"] == "unhealthy"
    assert call_asgi(app, "/ready")[0] == 503
    status, headers, body = call_asgi(app, "/metrics",
                                      accept="application/openmetrics-text; version=1.0.0")
    assert status == 200
    assert b'# {trace_id="abc123"}' in body
    assert call_asgi(make_asgi_app(*_registries()), "/ready")[0] == 200


def test_asgi_mounted_with_root_path_and_lifespan() -> None:
    app = make_asgi_app(*_registries())
    assert call_asgi(app, "/ops/ready", root_path="/ops")[0] == 200
    assert call_asgi(app, "/ops/unknown", root_path="/ops")[0] == 404
    assert call_asgi(app, "/metrics", method="DELETE")[0] == 405

    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app({"type": "lifespan"}, receive, send))
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
