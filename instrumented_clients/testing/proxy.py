"""A TCP proxy on loopback that injects network faults between a client and a real server.

Modes, switchable while running:

- ``pass``: forward both ways.
- ``refuse``: stop listening, so new connections get ECONNREFUSED — the server is "down".
- ``blackhole``: accept and hold connections but forward nothing either way — the silent dead
  peer that only heartbeats detect. Leaving blackhole resets every socket it held.
- ``latency``: forward with a delay added to every chunk.

:meth:`FaultProxy.cut` is an action, not a mode: it resets every open connection now.
"""

from __future__ import annotations

import contextlib
import enum
import socket
import struct
import threading
import time
from types import TracebackType

__all__ = ["FaultProxy", "ProxyMode"]

_RESET_LINGER = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST, not FIN


class ProxyMode(str, enum.Enum):
    PASS = "pass"
    REFUSE = "refuse"
    BLACKHOLE = "blackhole"
    LATENCY = "latency"


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_LINGER)
    with contextlib.suppress(OSError):
        sock.close()


class _Link:
    """One proxied connection: a client socket, its upstream socket, and two pump threads."""

    def __init__(self, proxy: FaultProxy, downstream: socket.socket) -> None:
        self.proxy = proxy
        self.downstream = downstream
        self.upstream: socket.socket | None = None
        self.closed = threading.Event()
        self.held_in_blackhole = False

    def start(self) -> None:
        threading.Thread(target=self._run, name="fault-proxy-link", daemon=True).start()

    def _run(self) -> None:
        try:
            self.upstream = socket.create_connection(self.proxy.upstream, timeout=5)
        except OSError:
            self.close()
            return
        for sock in (self.downstream, self.upstream):
            sock.settimeout(0.05)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=self._pump, args=(self.upstream, self.downstream),
                         name="fault-proxy-pump", daemon=True).start()
        self._pump(self.downstream, self.upstream)

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        proxy = self.proxy
        while not self.closed.is_set():
            if proxy.mode is ProxyMode.BLACKHOLE:
                # Read nothing, send nothing: the peer's data piles up unread, as over a dead link.
                self.held_in_blackhole = True
                time.sleep(0.02)
                continue
            try:
                data = source.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            if proxy.blackholed:  # re-read: the mode may have flipped during recv
                self.held_in_blackhole = True
                continue  # bytes read just as the mode flipped are lost, as on a dead link
            if proxy.mode is ProxyMode.LATENCY and proxy.latency > 0:
                time.sleep(proxy.latency)
            try:
                target.sendall(data)
            except OSError:
                break
            proxy.bytes_forwarded += len(data)
        self.close()

    def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        _reset(self.downstream)
        if self.upstream is not None:
            _reset(self.upstream)
        self.proxy._forget(self)


class FaultProxy:
    """A fault-injecting TCP proxy in front of ``upstream_host:upstream_port``.

    Use as a context manager or call :meth:`start` / :meth:`stop`. Point the client at
    :attr:`host`:`port` (or :meth:`url` to rewrite a URL).
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = listen_host
        self.port = listen_port
        self.mode = ProxyMode.PASS
        self.latency = 0.0
        self.bytes_forwarded = 0
        self.accepted = 0
        self._links: set[_Link] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._running = False

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._running = True
        self._listen()
        return self

    def stop(self) -> None:
        self._running = False
        self._close_listener()
        self.cut()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def url(self, template: str) -> str:
        """Rewrite ``scheme://user:pass@host:port/rest`` to point at the proxy."""
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(template)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@{self.host}:{self.port}" if userinfo else f"{self.host}:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    @property
    def blackholed(self) -> bool:
        return self.mode is ProxyMode.BLACKHOLE

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._links)

    # -- faults ---------------------------------------------------------------------------------

    def pass_through(self) -> None:
        self._set_mode(ProxyMode.PASS)

    def refuse(self) -> None:
        """Refuse new connections (the port stops listening); open ones are cut too."""
        self._set_mode(ProxyMode.REFUSE)
        self.cut()

    def blackhole(self) -> None:
        self._set_mode(ProxyMode.BLACKHOLE)

    def add_latency(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"latency must be >= 0 seconds, got {seconds!r}")
        self.latency = seconds
        self._set_mode(ProxyMode.LATENCY)

    def cut(self) -> int:
        """Reset every open connection now; returns how many were cut."""
        with self._lock:
            links = list(self._links)
        for link in links:
            link.close()
        return len(links)

    def _set_mode(self, mode: ProxyMode) -> None:
        previous = self.mode
        self.mode = mode
        if previous is ProxyMode.BLACKHOLE and mode is not ProxyMode.BLACKHOLE:
            with self._lock:
                held = [link for link in self._links if link.held_in_blackhole]
            for link in held:
                link.close()
        if mode is ProxyMode.REFUSE:
            self._close_listener()
        elif self._running and self._listener is None:
            self._listen()

    # -- plumbing -------------------------------------------------------------------------------

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, self.port))
        except OSError:
            listener.close()
            raise
        listener.listen(128)
        listener.settimeout(0.1)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept_loop, args=(listener,), name="fault-proxy-accept",
                         daemon=True).start()

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            # shutdown() first: close() alone leaves the socket listening while the accept
            # thread is still inside accept(), so refuse() would not refuse at once and a quick
            # pass_through() could not bind the port again.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()

    def _accept_loop(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                downstream, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            link = _Link(self, downstream)
            with self._lock:
                self._links.add(link)
            link.start()

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)

    def __repr__(self) -> str:
        return (f"FaultProxy({self.host}:{self.port} -> {self.upstream[0]}:{self.upstream[1]}, "
                f"mode={self.mode.value})")
