"""``/metrics``, ``/health`` and ``/ready`` as a WSGI app, an ASGI app and a background server.

- ``/metrics``: the Prometheus text format, or OpenMetrics (with exemplars) when the scraper's
  ``Accept`` asks for ``application/openmetrics-text`` — prometheus_client's ``choose_encoder``.
- ``/health``: liveness. Always 200 with :meth:`HealthRegistry.check`'s JSON: a process that
  answers is alive, even when its broker is not.
- ``/ready``: readiness. 503 when a required dependency is down, else 200; same JSON body.

Routing looks at the last path segment only, so the apps work unchanged when mounted under a
prefix (Flask's ``DispatcherMiddleware``, FastAPI's ``app.mount``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from instrumented_clients.health.multiprocess import metrics_registry
from instrumented_clients.health.registry import HealthRegistry, get_default_health_registry

__all__ = ["MetricsServer", "make_asgi_app", "make_wsgi_app", "render",
           "serve_metrics_and_health"]

_JSON = "application/json"
_TEXT = "text/plain; charset=utf-8"

Response = tuple[int, str, bytes]
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


def _health_body(health: HealthRegistry) -> tuple[dict[str, Any], bytes]:
    report = health.check()
    return report, json.dumps(report, indent=2, sort_keys=False).encode()


def render(
    path: str,
    accept: str,
    *,
    registry: CollectorRegistry | None,
    health: HealthRegistry | None,
) -> Response:
    """The (status, content type, body) of one request; shared by the WSGI and ASGI apps."""
    route = path.rstrip("/").rsplit("/", 1)[-1]
    if route == "metrics":
        encoder, content_type = choose_encoder(accept)
        return 200, content_type, encoder(metrics_registry(registry))
    if route in ("health", "ready"):
        report, body = _health_body(health or get_default_health_registry())
        status = 503 if route == "ready" and report["status"] == "unhealthy" else 200
        return status, _JSON, body
    if route == "":
        return 200, _TEXT, b"/metrics /health /ready\n"
    return 404, _TEXT, b"not found: try /metrics, /health or /ready\n"


def make_wsgi_app(
    registry: CollectorRegistry | None = None, health: HealthRegistry | None = None
) -> Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]:
    """A WSGI app serving ``/metrics``, ``/health`` and ``/ready``.

    Args:
        registry: the Prometheus registry (default: the global one, or every worker's files in
            multiprocess mode).
        health: the :class:`HealthRegistry` (default: the process-wide one).

    Mount it in Flask with ``werkzeug.middleware.dispatcher.DispatcherMiddleware``.
    """

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            status, content_type, body = 405, _TEXT, b"method not allowed\n"
        else:
            status, content_type, body = render(
                environ.get("PATH_INFO", "/"), environ.get("HTTP_ACCEPT", ""),
                registry=registry, health=health,
            )
        start_response(f"{status} {_REASONS.get(status, '')}".rstrip(), [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ])
        return [b""] if method == "HEAD" else [body]

    return app


AsgiReceive = Callable[[], Any]
AsgiSend = Callable[[dict[str, Any]], Any]


def make_asgi_app(
    registry: CollectorRegistry | None = None, health: HealthRegistry | None = None
) -> Callable[[dict[str, Any], AsgiReceive, AsgiSend], Any]:
    """An ASGI app serving ``/metrics``, ``/health`` and ``/ready`` (FastAPI: ``app.mount``)."""

    async def app(scope: dict[str, Any], receive: AsgiReceive, send: AsgiSend) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            status, content_type, body = 405, _TEXT, b"method not allowed\n"
        else:
            accept = ""
            for name, value in scope.get("headers", ()):
                if name.lower() == b"accept":
                    accept = value.decode("latin-1")
            status, content_type, body = render(
                scope.get("path", "/"), accept, registry=registry, health=health
            )
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        })
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    return app


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow scraper must not keep the process alive at exit


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would flood stderr; access logs are the proxy's job."""


class MetricsServer:
    """A running ``serve_metrics_and_health`` server: its address and a way to stop it."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        address = server.server_address
        self.host: str = str(address[0])
        self.port: int = int(address[1])

    @property
    def url(self) -> str:
        """``http://host:port`` (loopback when bound to every interface)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def shutdown(self) -> None:
        """Stop serving, close the socket and join the thread (idempotent)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"MetricsServer({self.url})"


def serve_metrics_and_health(
    port: int,
    registry: CollectorRegistry | None = None,
    health: HealthRegistry | None = None,
    host: str = "0.0.0.0",
) -> MetricsServer:
    """Serve ``/metrics``, ``/health`` and ``/ready`` from a background thread.

    Args:
        port: TCP port (0 picks a free one: read it from the returned ``.port``).
        registry: Prometheus registry (default: global, or multiprocess files when enabled).
        health: health registry (default: the process-wide one).
        host: interface to bind.

    Returns:
        A :class:`MetricsServer`; call ``.shutdown()`` to stop it.

    Raises:
        OSError: the port is taken (raised here, not in the thread).
    """
    server = make_server(host, port, make_wsgi_app(registry, health),
                         server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              name="metrics-and-health-http", daemon=True)
    thread.start()
    return MetricsServer(server, thread)
