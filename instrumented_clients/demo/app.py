"""``instrumented-clients demo``: assemble the library's clients, the HTTP endpoints, the
workload, the view and (with ``--chaos``) the fault schedule; run until ``--duration``, Ctrl-C or
SIGTERM; then stop cleanly — producing stops, ``publisher.close()`` flushes the buffer, the
consumer catches up and stops, a summary is printed — and exit 0.

The HTTP server starts before any connection is tried, and no client constructor waits for the
network (the database's start-up connect runs in a thread of its own), so ``/health`` answers as
soon as the modules are imported, even when every dependency is unreachable.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

from instrumented_clients.demo.chaos import Chaos, default_schedule, proxy_for
from instrumented_clients.demo.clients import DemoClients, build_clients
from instrumented_clients.demo.settings import Settings
from instrumented_clients.demo.view import DemoView, RecentLog, metric_total, plain_line, render
from instrumented_clients.demo.workload import OrderFlow
from instrumented_clients.health import HealthRegistry, metrics_registry, serve_metrics_and_health
from instrumented_clients.redaction import describe_error
from instrumented_clients.telemetry import Telemetry, get_default_telemetry
from instrumented_clients.testing import FaultProxy

__all__ = ["run_demo"]

_log = logging.getLogger("instrumented_clients.demo")
_PLAIN_INTERVAL = 2.0
_EXIT_USAGE = 2
_EXIT_DEPENDENCY_DOWN = 1
_UNREACHABLE_GRACE = 3.0


def _configure_logging(recent: RecentLog | None) -> None:
    """Plain mode: log lines on stderr. Live view: the last lines inside the view."""
    root = logging.getLogger()
    root.handlers.clear()
    if recent is not None:
        handler: logging.Handler = recent
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: "
                                               "%(message)s"))
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    # Our telemetry reports every reconnect attempt, redacted and rate-limited; pika's own
    # connection-failure logs would repeat each one several times.
    logging.getLogger("pika").setLevel(logging.CRITICAL)


class _Stopper:
    """First SIGINT/SIGTERM: stop cleanly. Second SIGINT: give up waiting (KeyboardInterrupt)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = "duration reached"

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.reason = signal.Signals(signum).name
        self.event.set()


