"""A durable spool: buffered and unconfirmed messages in a SQLite file, so they survive a crash.

A message is written before :meth:`ResilientPublisher.publish` returns and deleted when the broker
settles it (ack, nack, return, permanent error) or the buffer drops it. A new process opening the
same file sends what is left before anything else. One process owns the file at a time: an
exclusive ``flock`` on ``<path>.lock``; a second owner fails at construction.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from instrumented_clients.rabbitmq.errors import RabbitMQError

__all__ = ["SpoolLockedError", "SpoolRecord", "SpooledMessages"]


class SpoolLockedError(RabbitMQError):
    """Another process (or publisher) owns the spool file."""


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    """One message read back from the spool."""

    spool_id: int
    exchange: str
    routing_key: str
    body: bytes
    properties: dict[str, Any]
    mandatory: bool


class SpooledMessages:
    """The SQLite spool (thread-safe: one connection guarded by a lock).

    Args:
        path: the database file; ``<path>.lock`` is the owner's lock file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._lock_fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise SpoolLockedError(
                f"spool {self.path!r} is owned by another process (lock file {self.path}.lock)"
            ) from None
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # survives a process kill, not a power cut
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "exchange TEXT NOT NULL, routing_key TEXT NOT NULL, body BLOB NOT NULL, "
            "properties TEXT NOT NULL, mandatory INTEGER NOT NULL)"
        )
        self.closed = False

    def add(self, exchange: str, routing_key: str, body: bytes, properties: dict[str, Any],
            mandatory: bool) -> int:
        """Store one message; returns its spool id."""
        encoded = json.dumps(properties, default=str, separators=(",", ":"))
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO messages (exchange, routing_key, body, properties, mandatory) "
                "VALUES (?, ?, ?, ?, ?)",
                (exchange, routing_key, body, encoded, int(mandatory)),
            )
            return int(cursor.lastrowid or 0)

    def remove(self, spool_ids: Iterable[int]) -> None:
        """Forget settled or dropped messages (one transaction)."""
        ids = [(spool_id,) for spool_id in spool_ids]
        if not ids or self.closed:
            return
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM messages WHERE id = ?", ids)
            self._db.execute("COMMIT")

    def load(self) -> list[SpoolRecord]:
        """Everything left by a previous owner, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, exchange, routing_key, body, properties, mandatory FROM messages "
                "ORDER BY id"
            ).fetchall()
        return [SpoolRecord(row[0], row[1], row[2], bytes(row[3]), json.loads(row[4]),
                            bool(row[5])) for row in rows]

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])

    def close(self) -> None:
        """Close the database and release the lock (idempotent)."""
        if self.closed:
            return
        self.closed = True
        with self._lock:
            self._db.close()
        with contextlib.suppress(OSError):
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        os.close(self._lock_fd)

    def abandon_after_fork(self) -> None:
        """In a forked child: drop this handle without touching the parent's lock or database."""
        self.closed = True
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)  # closing our copy keeps the parent's flock
