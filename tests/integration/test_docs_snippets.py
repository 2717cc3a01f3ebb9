"""Every ```python block of README.md and docs/ runs as shown, against the local services.

As doctest does, the blocks of one file run in order in one namespace (a later block may use the
names of an earlier one), in a temporary working directory. A block preceded by
``<!-- snippet: skip (reason) -->`` is not run; the reason is visible in the markdown.

What the snippets leave behind is removed after each file: clients in the namespace are closed,
the RabbitMQ queues and exchanges of their topologies deleted, new Redis keys and new SQL tables
dropped (live tests hold a shared lock, so nothing else creates them meanwhile).
"""

from __future__ import annotations

import contextlib
import re
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
import pytest
import redis
import sqlalchemy
from prometheus_client import CollectorRegistry

from instrumented_clients import Telemetry, get_default_telemetry, set_default_telemetry
from instrumented_clients.rabbitmq.connection import RabbitConnection

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
REDIS_URL = "redis://127.0.0.1:6379/0"
SQL_URLS = ("postgresql+psycopg://postgres@127.0.0.1:5432/test",
            "mysql+pymysql://root@127.0.0.1:3306/test")
_FENCE = re.compile(r"^```python\s*$")
_SKIP = re.compile(r"^<!-- snippet: skip \((?P<reason>[^)]+)\) -->$")


@dataclass(frozen=True)
class Snippet:
    path: Path
    line: int  # of the first line of code
    code: str
    skip_reason: str | None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def snippets(path: Path) -> list[Snippet]:
    """The ```python blocks of ``path``, in order, with their skip marks."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Snippet] = []
    index = 0
    while index < len(lines):
        if not _FENCE.match(lines[index]):
            index += 1
            continue
        previous = next((line for line in reversed(lines[:index]) if line.strip()), "")
        mark = _SKIP.match(previous.strip())
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        found.append(Snippet(path, index + 2, "\n".join(lines[index + 1:end]) + "\n",
                             mark["reason"] if mark else None))
        index = end + 1
    return found


# What a document's examples must have done, beyond running without an error.
OUTCOMES: dict[str, Callable[[dict[str, Any]], bool]] = {
    # The quick start's publish is confirmed and reaches the consumer of the declared queue.
    "README.md": lambda ns: (ns["future"].result().outcome == "ack"
                             and {"id": 7} in ns["received"]
                             and any(m.get("data") == {"id": 8} for m in ns["received"])),
    "docs/rabbitmq-consumer.md": lambda ns: ns["saved"] == [{"id": 7}],
    # Every publish acked and handled by the coroutine handler.
    "docs/rabbitmq-async.md": lambda ns: len(ns["handled"]) == 102,
}

DOCUMENTS = [path for path in (ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")))
             if snippets(path)]


def test_the_documents_with_code_are_found() -> None:
    names = {path.name for path in DOCUMENTS}
    assert {"README.md", "migrating.md", "redis.md", "sql.md", "rabbitmq.md"} <= names
    # Another spelling of a Python fence would escape this test.
    markdown = (ROOT / "README.md", *(ROOT / "docs").rglob("*.md"))
    other = [f"{path.name}:{number}" for path in markdown
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if re.match(r"^```\s*(py|python3|pycon|ipython)\b", line)]
    assert other == []


def test_skip_marks_are_rare_and_say_why() -> None:
    skipped = [s for path in DOCUMENTS for s in snippets(path) if s.skip_reason]
    total = sum(len(snippets(path)) for path in DOCUMENTS)
    assert len(skipped) <= 3, [s.where for s in skipped]
    assert all(len(s.skip_reason or "") >= 8 for s in skipped)
    assert total >= 15


# -- what the snippets leave behind ---------------------------------------------------------------


def _redis_keys() -> set[bytes]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        return set(client.scan_iter(count=1000))
    finally:
        client.close()


def _sql_tables() -> dict[str, set[str]]:
    tables: dict[str, set[str]] = {}
    for url in SQL_URLS:
        engine = sqlalchemy.create_engine(url)
        try:
            tables[url] = set(sqlalchemy.inspect(engine).get_table_names())
        finally:
            engine.dispose()
    return tables


def _close(value: Any) -> None:
    """Close a client the snippets left open (closing twice is fine for every client)."""
    module = type(value).__module__
    if not module.startswith("instrumented_clients."):
        return
    for method in ("close", "shutdown"):
        if callable(getattr(value, method, None)):
            with contextlib.suppress(Exception):
                getattr(value, method)()
            return


def _delete_topologies(namespace: dict[str, Any]) -> None:
    queues: set[str] = set()
    exchanges: set[str] = set()
    for value in namespace.values():
        connection = getattr(value, "connection", None)
        if isinstance(connection, RabbitConnection):
            queues.update(queue.name for queue in connection.topology.queues)
            exchanges.update(exchange.name for exchange in connection.topology.exchanges)
    if not queues and not exchanges:
        return
    admin = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = admin.channel()
        for queue in queues:
            channel.queue_delete(queue)
        for exchange in exchanges:
            channel.exchange_delete(exchange)
    finally:
        admin.close()


@pytest.fixture
def leftovers_removed() -> Iterator[dict[str, Any]]:
    """A namespace for the snippets; afterwards, everything they created is gone."""
    namespace: dict[str, Any] = {"__name__": "__snippets__"}
    keys, tables = _redis_keys(), _sql_tables()
    sigterm = signal.getsignal(signal.SIGTERM)  # a snippet shows a shutdown handler
    default_telemetry = get_default_telemetry()
    # The snippets use the package's default telemetry: keep their series out of the global
    # registry that other tests of this session read.
    set_default_telemetry(Telemetry(registry=CollectorRegistry()))
    try:
        yield namespace
    finally:
        set_default_telemetry(default_telemetry)
        signal.signal(signal.SIGTERM, sigterm)
        for value in list(namespace.values()):
            _close(value)
        _delete_topologies(namespace)
        new_keys = _redis_keys() - keys
        if new_keys:
            client = redis.Redis.from_url(REDIS_URL)
            client.delete(*new_keys)
            client.close()
        for url, now in _sql_tables().items():
            engine = sqlalchemy.create_engine(url)
            quote = engine.dialect.identifier_preparer.quote
            with engine.begin() as connection:
                for table in sorted(now - tables[url]):
                    connection.execute(sqlalchemy.text(f"DROP TABLE {quote(table)}"))
            engine.dispose()


@pytest.mark.parametrize("path", DOCUMENTS, ids=[str(p.relative_to(ROOT)) for p in DOCUMENTS])
def test_the_code_blocks_run_as_shown(
    path: Path, leftovers_removed: dict[str, Any], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # files a snippet writes (SQLite, generated rules) land here
    ran = 0
    for snippet in snippets(path):
        if snippet.skip_reason:
            continue
        # Leading newlines: a traceback names the markdown file and its line.
        code = compile("\n" * (snippet.line - 1) + snippet.code, str(path), "exec")
        try:
            exec(code, leftovers_removed)
        except BaseException as error:
            raise AssertionError(f"the block at {snippet.where} failed: {error!r}") from error
        ran += 1
    assert ran > 0
    outcome = OUTCOMES.get(str(path.relative_to(ROOT)))
    assert outcome is None or outcome(leftovers_removed)