def _route_through_proxies(settings: Settings, proxies: dict[str, FaultProxy]) -> dict[str, Any]:
    urls: dict[str, Any] = {"database": settings.database_url, "redis": settings.redis_url,
                            "rabbitmq": settings.rabbitmq_urls}
    for key in ("database", "redis"):
        proxy = proxy_for(urls[key])
        if proxy is not None:
            proxies[key] = proxy
            urls[key] = proxy.url(urls[key])
    rabbit_proxy = proxy_for(urls["rabbitmq"][0])
    if rabbit_proxy is not None:
        proxies["rabbitmq"] = rabbit_proxy
        urls["rabbitmq"] = [rabbit_proxy.url(urls["rabbitmq"][0])]
    return urls


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo with the parsed ``demo`` arguments; returns the exit status."""
    settings = Settings.from_env()  # a bad variable fails here, before any I/O
    settings.validate_urls()
    started = time.monotonic()
    # From here on SIGTERM/Ctrl-C mean a clean stop, even during the start-up.
    stopper = _Stopper()
    stopper.install()
    console = None
    recent = None
    # Under docker or with output piped, a live view would only fill the log with redraws.
    if not args.no_tui and sys.stdout.isatty():
        try:
            from rich.console import Console
        except ImportError:
            sys.stderr.write("instrumented-clients demo: rich is not installed (pip install "
                             "'instrumented-clients[cli]'); showing plain log lines\n")
        else:
            console = Console()
            recent = RecentLog()
    _configure_logging(recent)
    telemetry = get_default_telemetry()
    health = HealthRegistry(service="instrumented-clients demo")
    # --port wins over METRICS_PORT (what docker-compose.yml sets), which wins over 8000.
    port = settings.metrics_port if args.port is None else args.port
    try:
        server = serve_metrics_and_health(port, health=health, host=args.host)
    except OSError as error:
        source = "METRICS_PORT=" if args.port is None else "--port "
        sys.stderr.write(f"instrumented-clients demo: error: {source}{port}: "
                         f"{error.strerror or error}\n")
        return _EXIT_USAGE
    print(f"serving {server.url}/metrics {server.url}/health {server.url}/ready", flush=True)

    proxies: dict[str, FaultProxy] = {}
    if args.chaos:
        urls = _route_through_proxies(settings, proxies)
    else:
        urls = {"database": settings.database_url, "redis": settings.redis_url,
                "rabbitmq": settings.rabbitmq_urls}
    # Under chaos a blackholed broker must be noticed in seconds, not after a 60 s heartbeat.
    heartbeat = min(settings.rabbitmq_heartbeat or 5, 5) if args.chaos else None
    producing = threading.Event()  # set: stop producing, and cut every retry wait short
    flow: OrderFlow | None = None

    def on_consumed(message: Any) -> None:
        assert flow is not None  # the consumer is started after the flow exists
        flow.on_consumed(message)

    from instrumented_clients.rabbitmq.errors import BrokerUnavailableError

    try:
        clients = build_clients(settings, urls, prefix=args.prefix, telemetry=telemetry,
                                handler=on_consumed, breaker_cooldown=args.breaker_cooldown,
                                stopping=producing, heartbeat=heartbeat)
    except BaseException as error:
        _stop_proxies(proxies)
        server.shutdown()
        if not isinstance(error, BrokerUnavailableError):
            raise
        # RABBITMQ_REQUIRED=true and the broker stayed away for the whole reconnect policy.
        sys.stderr.write(f"instrumented-clients demo: {describe_error(error, 400)}\n")
        return _EXIT_DEPENDENCY_DOWN
    health.register(clients.database, required=True)
    health.register(clients.cache, required=False)
    health.register(clients.publisher, required=settings.rabbitmq_required)
    health.register(clients.consumer, required=settings.rabbitmq_required)
    connector = threading.Thread(target=_connect_database, args=(clients,),
                                 name="demo-db-connect", daemon=True)
    connector.start()
    flow = OrderFlow(clients.store, clients.cache_order, clients.publish, rate=args.rate,
                     stop=producing)
    chaos = None
    if proxies:
        names = {"database": "orders-db", "redis": "orders-cache", "rabbitmq": "order-events"}
        systems = {"database": "sql", "redis": "redis", "rabbitmq": "rabbitmq"}
        by_name = {names[key]: proxy for key, proxy in proxies.items()}
        chaos = Chaos(by_name, default_schedule(
            [(names[key], systems[key]) for key in proxies], args.chaos_interval),
            args.chaos_interval)

    try:
        clients.consumer.start()
    except Exception as error:  # RABBITMQ_REQUIRED=true and the broker went away meanwhile
        _log.error("consumer: %s", describe_error(error, 400))
    flow.start()
    if chaos is not None:
        chaos.start()
    view = DemoView(health, metrics_registry(telemetry.registry), namespace=telemetry.namespace,
                    orders=flow.snapshot, chaos=chaos.current if chaos else lambda: None,
                    url=server.url, recent=recent)
    deadline = started + args.duration if args.duration else None
    try:
        _show(view, stopper, deadline, console)
        if recent is not None:
            _configure_logging(None)  # the live view is gone: shutdown messages go to stderr
        producing.set()
        flow.join(timeout=30)
        if chaos is not None:
            chaos.close()
        _drain(clients, flow, args.flush_timeout)
    except KeyboardInterrupt:
        producing.set()
        _log.warning("second interrupt: not waiting for the buffer any longer")
    finally:
        producing.set()
        clients.publisher.close(timeout=0)  # idempotent: what is left is counted as dropped
        clients.consumer.close(timeout=2)
        clients.cache.close()
        clients.database.close()
        _stop_proxies(proxies)
        server.shutdown()
    print(_summary(time.monotonic() - started, stopper.reason, flow, telemetry), flush=True)
    return 0


def _connect_database(clients: DemoClients) -> None:
    """Start-up connect of the database, off the main thread: with ``required=False`` it returns
    after the policy's attempts (seconds), and keeps trying in the background."""
    try:
        clients.database.connect_with_retry(required=False)
    except Exception as error:  # a permanent error (wrong password): the state says FAILED
        _log.error("database %s: %s", clients.database.name, describe_error(error))


