"""Start-up connection with retry, and the background reconnect of a client started degraded.

One set of rules for both clients: :class:`Startup` runs them on a thread for
``ResilientDatabase`` and :class:`AsyncStartup` as an asyncio task for ``AsyncResilientDatabase``;
what differs is only how a probe is made and how the wait between probes is spent.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable

from instrumented_clients.db.core import DatabaseCore
from instrumented_clients.db.errors import DatabaseUnavailableError, classify
from instrumented_clients.resilience import ConnectionState

__all__ = ["AsyncStartup", "Startup"]

_log = logging.getLogger("instrumented_clients.db")


def _begin(core: DatabaseCore) -> None:
    if core.closed:
        raise DatabaseUnavailableError(f"database client {core.name!r} is closed")
    if core.tracker.state is not ConnectionState.CONNECTED:
        core.tracker.connecting("connect_with_retry")
    _log.info("Attempting to connect to %s %r at %s", core.system, core.name, core.address)


def _spent(core: DatabaseCore, error: Exception, attempts: int, required: bool) -> None:
    """The start-up attempts are spent: raise, or return to start degraded."""
    # Not the end of the cycle: the background loop goes on with it (or the caller gives up).
    core.tracker.give_up("connect attempts spent", report_cycle=False)
    if not classify(error).is_transient:
        raise error
    if required:
        raise DatabaseUnavailableError(
            f"could not connect to {core.system} database {core.name!r} at "
            f"{core.address or 'local file'} after {attempts} attempt(s): "
            f"{core.tracker.last_error}"
        ) from error
    _log.warning("database %r unavailable at start-up; starting degraded and retrying in "
                 "the background: %s", core.name, core.tracker.last_error)


def _connected(core: DatabaseCore, reason: str) -> None:
    core.succeeded(reason)
    _log.info("Successfully connected to %s %r (%s)", core.system, core.name, reason)


def _reconnect_delay(core: DatabaseCore, step: int) -> float:
    # The schedule continues where connect_with_retry stopped and settles at the cap.
    policy = core.connect_policy
    return policy.backoff(policy.max_attempts + step)


class Startup:
    """``connect_with_retry`` of the sync client and its background reconnect thread.

    Args:
        core: the client's state.
        probe: one connection attempt (a ``SELECT 1``); raises when it fails.
    """

    def __init__(self, core: DatabaseCore, probe: Callable[[], None]) -> None:
        self._core = core
        self._probe = probe
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def reconnecting(self) -> bool:
        """Whether the background reconnect is running."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def _probe_once(self) -> None:
        try:
            self._probe()
        except Exception as error:
            self._core.connect_failed(error)
            raise

    def connect(self, required: bool) -> bool:
        core = self._core
        _begin(core)
        attempts = 0

        def attempt() -> None:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                core.tracker.connecting("connect_with_retry")
            self._probe_once()

        try:
            core.connect_guard.call(attempt)
        except Exception as error:
            _spent(core, error, attempts, required)
            self._start_reconnecting()
            return False
        _connected(core, "connected")
        return True

    def _start_reconnecting(self) -> None:
        with self._lock:
            if self.reconnecting:
                return
            self._thread = threading.Thread(target=self._reconnect_loop,
                                            name=f"db-reconnect-{self._core.name}", daemon=True)
            self._thread.start()

    def _reconnect_loop(self) -> None:
        """Keep trying after start-up failed; the tracker's reconnect cycle, opened at start-up,
        goes on, so the reconnect duration covers the whole outage."""
        core = self._core
        step = 0
        while not self._stop.is_set() and core.tracker.state is not ConnectionState.CONNECTED:
            if self._stop.wait(_reconnect_delay(core, step)):
                return
            step += 1
            try:
                self._probe_once()
            except Exception:
                continue
            _connected(core, "background reconnect succeeded")

    def stop(self, timeout: float | None) -> None:
        """Stop the background reconnect and wait up to ``timeout`` s (default 5) for it."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0 if timeout is None else timeout)


class AsyncStartup:
    """``connect_with_retry`` of the asyncio client and its background reconnect task."""

    def __init__(self, core: DatabaseCore, probe: Callable[[], Awaitable[None]]) -> None:
        self._core = core
        self._probe = probe
        self._task: asyncio.Task[None] | None = None

    @property
    def reconnecting(self) -> bool:
        """Whether the background reconnect is running."""
        return self._task is not None and not self._task.done()

    async def _probe_once(self) -> None:
        try:
            await self._probe()
        except Exception as error:
            self._core.connect_failed(error)
            raise

    async def connect(self, required: bool) -> bool:
        core = self._core
        _begin(core)
        attempts = 0

        async def attempt() -> None:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                core.tracker.connecting("connect_with_retry")
            await self._probe_once()

        try:
            await core.connect_guard.acall(attempt)
        except Exception as error:
            _spent(core, error, attempts, required)
            if not self.reconnecting:
                self._task = asyncio.get_running_loop().create_task(
                    self._reconnect_loop(), name=f"db-reconnect-{core.name}")
            return False
        _connected(core, "connected")
        return True

    async def _reconnect_loop(self) -> None:
        core = self._core
        step = 0
        while not core.closed and core.tracker.state is not ConnectionState.CONNECTED:
            await core.clock.asleep(_reconnect_delay(core, step))
            step += 1
            try:
                await self._probe_once()
            except Exception:
                continue
            _connected(core, "background reconnect succeeded")

    async def stop(self) -> None:
        """Cancel the background reconnect and wait for it to end."""
        task = self._task
        if task is None or task.done():
            return
        task.cancel()
        # The task's own cancellation is the result here; the caller's is still raised.
        await asyncio.gather(task, return_exceptions=True)
