"""Start-up connection with retry, and the background reconnect loop of a degraded client."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from instrumented_clients.db.errors import DatabaseUnavailableError, classify
from instrumented_clients.redaction import describe_error
from instrumented_clients.resilience import ConnectionState
from instrumented_clients.resilience.events import ReconnectAttempt, ReconnectFinished

if TYPE_CHECKING:
    from instrumented_clients.db.database import ResilientDatabase

__all__ = ["connect_at_startup"]

_log = logging.getLogger("instrumented_clients.db")
_S = ConnectionState


def connect_at_startup(db: ResilientDatabase, required: bool) -> bool:
    """See :meth:`ResilientDatabase.connect_with_retry`."""
    if db._closed:
        raise DatabaseUnavailableError(f"database client {db.name!r} is closed")
    db._transition(_S.CONNECTING, "connect_with_retry")
    started = db._clock.monotonic()
    attempts = 0
    _log.info("Attempting to connect to %s %r at %s", db.system, db.name, db._address)

    def attempt() -> None:
        nonlocal attempts
        attempts += 1
        try:
            db._probe()
        except Exception as error:
            db.last_error = describe_error(error, 300)
            db.reconnect_attempts += 1
            db.telemetry.emit(ReconnectAttempt(db.system, db.name, attempts, "failure",
                                               classify(error).value, error))
            raise
        if attempts > 1:  # connecting at the first try is a connect, not a reconnect
            db.telemetry.emit(ReconnectAttempt(db.system, db.name, attempts, "success"))

    try:
        db._connect_guard.call(attempt)
    except Exception as error:
        db._transition(_S.FAILED, "connect attempts spent")
        if not classify(error).is_transient:
            raise
        if required:
            raise DatabaseUnavailableError(
                f"could not connect to {db.system} database {db.name!r} at "
                f"{db._address or 'local file'} after {attempts} attempt(s): {db.last_error}"
            ) from error
        _log.warning("database %r unavailable at start-up; starting degraded and retrying in "
                     "the background: %s", db.name, db.last_error)
        _start_reconnector(db, started, attempts)
        return False
    db._note_success()
    _log.info("Successfully connected to %s %r", db.system, db.name)
    return True


def _start_reconnector(db: ResilientDatabase, started: float, attempts: int) -> None:
    with db._lock:
        if db._reconnector is not None and db._reconnector.is_alive():
            return
        db._reconnector = threading.Thread(target=_reconnect_loop, args=(db, started, attempts),
                                           name=f"db-reconnect-{db.name}", daemon=True)
        db._reconnector.start()


def _reconnect_loop(db: ResilientDatabase, started: float, attempt: int) -> None:
    """Keep trying after start-up failed; ``started`` and ``attempt`` continue its count, so the
    reconnect duration covers the whole outage."""
    policy = db.connect_policy
    first = attempt
    while not db._stop.is_set() and not db.connected:
        # The schedule continues where connect_with_retry stopped and settles at the cap.
        if db._stop.wait(policy.backoff(policy.max_attempts + attempt - first)):
            return
        attempt += 1
        try:
            db._probe()
        except Exception as error:
            db.last_error = describe_error(error, 300)
            db.reconnect_attempts += 1
            db.telemetry.emit(ReconnectAttempt(db.system, db.name, attempt, "failure",
                                               classify(error).value, error))
            continue
        if not db.connected:  # an operation may have reconnected first
            db.telemetry.emit(ReconnectAttempt(db.system, db.name, attempt, "success"))
            db.telemetry.emit(ReconnectFinished(db.system, db.name, "success",
                                                db._clock.monotonic() - started, attempt))
            with db._lock:
                db._outage_started = None
                db.consecutive_failures = 0
            if not db._system_fixed:
                db._settle_system()
            db._transition(_S.CONNECTED, "background reconnect succeeded")
        _log.info("database %r reconnected in the background", db.name)
