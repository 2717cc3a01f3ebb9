"""A TCP proxy on loopback that injects network faults between a client and a real server.

Modes, switchable while running:

- ``pass``: forward both ways.
- ``refuse``: stop listening, so new connections get ECONNREFUSED — the server is "down".
- ``blackhole``: accept and hold connections but forward nothing either way — the silent dead
  peer that only heartbeats detect. Leaving blackhole resets every socket it held.
- ``latency``: forward with a delay added to every chunk.
- ``drop_replies``: one way only — what the client sends reaches the server, what the server
  answers is read and thrown away, so the server acts on a request (a COMMIT) whose reply the
  client never gets. Leaving it resets every socket, as leaving blackhole does.

:meth:`FaultProxy.cut` is an action, not a mode: it resets every open connection now.
"""

from __future__ import annotations

import contextlib
import enum
import socket
import struct
import threading
import time
from collections.abc import Callable
from types import TracebackType

__all__ = ["FaultProxy", "ProxyMode"]

_RESET_LINGER = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST, not FIN


class ProxyMode(str, enum.Enum):
    PASS = "pass"
    REFUSE = "refuse"
    BLACKHOLE = "blackhole"
    LATENCY = "latency"
    DROP_REPLIES = "drop_replies"


_LOSSY = frozenset({ProxyMode.BLACKHOLE, ProxyMode.DROP_REPLIES})


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_LINGER)
    with contextlib.suppress(OSError):
        sock.close()


class _Link:
    """One proxied connection: a client socket, its upstream socket, and two pump threads."""

    def __init__(self, proxy: FaultProxy, downstream: socket.socket,
                 on_closed: Callable[[_Link], None]) -> None:
        self.proxy = proxy
        self.on_closed = on_closed
        self.downstream = downstream
        self.upstream: socket.socket | None = None
        self.closed = threading.Event()
        self._lock = threading.Lock()

    def start(self) -> None:
        threading.Thread(target=self._run, name="fault-proxy-link", daemon=True).start()

    def _run(self) -> None:
        try:
            upstream = socket.create_connection(self.proxy.upstream, timeout=5)
        except OSError:
            self.close()
            return
        with self._lock:
            if self.closed.is_set():  # cut while connecting: nobody else will close it
                _reset(upstream)
                return
            self.upstream = upstream
        for sock in (self.downstream, self.upstream):
            sock.settimeout(0.05)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=self._pump, args=(self.upstream, self.downstream, True),
                         name="fault-proxy-pump", daemon=True).start()
        self._pump(self.downstream, self.upstream, False)

    def _pump(self, source: socket.socket, target: socket.socket, replies: bool) -> None:
        proxy = self.proxy
        while not self.closed.is_set():
            if proxy.mode is ProxyMode.BLACKHOLE:
                # Read nothing, send nothing: the peer's data piles up unread, as over a dead link.
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
                continue  # bytes read just as the mode flipped are lost, as on a dead link
            if replies and proxy.mode is ProxyMode.DROP_REPLIES:
                proxy.bytes_dropped += len(data)
                continue
            if proxy.mode is ProxyMode.LATENCY and proxy.latency > 0:
                time.sleep(proxy.latency)
            try:
                target.sendall(data)
            except OSError:
                break
            proxy.bytes_forwarded += len(data)
        self.close()

    def close(self) -> None:
        with self._lock:
            if self.closed.is_set():
                return
            self.closed.set()
            upstream = self.upstream
        _reset(self.downstream)
        if upstream is not None:
            _reset(upstream)
        self.on_closed(self)


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
        self.bytes_dropped = 0
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

    def drop_replies(self) -> None:
        """Forward client → server, discard server → client (see the module docstring)."""
        self._set_mode(ProxyMode.DROP_REPLIES)

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
        if self.mode in _LOSSY and mode is not self.mode:
            # Every connection open now went through a lossy mode and may have lost bytes:
            # reset them all BEFORE forwarding resumes, so no half-delivered stream goes on.
            self.cut()
        self.mode = mode
        if mode is ProxyMode.REFUSE:
            self._close_listener()
        elif self._running and self._listener is None:
            self._listen()

    # -- plumbing -------------------------------------------------------------------------------

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(128)
        listener.settimeout(0.1)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept_loop, args=(listener,), name="fault-proxy-accept",
                         daemon=True).start()

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            # close() alone leaves the port listening while the accept thread still polls it
            # (the kernel keeps the file until poll returns), so connects would still succeed;
            # shutdown() stops listening at once and wakes the accept thread.
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
            link = _Link(self, downstream, self._forget)
            with self._lock:
                self._links.add(link)
            link.start()

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)

    def __repr__(self) -> str:
        return (f"FaultProxy({self.host}:{self.port} -> {self.upstream[0]}:{self.upstream[1]}, "
                f"mode={self.mode.value})")