def _stop_proxies(proxies: dict[str, FaultProxy]) -> None:
    for proxy in proxies.values():
        proxy.stop()


def _show(view: DemoView, stopper: _Stopper, deadline: float | None, console: Any) -> None:
    def due() -> bool:
        return deadline is not None and time.monotonic() >= deadline

    if console is None:
        next_line = time.monotonic()
        while not stopper.event.wait(0.2) and not due():
            if time.monotonic() >= next_line:
                _log.info("%s", plain_line(view.frame()))
                next_line += _PLAIN_INTERVAL
        return
    from rich.live import Live

    with Live(render(view.frame(), console.width), console=console, refresh_per_second=4,
              transient=False) as live:
        while not stopper.event.wait(0.25) and not due():
            live.update(render(view.frame(), console.width))
        live.update(render(view.frame(), console.width))


def _drain(clients: DemoClients, flow: OrderFlow, timeout: float) -> None:
    """Give the publisher (``close(timeout)`` flushes its buffer and waits for the confirms) and
    the consumer up to ``timeout`` seconds to deliver what is outstanding.

    Waiting for a broker that is down helps nobody: after a short grace period (it may be
    reconnecting right now) an unreachable broker ends the wait, and what is left is counted.
    """
    deadline = time.monotonic() + timeout
    publisher, consumer = clients.publisher, clients.consumer
    grace = min(deadline, time.monotonic() + _UNREACHABLE_GRACE)
    while not publisher.health()["connected"] and time.monotonic() < grace:
        time.sleep(0.05)
    connected = bool(publisher.health()["connected"])
    if publisher.pending_events:
        _log.info("flushing %d buffered event(s)...", publisher.pending_events)
    publisher.close(timeout=max(0.0, deadline - time.monotonic()) if connected else 0.0)
    while flow.outstanding and time.monotonic() < deadline:
        if not consumer.health()["connected"] and time.monotonic() > grace:
            break
        time.sleep(0.05)
    if flow.outstanding:
        _log.warning("broker unreachable at shutdown: %d event(s) not delivered",
                     flow.outstanding)
    consumer.close(timeout=max(1.0, deadline - time.monotonic()))


def _summary(elapsed: float, reason: str, flow: OrderFlow, telemetry: Telemetry) -> str:
    orders = flow.snapshot()
    registry = metrics_registry(telemetry.registry)

    def events(name: str, **labels: str) -> int:
        return int(metric_total(registry, f"{telemetry.namespace}_{name}",
                                client="order-events", **labels))

    lines = [
        f"instrumented-clients demo stopped after {elapsed:.1f}s ({reason})",
        f"orders: {orders['created']} created, {orders['stored']} stored "
        f"({orders['store_failed']} failed), {orders['cached']} cached "
        f"({orders['cache_skipped']} skipped), {orders['published']} published, "
        f"{orders['consumed']} consumed, {orders['duplicates']} duplicates",
        f"events: {events('buffered_events_total')} buffered while the broker was away, "
        f"{events('buffer_flushed_events_total')} flushed, "
        f"{events('buffer_dropped_events_total')} dropped, "
        f"{events('publish_confirms_total', outcome='ack')} confirmed",
    ]
    lost = orders["outstanding"]
    lines.append("no event lost" if lost == 0 else
                 f"{lost} event(s) lost: published but never consumed")
    return "\n".join(lines)
