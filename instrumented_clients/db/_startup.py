"""Start-up connection with retry, and the background reconnect loop of a degraded client."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from instrumented_clients.db.errors import DatabaseUnavailableError, classify
from instrumented_clients.resilience import ConnectionState

if TYPE_CHECKING:
    from instrumented_clients.db.database import ResilientDatabase

__all__ = ["connect_at_startup"]

_log = logging.getLogger("instrumented_clients.db")


def _probe_once(db: ResilientDatabase) -> None:
    """One connection attempt, reported to the tracker when it fails."""
    try:
        db._probe()
    except Exception as error:
        db._tracker.failed(error, classify(error), attempt=True)
        raise


def connect_at_startup(db: ResilientDatabase, required: bool) -> bool:
    """See :meth:`ResilientDatabase.connect_with_retry`."""
    if db._closed:
        raise DatabaseUnavailableError(f"database client {db.name!r} is closed")
    tracker = db._tracker
    if tracker.state is not ConnectionState.CONNECTED:
        tracker.connecting("connect_with_retry")
    attempts = 0
    _log.info("Attempting to connect to %s %r at %s", db.system, db.name, db._address)

    def attempt() -> None:
        nonlocal attempts
        attempts += 1
        if attempts > 1:
            tracker.connecting("connect_with_retry")
        _probe_once(db)

    try:
        db._connect_guard.call(attempt)
    except Exception as error:
        # Not the end of the cycle: the background loop goes on with it (or the caller gives up).
        tracker.give_up("connect attempts spent", report_cycle=False)
        if not classify(error).is_transient:
            raise
        if required:
            raise DatabaseUnavailableError(
                f"could not connect to {db.system} database {db.name!r} at "
                f"{db._address or 'local file'} after {attempts} attempt(s): {db.last_error}"
            ) from error
        _log.warning("database %r unavailable at start-up; starting degraded and retrying in "
                     "the background: %s", db.name, db.last_error)
        _start_reconnector(db)
        return False
    db._note_success("connected")
    _log.info("Successfully connected to %s %r", db.system, db.name)
    return True


def _start_reconnector(db: ResilientDatabase) -> None:
    with db._lock:
        if db._reconnector is not None and db._reconnector.is_alive():
            return
        db._reconnector = threading.Thread(target=_reconnect_loop, args=(db,),
                                           name=f"db-reconnect-{db.name}", daemon=True)
        db._reconnector.start()


def _reconnect_loop(db: ResilientDatabase) -> None:
    """Keep trying after start-up failed; the tracker's reconnect cycle, opened at start-up,
    goes on, so the reconnect duration covers the whole outage."""
    policy = db.connect_policy
    step = 0
    while not db._stop.is_set() and not db.connected:
        # The schedule continues where connect_with_retry stopped and settles at the cap.
        if db._stop.wait(policy.backoff(policy.max_attempts + step)):
            return
        step += 1
        try:
            _probe_once(db)
        except Exception:
            continue
        db._note_success("background reconnect succeeded")
        _log.info("database %r reconnected in the background", db.name)
