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
import trustme

from instrumented_clients.db import ResilientDatabase
from instrumented_clients.resilience import RetryPolicy
from instrumented_clients.testing import CapturedTelemetry
from scripts.local_clusters.postgres_pair import PostgresPair

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


@contextlib.contextmanager
def _private_postgres(
    initdb_options: list[str], server_options: str = "",
    prepare: Callable[[Path], None] | None = None,
) -> Iterator[tuple[int, Path]]:
    """A PostgreSQL cluster of our own in a temp dir, on its own port; yields (port, its dir).

    ``prepare`` writes files into the dir (owned by ``postgres`` afterwards) before it starts;
    ``{root}`` in the options stands for the dir.
    """
    bin_dir = _pg_bin()
    root = Path(tempfile.mkdtemp(prefix="ic-pg-"))
    if prepare is not None:
        prepare(root)
    for path in (root, *root.iterdir()):
        shutil.chown(path, "postgres")
    port = _free_port()
    data = root / "data"

    def as_postgres(*command: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *command], check=True,
                       capture_output=True, timeout=60)

    as_postgres(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-N",
                *(option.format(root=root) for option in initdb_options))
    as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"),
                "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
                + server_options.format(root=root), "start")
    try:
        yield port, root
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-m", "immediate",
                        "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_password_server() -> Iterator[tuple[int, str]]:
    """A private PostgreSQL cluster that checks passwords (scram-sha-256).

    The shared server on 5432 uses ``trust`` for every local and 127.0.0.1 connection, so it
    accepts any password and a wrong one cannot be tested there; editing its pg_hba.conf would
    change a server other test runs share. This cluster lives in a temp dir, on its own port, and
    is stopped at the end of the session. Yields (port, the superuser's password).
    """
    password = uuid.uuid4().hex

    def write_password(root: Path) -> None:
        (root / "pw").write_text(password)

    with _private_postgres(["--auth=scram-sha-256", "--pwfile={root}/pw"],
                           prepare=write_password) as (port, _):
        yield port, password


class PgTLSServer:
    """A private PostgreSQL that speaks TLS, and the CA files a client may be given."""

    def __init__(self, port: int, ca_file: Path, other_ca_file: Path) -> None:
        self.port = port
        self.ca_file = ca_file  # the CA that signed the server's certificate (for 127.0.0.1)
        self.other_ca_file = other_ca_file


@pytest.fixture(scope="session")
def pg_tls_server() -> Iterator[PgTLSServer]:
    """A private PostgreSQL cluster with ``ssl=on`` and a certificate made at test time."""
    ca, other_ca = trustme.CA(), trustme.CA()

    def write_certificates(root: Path) -> None:
        certificate = ca.issue_cert("127.0.0.1")
        certificate.cert_chain_pems[0].write_to_path(str(root / "server.crt"))
        certificate.private_key_pem.write_to_path(str(root / "server.key"))
        (root / "server.key").chmod(0o600)  # PostgreSQL refuses a key others can read
        ca.cert_pem.write_to_path(str(root / "ca.pem"))
        other_ca.cert_pem.write_to_path(str(root / "other-ca.pem"))

    with _private_postgres(
        ["--auth=trust"], prepare=write_certificates,
        server_options="-c ssl=on -c ssl_cert_file={root}/server.crt "
                       "-c ssl_key_file={root}/server.key",
    ) as (port, root):
        yield PgTLSServer(port, root / "ca.pem", root / "other-ca.pem")


@pytest.fixture(scope="session")
def postgres_pair_session() -> Iterator[PostgresPair]:
    """A PostgreSQL primary with a synchronous standby on ports of their own, once per session."""
    pair = PostgresPair(Path(tempfile.mkdtemp(prefix="ic-pg-pair-")))
    try:
        pair.start()
        yield pair
    finally:
        pair.stop()


@pytest.fixture
def postgres_pair(postgres_pair_session: PostgresPair) -> PostgresPair:
    """The session's pair, as new: rebuilt when an earlier test promoted or stopped a node."""
    pair = postgres_pair_session
    pristine = (pair.primary is pair.nodes[0] and all(pair.running(n) for n in pair.nodes)
                and pair.replication_is_sync())
    if not pristine:
        pair.rebuild()
    return pair
