"""One I/O thread owning one pika ``SelectConnection``, reconnected forever on a retry policy.

This is the layer every RabbitMQ client (publisher, consumer) is built on.

Interface, for a client built on :class:`RabbitConnection`:

- Construct it with the broker URL(s) and settings, then :meth:`~RabbitConnection.add_listener`
  an object with ``on_connection_ready(connection)`` and ``on_connection_lost(error)`` (see
  :class:`ConnectionListener`), then :meth:`~RabbitConnection.start`. Both callbacks run **on the
  I/O thread**: ``on_connection_ready`` after the shared topology is declared, on the first
  connect and after every reconnect (open your channel there); ``on_connection_lost`` when the
  connection dropped (every channel of it is gone: discard its delivery tags). An optional
  ``on_fork_child()`` resets a listener's own state in a forked child.
- Hand work to the I/O thread with :meth:`~RabbitConnection.call_soon` (thread-safe, batched: one
  wake-up of the loop per burst). Schedule timers on the I/O thread with
  :meth:`~RabbitConnection.call_later`. Wrap every callback you give pika with
  :meth:`~RabbitConnection.guarded`. Never touch a pika object from another thread.
- :attr:`~RabbitConnection.generation` grows on every connect: a delivery tag from an older
  generation belongs to a dead channel and must be discarded, never acked.
- :meth:`~RabbitConnection.in_io_thread` tells a caller whether it runs on the I/O thread (where
  waiting for the I/O thread would wait for itself); :attr:`~RabbitConnection.running` whether
  that thread is alive. :attr:`~RabbitConnection.fork_generation` grows in a forked child;
  :meth:`~RabbitConnection.keep_after_fork` keeps an object the parent still uses referenced in
  the child (so the child's garbage collector never closes the parent's file descriptors).
- Read :attr:`~RabbitConnection.state`, :attr:`~RabbitConnection.blocked` and
  :meth:`~RabbitConnection.health` from any thread. :meth:`~RabbitConnection.close` closes the
  connection and stops the thread.

Reconnects follow the :class:`~instrumented_clients.resilience.RetryPolicy` (by default
10 attempts, 1 s doubling to a 30 s cap). When the attempts are spent, or at once on a permanent
error (wrong password, missing vhost), the state goes to FAILED; attempts continue every
``max_delay`` seconds and the state stays FAILED until one succeeds. URLs are tried in turn.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import pika
from pika import exceptions as pika_errors
from pika.adapters.select_connection import IOLoop

from instrumented_clients.config import ConfigError
from instrumented_clients.rabbitmq.errors import BrokerUnavailableError, classify
from instrumented_clients.rabbitmq.settings import default_reconnect_policy, parse_urls
from instrumented_clients.rabbitmq.topology import Topology, declare_topology
from instrumented_clients.redaction import redact_url, safe_address
from instrumented_clients.resilience.clock import SYSTEM_CLOCK, Clock
from instrumented_clients.resilience.context import ClientContext
from instrumented_clients.resilience.errors import ErrorCategory, IllegalTransitionError
from instrumented_clients.resilience.events import ConnectionBlocked, Instrumentation
from instrumented_clients.resilience.retry import RetryPolicy
from instrumented_clients.resilience.state import ConnectionState, ConnectionStateMachine
from instrumented_clients.resilience.tracker import ConnectionTracker

__all__ = ["ConnectionListener", "RabbitConnection", "coalesce_writes", "default_reconnect_policy",
           "parse_urls"]

_log = logging.getLogger(__name__)
SYSTEM = "rabbitmq"
_S = ConnectionState
_PERMANENT_CONNECT = frozenset({ErrorCategory.AUTH, ErrorCategory.PERMISSION,
                                ErrorCategory.CONFIGURATION})

# Objects of a parent's connection (and its clients), kept referenced in a forked child so that
# the garbage collector never closes (or warns about) file descriptors the parent still uses.
_ABANDONED_AFTER_FORK: list[object] = []
_INSTANCES: weakref.WeakSet[RabbitConnection] = weakref.WeakSet()


def coalesce_writes(connection: Any) -> None:
    """Join the frames pika buffered for the socket into one chunk (call on the I/O thread).

    pika sends every frame with its own ``send()`` (three per message); each releases the GIL,
    and under contention with publishing threads each costs a GIL hand-off. One ``send()`` per
    burst keeps the I/O thread from convoying. Uses pika's private transport buffer, checked
    defensively: if pika changes, this does nothing.
    """
    buffers = getattr(getattr(connection, "_transport", None), "_tx_buffers", None)
    if isinstance(buffers, deque) and len(buffers) > 1:
        joined = b"".join(buffers)
        buffers.clear()
        buffers.append(joined)


class ConnectionListener(Protocol):
    """What a client registers on :class:`RabbitConnection`; both methods run on the I/O thread."""

    def on_connection_ready(self, connection: Any) -> None:
        """Connected and the topology declared: open channels here."""
        ...

    def on_connection_lost(self, error: BaseException | None) -> None:
        """The connection dropped; its channels and delivery tags are gone."""
        ...


class RabbitConnection:
    """A reconnecting pika ``SelectConnection`` run by one I/O thread.

    Args:
        urls: broker URL(s): a comma-separated string or a sequence, tried in turn.
        name: the ``client`` label and the default ``connection_name``.
        telemetry: an :class:`Instrumentation` (a :class:`~instrumented_clients.Telemetry`).
        reconnect_policy: attempts/backoff before FAILED (default: 10 attempts, 1 s to 30 s).
        heartbeat: AMQP heartbeat in seconds (a dead peer is detected in about 2× this).
        connect_timeout: TCP connect timeout (pika's ``socket_timeout``).
        stack_timeout: whole handshake (TCP + TLS + AMQP) timeout.
        blocked_connection_timeout: close a connection the broker blocked for this long.
        connection_name: shown in the management UI (default: ``name``).
        topology: declared on every connect, before listeners hear of it.
        required: :meth:`start` waits until connected, raising :class:`BrokerUnavailableError`
            when the policy is spent; otherwise :meth:`start` returns at once.
        clock: time source.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        name: str,
        telemetry: Instrumentation,
        reconnect_policy: RetryPolicy | None = None,
        heartbeat: float = 60.0,
        connect_timeout: float = 10.0,
        stack_timeout: float | None = None,
        blocked_connection_timeout: float | None = None,
        connection_name: str | None = None,
        topology: Topology | None = None,
        required: bool = False,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        try:
            self.urls = parse_urls(urls)
        except ConfigError:
            raise
        except ValueError as error:
            shown = urls if isinstance(urls, str) else ",".join(map(str, urls))
            raise ConfigError("url", redact_url(shown),
                              f"amqp:// or amqps:// broker URL(s), comma-separated ({error})"
                              ) from None
        for arg, value in (("heartbeat", heartbeat), ("connect_timeout", connect_timeout),
                           ("stack_timeout", stack_timeout),
                           ("blocked_connection_timeout", blocked_connection_timeout)):
            if value is not None and (not isinstance(value, (int, float))
                                      or isinstance(value, bool) or value < 0):
                raise ConfigError(arg, repr(value), "a number of seconds >= 0")
        if 0 < heartbeat < 1:
            raise ConfigError("heartbeat", repr(heartbeat),
                              "0 (off) or >= 1 second (AMQP counts whole seconds)")
        if stack_timeout is not None and stack_timeout <= 0:
            raise ConfigError("stack_timeout", repr(stack_timeout), "> 0 seconds or None")
        self.name = name
        self.telemetry = telemetry
        self.policy = reconnect_policy or default_reconnect_policy(clock=clock)
        self.heartbeat = heartbeat
        self.connect_timeout = connect_timeout
        self.stack_timeout = stack_timeout
        self.blocked_connection_timeout = blocked_connection_timeout
        self.connection_name = connection_name or name
        self.topology = topology or Topology()
        self.required = required
        self._clock = clock
        self.context = ClientContext(SYSTEM, name, clock, telemetry)
        self._listeners: list[ConnectionListener] = []
        self._fork_generation = 0
        self._reset_runtime()
        _INSTANCES.add(self)

    # -- state every fork re-creates -------------------------------------------------------------

    def _reset_runtime(self) -> None:
        self._pid = os.getpid()
        # Held while the I/O thread runs a callback; fork() waits for it, so a child never
        # inherits a lock (a metric's, a buffer's) that the parent's I/O thread was holding.
        self._io_lock = threading.RLock()
        self._ioloop: Any = IOLoop()
        self._thread: threading.Thread | None = None
        self._calls: deque[Callable[[], None]] = deque()
        self._wake_pending = False
        self._connection: Any = None
        self._ready = False
        self._closing = False
        self._closed_event = threading.Event()
        self._settled = threading.Event()  # first CONNECTED or FAILED (for required=True)
        self._retry_timer: Any = None
        self._url_index = 0
        self._generation = 0
        self.blocked = False
        self.illegal_transitions = 0
        self.address = safe_address(self.urls[0])
        self.tracker = ConnectionTracker(self.context)

    # -- public surface ----------------------------------------------------------------------------

    @property
    def machine(self) -> ConnectionStateMachine:
        return self.tracker.machine

    @property
    def state(self) -> ConnectionState:
        return self.tracker.state

    @property
    def last_error(self) -> str | None:
        """The last connection failure, redacted."""
        return self.tracker.last_error

    @property
    def last_error_category(self) -> ErrorCategory | None:
        return self.tracker.last_error_category

    @property
    def reconnect_attempts(self) -> int:
        return self.tracker.reconnect_attempts

    @property
    def connected(self) -> bool:
        return self.machine.state is _S.CONNECTED and self._ready

    @property
    def generation(self) -> int:
        """Incremented on every successful connect; tags of an older generation are stale."""
        return self._generation

    @property
    def fork_generation(self) -> int:
        """0 in the process that created the connection; incremented in every forked child that
        restarts it (a listener's ``on_fork_child`` runs right after)."""
        return self._fork_generation

    @property
    def running(self) -> bool:
        """The I/O thread is alive (started, and not stopped by :meth:`close`)."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    @staticmethod
    def keep_after_fork(obj: object) -> None:
        """In a forked child, keep ``obj`` (the parent's socket, spool handle, ...) referenced for
        the life of the process: collecting it would close a descriptor the parent still uses."""
        _ABANDONED_AFTER_FORK.append(obj)

    def add_listener(self, listener: ConnectionListener) -> None:
        """Register a client; call before :meth:`start`."""
        self._listeners.append(listener)

    def start(self, required_timeout: float | None = None) -> None:
        """Start the I/O thread. With ``required=True``, wait until connected or until the policy
        is spent (or ``required_timeout``), then raise :class:`BrokerUnavailableError`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"rabbitmq-io-{self.name}",
                                            daemon=True)
            self._thread.start()
            self.call_soon(self._connect)
        if self.required:
            self._settled.wait(required_timeout)
            if self.state is not _S.CONNECTED:
                error = self.last_error or "no attempt finished in time"
                raise BrokerUnavailableError(
                    f"RabbitMQ is required (RABBITMQ_REQUIRED=true) but {self.name!r} could not "
                    f"connect to {', '.join(safe_address(u) for u in self.urls)} after "
                    f"{self.tracker.cycle_attempts} attempt(s): {error}"
                )

    def in_io_thread(self) -> bool:
        """True on this connection's I/O thread (a pika callback, a future's done-callback)."""
        return threading.current_thread() is self._thread

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the I/O thread soon; thread-safe. Calls made in a burst share one
        wake-up of the loop."""
        if self._pid != os.getpid():
            _after_fork_in_child()
        self._calls.append(fn)
        if not self._wake_pending:
            self._wake_pending = True
            self._ioloop.add_callback_threadsafe(self._run_calls)

    def call_later(self, delay: float, fn: Callable[[], None]) -> Any:
        """Schedule ``fn`` on the I/O thread after ``delay`` seconds (call on the I/O thread)."""
        return self._ioloop.call_later(delay, self.guarded(fn))

    def remove_timeout(self, handle: Any) -> None:
        """Cancel a :meth:`call_later` handle (on the I/O thread)."""
        self._ioloop.remove_timeout(handle)

    def close(self, timeout: float | None = None) -> None:
        """Close the connection and stop the I/O thread (idempotent).

        Args:
            timeout: seconds to wait for the close to finish (default 10).
        """
        if timeout is None:
            timeout = 10.0
        if self._thread is None:
            with contextlib.suppress(IllegalTransitionError):
                self.tracker.closed_now("closed before start")
            self._ioloop.close()
            return
        if self.in_io_thread():  # from a callback: waiting here would block the loop itself
            self.guarded(self._begin_close)()
            return
        if not self._closed_event.is_set():
            self.call_soon(self._begin_close)
            self._closed_event.wait(timeout)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._ioloop.close()

    def health(self) -> dict[str, Any]:
        """Connection part of a client's ``health()`` (no credentials)."""
        return {
            "state": self.state.value,
            "connected": self.connected,
            "blocked": self.blocked,
            "address": self.address,
            "last_error": self.last_error,
            "reconnect_attempts": self.reconnect_attempts,
            "connection_name": self.connection_name,
        }

    # -- the I/O thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        # A callback that raises makes ioloop.start() return: log it and go on looping, so one
        # bug can never kill the thread that owns the connection.
        while not self._closed_event.is_set():
            try:
                self._ioloop.start()
            except Exception:
                _log.exception("rabbitmq %s: error on the I/O thread (loop restarted)", self.name)
            else:
                if not self._closed_event.is_set():
                    continue
        _log.debug("rabbitmq %s: I/O thread stopped", self.name)

    def _run_calls(self) -> None:
        self._wake_pending = False  # before draining: a call appended now wakes us again
        calls = self._calls
        while calls:
            try:
                fn = calls.popleft()
            except IndexError:
                break
            self.guarded(fn)()

    def guarded(self, fn: Callable[..., None]) -> Callable[..., None]:
        """Wrap a pika callback for the I/O thread: it runs under the I/O lock (so ``fork()``
        never splits it), an illegal state transition is logged and counted, any other error is
        logged — nothing ever propagates into pika or kills the thread."""

        def run(*args: Any) -> None:
            try:
                with self._io_lock:
                    fn(*args)
            except IllegalTransitionError as exc:
                self.illegal_transitions += 1  # the machine already emitted the metric event
                _log.error("rabbitmq %s: %s (ignored)", self.name, exc)
            except Exception:
                _log.exception("rabbitmq %s: error in callback %r", self.name, fn)

        return run

    def _connect(self) -> None:
        self._retry_timer = None
        if self._closing:
            return
        self.tracker.connecting("connect attempt")
        url = self.urls[self._url_index % len(self.urls)]
        self._url_index += 1
        self.address = safe_address(url)
        try:
            self._connection = pika.SelectConnection(
                self.parameters(url),
                on_open_callback=self.guarded(self._on_open),
                on_open_error_callback=self.guarded(self._on_open_error),
                on_close_callback=self.guarded(self._on_close),
                custom_ioloop=self._ioloop,
            )
        except Exception as exc:  # a synchronous failure must still schedule the next attempt
            self._connection = None
            self._attempt_failed(exc)

    def parameters(self, url: str) -> Any:
        """pika's connection parameters for ``url`` with this connection's settings."""
        params = pika.URLParameters(url)
        params.heartbeat = round(self.heartbeat)
        params.socket_timeout = self.connect_timeout
        if self.stack_timeout is not None:
            params.stack_timeout = self.stack_timeout
        if self.blocked_connection_timeout is not None:
            params.blocked_connection_timeout = self.blocked_connection_timeout
        params.connection_attempts = 1
        params.client_properties = {"connection_name": self.connection_name,
                                    "product": "instrumented-clients"}
        return params

    def probe(self) -> bool:
        """One classified attempt to reach the broker, apart from the I/O thread's connection.

        True when this connection is ready, or when a short-lived blocking connection to the
        first URL opens (the I/O thread connects on its own schedule). A failure is recorded as
        ``last_error`` (redacted) without counting as a reconnect attempt.
        """
        if self.connected:
            return True
        try:
            probe = pika.BlockingConnection(self.parameters(self.urls[0]))
        except Exception as error:
            self.tracker.record_failure(error)
            return False
        with contextlib.suppress(Exception):
            probe.close()
        return True

    def _on_open(self, connection: Any) -> None:
        if connection is not self._connection:
            return
        connection.add_on_connection_blocked_callback(self.guarded(self._on_blocked))
        connection.add_on_connection_unblocked_callback(self.guarded(self._on_unblocked))
        if not self.topology:
            self._on_ready(connection)
            return
        connection.channel(on_open_callback=self.guarded(
            lambda channel: self._declare(connection, channel)))

    def _declare(self, connection: Any, channel: Any) -> None:
        def on_channel_closed(_channel: Any, reason: BaseException) -> None:
            # Only the broker refusing a declaration matters here; a lost connection is
            # handled by _on_close.
            if not isinstance(reason, pika_errors.ChannelClosedByBroker):
                return
            if connection is self._connection and not self._ready and not self._closing:
                self._attempt_failed(reason)
                self._abandon(connection)

        channel.add_on_close_callback(self.guarded(on_channel_closed))

        def done() -> None:
            channel.close()
            if connection is self._connection and connection.is_open:
                self._on_ready(connection)

        declare_topology(channel, self.topology, self.guarded(done))

    def _on_ready(self, connection: Any) -> None:
        self._ready = True
        self._generation += 1
        self.tracker.succeeded(f"connected to {self.address}")
        self._settled.set()
        for listener in list(self._listeners):
            self.guarded(listener.on_connection_ready)(connection)

    def _on_open_error(self, connection: Any, error: BaseException) -> None:
        if connection is not self._connection:
            return
        self._connection = None
        if self._closing:
            self._finish_close()
            return
        self._attempt_failed(error)

    def _attempt_failed(self, error: BaseException) -> None:
        category = classify(error)
        attempt = self.tracker.cycle_attempts + 1  # only the I/O thread moves this tracker
        spent = attempt >= self.policy.max_attempts or category in _PERMANENT_CONNECT
        delay = self.policy.max_delay if spent else self.policy.backoff(attempt)
        self.tracker.failed(error, category, attempt=True, next_delay=delay)
        if spent:
            self.tracker.give_up(f"{attempt} attempts failed: {category.value}")
            self._settled.set()
        if not self._closing:
            self._retry_timer = self._ioloop.call_later(delay, self.guarded(self._connect))

    def _on_close(self, connection: Any, reason: BaseException) -> None:
        if connection is not self._connection:
            return
        was_ready = self._ready
        self._connection = None
        self._ready = False
        self._set_blocked(False, None)
        if self._closing:
            self._finish_close()
            return
        if was_ready:
            self.tracker.failed(reason, classify(reason), attempt=False, reason="connection lost")
            for listener in list(self._listeners):
                self.guarded(listener.on_connection_lost)(reason)
            self._connect()  # the first attempt at once; backoff from the second
        else:
            self._attempt_failed(reason)

    def _abandon(self, connection: Any) -> None:
        """Close a connection whose set-up failed; its close callback is ignored."""
        if connection is self._connection:
            self._connection = None
        if connection.is_open:
            connection.close()

    def _on_blocked(self, _connection: Any, frame: Any) -> None:
        reason = getattr(getattr(frame, "method", None), "reason", None)
        self._set_blocked(True, reason)

    def _on_unblocked(self, _connection: Any, _frame: Any) -> None:
        self._set_blocked(False, None)

    def _set_blocked(self, blocked: bool, reason: str | None) -> None:
        if blocked == self.blocked:
            return
        self.blocked = blocked
        self.telemetry.emit(ConnectionBlocked(SYSTEM, self.name, blocked, reason))

    # -- closing ----------------------------------------------------------------------------------

    def _begin_close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self.tracker.closing("close() called")
        if self._retry_timer is not None:
            self._ioloop.remove_timeout(self._retry_timer)
            self._retry_timer = None
        connection = self._connection
        if connection is not None and not connection.is_closed:
            if not connection.is_closing:
                connection.close()
            return  # _on_close / _on_open_error finish
        self._finish_close()

    def _finish_close(self) -> None:
        self._connection = None
        self._ready = False
        self.tracker.closed_now("closed")
        self._closed_event.set()
        self._settled.set()
        self._ioloop.stop()

    # -- fork -------------------------------------------------------------------------------------

    def before_fork(self) -> bool:
        """Take the I/O lock so that ``fork()`` never splits a running callback; False when a
        stuck callback held it for 5 s (fork goes ahead without it)."""
        return self._io_lock.acquire(timeout=5)

    def after_fork_in_parent(self) -> None:
        """Release what :meth:`before_fork` took."""
        self._io_lock.release()

    def restart_after_fork(self) -> None:
        """In a forked child (no-op elsewhere): a fresh I/O thread, loop and state; the parent's
        loop, socket and queued work stay the parent's. Listeners' ``on_fork_child`` run first."""
        if self._pid == os.getpid():
            return
        was_started = self._thread is not None and not self._closed_event.is_set()
        self.keep_after_fork((self._ioloop, self._connection))
        self._fork_generation += 1
        self._reset_runtime()
        for listener in list(self._listeners):
            hook = getattr(listener, "on_fork_child", None)
            if hook is not None:
                hook()
        if was_started:
            self._thread = threading.Thread(target=self._run, name=f"rabbitmq-io-{self.name}",
                                            daemon=True)
            self._thread.start()
            self.call_soon(self._connect)

    def __repr__(self) -> str:
        return f"RabbitConnection({self.name!r}, {self.address}, {self.state.value})"


def _after_fork_in_child() -> None:
    """Give every connection of this process a fresh I/O thread."""
    for instance in list(_INSTANCES):
        try:
            instance.restart_after_fork()
        except Exception:
            _log.exception("rabbitmq %s: could not restart after fork", instance.name)


_HELD_FOR_FORK: list[RabbitConnection] = []


def _before_fork() -> None:
    for instance in list(_INSTANCES):
        if instance.before_fork():
            _HELD_FOR_FORK.append(instance)


def _after_fork_in_parent() -> None:
    while _HELD_FOR_FORK:
        _HELD_FOR_FORK.pop().after_fork_in_parent()


def _after_fork_child_hook() -> None:
    _HELD_FOR_FORK.clear()  # the child's instances get fresh locks
    _after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_child_hook)
