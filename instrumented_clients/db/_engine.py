"""Engine construction, the ``system`` label and the bounded SQL verb of a statement."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.elements import TextClause

from instrumented_clients.config import ConfigError
from instrumented_clients.redaction import redact_url
from instrumented_clients.settings import DATABASE_URL

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "DEFAULT_DATABASE_URL",
    "SQL_VERBS",
    "address_of",
    "build_engine",
    "normalize_url",
    "system_of",
    "verb_of",
]

DEFAULT_DATABASE_URL: Final = DATABASE_URL.default

# The drivers this package is tested with, chosen when a URL names none.
_DEFAULT_DRIVERS: Final = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}
# For AsyncResilientDatabase: asyncio drivers (psycopg's async mode is named postgresql+psycopg).
_DEFAULT_ASYNC_DRIVERS: Final = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "mysql": "mysql+aiomysql",
    "mariadb": "mariadb+aiomysql",
    "sqlite": "sqlite+aiosqlite",
}

_EXPECTED_URL: Final = (
    "a SQLAlchemy database URL such as postgresql://user:password@host:5432/dbname, "
    "mysql://user:password@host:3306/dbname or sqlite:///path/to/file.db"
)

# db.operation.name is bounded: the statement's first keyword from this list, else OTHER.
SQL_VERBS: Final = frozenset({
    "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "UPSERT", "REPLACE", "WITH", "VALUES",
    "CREATE", "DROP", "ALTER", "TRUNCATE", "RENAME", "COMMENT", "GRANT", "REVOKE",
    "CALL", "EXECUTE", "DO", "EXPLAIN", "ANALYZE", "VACUUM", "SHOW", "DESCRIBE", "SET",
    "LOCK", "COPY", "LISTEN", "NOTIFY", "BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "PRAGMA",
})
READ_VERBS: Final = frozenset({"SELECT", "SHOW", "EXPLAIN", "DESCRIBE", "VALUES", "PRAGMA"})


def normalize_url(url: str | URL, *, argument: str = "url", asynchronous: bool = False) -> URL:
    """Parse ``url`` and pick this package's driver (an asyncio one when ``asynchronous``)
    when the URL names none.

    Raises:
        ConfigError: naming ``argument``, the URL with its password masked, and the expected form.
    """
    raw = url if isinstance(url, str) else url.render_as_string(hide_password=True)
    try:
        parsed = make_url(url)
        port = parsed.port  # a non-numeric port fails here, not at first connect
    except (ArgumentError, ValueError, TypeError):
        raise ConfigError(argument, redact_url(raw), _EXPECTED_URL) from None
    if port is not None and not 0 < port < 65536:
        raise ConfigError(argument, redact_url(raw), _EXPECTED_URL)
    driver = (_DEFAULT_ASYNC_DRIVERS if asynchronous else _DEFAULT_DRIVERS).get(parsed.drivername)
    if driver is not None:
        parsed = parsed.set(drivername=driver)
    return parsed


def address_of(url: URL) -> str:
    """``host:port`` of the server, or the comma-separated list of a libpq multi-host URL
    (``?host=a:5432&host=b:5432``); no credentials."""
    if url.host:
        return f"{url.host}:{url.port}" if url.port else url.host
    hosts = _listed(url.query.get("host"))
    ports = _listed(url.query.get("port"))
    if len(ports) == len(hosts):
        hosts = [f"{host}:{port}" for host, port in zip(hosts, ports, strict=True)]
    return ",".join(hosts)


def _listed(value: str | tuple[str, ...] | None) -> list[str]:
    """``host=a&host=b`` and ``host=a,b`` alike, as ``["a", "b"]``."""
    values = (value,) if isinstance(value, str) else value or ()
    return [item for text in values for item in text.split(",") if item]


def build_engine(url: URL, options: Mapping[str, Any], *, argument: str = "url",
                 asynchronous: bool = False) -> Any:
    """``create_engine`` (``create_async_engine`` when ``asynchronous``) with pre-ping on and
    parameters hidden from error messages and logs.

    No I/O happens here; a dialect or driver that is not installed fails now, not at connect.
    """
    settings: dict[str, Any] = {"pool_pre_ping": True, "hide_parameters": True}
    settings.update(options)
    factory: Any = create_engine
    if asynchronous:
        from sqlalchemy.ext.asyncio import create_async_engine  # the asyncio extra only

        factory = create_async_engine
    try:
        return factory(url, **settings)
    except NoSuchModuleError:
        raise ConfigError(argument, url.render_as_string(hide_password=True),
                          _EXPECTED_URL + " (unknown dialect or driver)") from None
    except ModuleNotFoundError as error:
        raise ConfigError(
            argument, url.render_as_string(hide_password=True),
            f"an installed driver: {error.name!r} is missing (install the package's "
            "'postgres', 'mysql' or 'asyncio' extra)",
        ) from None
    except ArgumentError as error:  # e.g. a multi-host URL mixing its two forms
        raise ConfigError(argument, url.render_as_string(hide_password=True),
                          f"{_EXPECTED_URL} ({error})") from None


def system_of(engine: Engine | AsyncEngine) -> str:
    """OpenTelemetry's ``db.system.name`` for the engine, as far as is known before connecting.

    A ``mysql://`` URL may reach MariaDB; that is only known once connected (see
    :func:`detected_system`).
    """
    name = engine.dialect.name
    if name == "mysql":
        return "mariadb" if engine.url.get_backend_name() == "mariadb" else "mysql"
    if name in ("postgresql", "sqlite", "mariadb"):
        return name
    return name or "other_sql"


def detected_system(engine: Engine | AsyncEngine) -> str:
    """Like :func:`system_of`, using the server version once the dialect has connected."""
    dialect: Any = engine.dialect
    if dialect.name == "mysql" and getattr(dialect, "is_mariadb", False):
        return "mariadb"
    return system_of(engine)


def verb_of(statement: Any) -> str:
    """The statement's SQL verb (``SELECT``, ``INSERT``, ...) or ``OTHER``: a bounded value."""
    if isinstance(statement, TextClause):
        return _first_word(statement.text)
    if isinstance(statement, str):
        return _first_word(statement)
    if isinstance(statement, ClauseElement):
        for attribute, verb in (("is_select", "SELECT"), ("is_insert", "INSERT"),
                                ("is_update", "UPDATE"), ("is_delete", "DELETE")):
            if getattr(statement, attribute, False):
                return verb
        if getattr(statement, "is_dml", False):
            return "OTHER"
        ddl = getattr(statement, "__visit_name__", "")
        if isinstance(ddl, str):
            head = ddl.split("_", 1)[0].upper()
            if head in SQL_VERBS:
                return head
    return "OTHER"


def _first_word(sql: str) -> str:
    stripped = sql.lstrip(" \t\r\n(")
    end = 0
    for end, char in enumerate(stripped[:16]):  # noqa: B007 - end is used after the loop
        if not char.isalpha():
            break
    else:
        end = len(stripped[:16])
    word = stripped[:end].upper()
    return word if word in SQL_VERBS else "OTHER"


def as_statement(statement: Any, cache: dict[str, TextClause]) -> Any:
    """A ``text()`` for a string (cached: compiling the same SQL twice is wasted work)."""
    if isinstance(statement, str):
        clause = cache.get(statement)
        if clause is None:
            if len(cache) >= 512:
                cache.clear()
            clause = cache[statement] = text(statement)
        return clause
    return statement
