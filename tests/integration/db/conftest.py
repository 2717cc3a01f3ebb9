"""Fixtures for the SQL integration tests: real PostgreSQL and MariaDB on this machine.

Every test uses tables (and roles/users) with a uuid suffix and drops them afterwards, because the
servers are shared with other test runs.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pymysql
import pytest

from instrumented_clients.db import ResilientDatabase
from instrumented_clients.resilience import RetryPolicy
from instrumented_clients.testing import CapturedTelemetry

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
MARIADB_URL = "mysql://root@127.0.0.1:3306/test"


def fast_policy(**changes: object) -> RetryPolicy:
    """The default schedule's shape with millisecond delays, so live tests stay quick."""
    settings: dict[str, object] = {"max_attempts": 4, "initial_delay": 0.01, "max_delay": 0.05,
                                   "jitter": 0.5}
    settings.update(changes)
    return RetryPolicy(**settings)  # type: ignore[arg-type]


@pytest.fixture
def table() -> str:
    return f"ic_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def pg_admin() -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    connection = psycopg.connect("host=127.0.0.1 user=postgres dbname=test", autocommit=True)
    yield connection
    connection.close()


@pytest.fixture
def maria_admin() -> Iterator[pymysql.connections.Connection]:
    connection = pymysql.connect(host="127.0.0.1", user="root", database="test", autocommit=True)
    yield connection
    connection.close()


@pytest.fixture
def make_db(telemetry: CapturedTelemetry) -> Iterator[Callable[..., ResilientDatabase]]:
    made: list[ResilientDatabase] = []

    def make(url: str = PG_URL, **options: object) -> ResilientDatabase:
        options.setdefault("telemetry", telemetry)
        options.setdefault("policy", fast_policy())
        database = ResilientDatabase(url, **options)  # type: ignore[arg-type]
        made.append(database)
        return database

    yield make
    for database in made:
        database.close()


@pytest.fixture
def pg_table(pg_admin: psycopg.Connection[tuple[object, ...]], table: str) -> Iterator[str]:
    pg_admin.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v int NOT NULL)")
    yield table
    pg_admin.execute(f"DROP TABLE IF EXISTS {table}")


@pytest.fixture
def maria_table(maria_admin: pymysql.connections.Connection, table: str) -> Iterator[str]:
    with maria_admin.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v int NOT NULL) ENGINE=InnoDB")
    yield table
    with maria_admin.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {table}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        pytest.fail("initdb not found: install postgresql (make services)")
    return found[-1].parent


@pytest.fixture(scope="session")
def pg_password_server() -> Iterator[tuple[int, str]]:
    """A private PostgreSQL cluster that checks passwords (scram-sha-256).

    The shared server on 5432 uses ``trust`` for every local and 127.0.0.1 connection, so it
    accepts any password and a wrong one cannot be tested there; editing its pg_hba.conf would
    change a server other test runs share. This cluster lives in a temp dir, on its own port, and
    is stopped at the end of the session. Yields (port, the superuser's password).
    """
    bin_dir = _pg_bin()
    root = Path(tempfile.mkdtemp(prefix="ic-pg-"))
    password = uuid.uuid4().hex
    (root / "pw").write_text(password)
    shutil.chown(root, "postgres")
    shutil.chown(root / "pw", "postgres")
    port = _free_port()
    data = root / "data"

    def as_postgres(*command: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *command], check=True,
                       capture_output=True, timeout=60)

    as_postgres(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-N",
                "--auth=scram-sha-256", f"--pwfile={root / 'pw'}")
    as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"),
                "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    try:
        yield port, password
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-m", "immediate",
                        "stop")
        shutil.rmtree(root, ignore_errors=True)
