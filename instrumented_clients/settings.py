"""Every environment variable the package reads, declared once: name, type, default, unit, who
reads it and what it means.

The clients' ``from_env()``, the demo and ``instrumented-clients check`` all read through this
table, so a default cannot differ between two readers. A value that does not parse raises
:class:`~instrumented_clients.config.ConfigError` naming the variable, the value (a URL's password
replaced by ``***``) and what was expected. The README's environment table is
:func:`markdown_table`'s output.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Final

from instrumented_clients.config import ConfigError, env_bool, env_float, env_int, env_str

__all__ = [
    "DATABASE_URL",
    "DB_RETRY_BASE_DELAY",
    "DB_RETRY_MAX_ATTEMPTS",
    "DB_RETRY_MAX_DELAY",
    "DB_VALIDATE_IDLE_AFTER",
    "METRICS_PORT",
    "PROMETHEUS_MULTIPROC_DIR",
    "RABBITMQ_CONNECT_TIMEOUT",
    "RABBITMQ_HEARTBEAT",
    "RABBITMQ_MAX_PENDING_EVENTS",
    "RABBITMQ_MAX_RETRIES",
    "RABBITMQ_PREFETCH",
    "RABBITMQ_REQUIRED",
    "RABBITMQ_RETRY_DELAY",
    "RABBITMQ_RETRY_MAX_DELAY",
    "RABBITMQ_URL",
    "REDIS_RETRY_BASE_DELAY",
    "REDIS_RETRY_MAX_ATTEMPTS",
    "REDIS_RETRY_MAX_DELAY",
    "REDIS_URL",
    "SETTINGS",
    "BoolSetting",
    "FloatSetting",
    "IntSetting",
    "Setting",
    "TextSetting",
    "UrlSetting",
    "markdown_table",
    "setting",
]

Environ = Mapping[str, str] | None

PUBLISHER: Final = "ResilientPublisher"
CONSUMER: Final = "ResilientConsumer"
REDIS: Final = "ResilientRedis"
REDIS_CLUSTER: Final = "ResilientRedisCluster"
DATABASE: Final = "ResilientDatabase"
DEMO: Final = "demo"
CHECK: Final = "check"
DB_HELPER: Final = "get_db_connection_retry"
REDIS_HELPER: Final = "get_redis_connection_retry"
_DB_READERS: Final = (DATABASE, DB_HELPER, DEMO)
_REDIS_READERS: Final = (REDIS, REDIS_CLUSTER, REDIS_HELPER, DEMO)
_RABBITMQ_CLIENTS: Final = (PUBLISHER, CONSUMER, DEMO, CHECK)


@dataclass(frozen=True, slots=True, kw_only=True)
class Setting:
    """One environment variable: what the README's table shows about it."""

    env: str
    description: str
    used_by: tuple[str, ...]
    unit: str = ""

    type_name: ClassVar[str] = ""

    @property
    def default_text(self) -> str:
        raise NotImplementedError


def _number_text(value: float, unit: str) -> str:
    return f"`{value:g}`" + (f" {unit}" if unit else "")


@dataclass(frozen=True, slots=True, kw_only=True)
class IntSetting(Setting):
    default: int
    minimum: int | None = None
    maximum: int | None = None

    type_name: ClassVar[str] = "integer"

    @property
    def default_text(self) -> str:
        return _number_text(self.default, self.unit)

    def read(self, environ: Environ = None) -> int:
        value = env_int(self.env, self.default, minimum=self.minimum, environ=environ)
        if self.maximum is not None and value > self.maximum:
            raise ConfigError(self.env, str(value),
                              f"an integer from {self.minimum or 0} to {self.maximum}")
        return value


@dataclass(frozen=True, slots=True, kw_only=True)
class FloatSetting(Setting):
    default: float
    minimum: float | None = None

    type_name: ClassVar[str] = "number"

    @property
    def default_text(self) -> str:
        return _number_text(self.default, self.unit)

    def read(self, environ: Environ = None) -> float:
        return env_float(self.env, self.default, minimum=self.minimum, environ=environ)


@dataclass(frozen=True, slots=True, kw_only=True)
class BoolSetting(Setting):
    default: bool

    type_name: ClassVar[str] = "boolean"

    @property
    def default_text(self) -> str:
        return f"`{str(self.default).lower()}`"

    def read(self, environ: Environ = None) -> bool:
        return env_bool(self.env, self.default, environ)


@dataclass(frozen=True, slots=True, kw_only=True)
class TextSetting(Setting):
    """Free text; empty (the default) means unset."""

    default: str = ""

    type_name: ClassVar[str] = "text"

    @property
    def default_text(self) -> str:
        return f"`{self.default}`" if self.default else "unset"

    def read(self, environ: Environ = None) -> str:
        return env_str(self.env, self.default, environ)


@dataclass(frozen=True, slots=True, kw_only=True)
class UrlSetting(Setting):
    """A URL, read as text: the client it belongs to checks it with its own parser (one parser
    per kind of URL), e.g. ``ResilientRedis.from_env`` with ``validate_url``."""

    default: str

    type_name: ClassVar[str] = "URL"

    @property
    def default_text(self) -> str:
        return f"`{self.default}`"

    def read(self, environ: Environ = None) -> str:
        return env_str(self.env, self.default, environ)


RABBITMQ_URL: Final = UrlSetting(
    env="RABBITMQ_URL", default="amqp://guest:guest@localhost:5672/", used_by=_RABBITMQ_CLIENTS,
    description="Broker URL (`amqp://` or `amqps://`); several, comma-separated, are tried in "
    "turn.")
RABBITMQ_REQUIRED: Final = BoolSetting(
    env="RABBITMQ_REQUIRED", default=False, used_by=_RABBITMQ_CLIENTS,
    description="Wait for the broker at start-up and fail without it; `false` starts without it "
    "and buffers events.")
RABBITMQ_MAX_RETRIES: Final = IntSetting(
    env="RABBITMQ_MAX_RETRIES", default=10, minimum=1, used_by=(PUBLISHER, CONSUMER, DEMO),
    description="Reconnect attempts before the state is `failed` (attempts go on at the cap).")
RABBITMQ_RETRY_DELAY: Final = FloatSetting(
    env="RABBITMQ_RETRY_DELAY", default=1.0, minimum=0, unit="s",
    used_by=(PUBLISHER, CONSUMER, DEMO), description="First reconnect delay; it doubles.")
RABBITMQ_RETRY_MAX_DELAY: Final = FloatSetting(
    env="RABBITMQ_RETRY_MAX_DELAY", default=30.0, minimum=0, unit="s",
    used_by=(PUBLISHER, CONSUMER, DEMO), description="Cap on the reconnect delay.")
RABBITMQ_MAX_PENDING_EVENTS: Final = IntSetting(
    env="RABBITMQ_MAX_PENDING_EVENTS", default=1000, minimum=1, used_by=(PUBLISHER, DEMO),
    description="Messages the publisher buffers while the broker is away.")
RABBITMQ_HEARTBEAT: Final = FloatSetting(
    env="RABBITMQ_HEARTBEAT", default=60.0, minimum=0, unit="s",
    used_by=(PUBLISHER, CONSUMER, DEMO), description="AMQP heartbeat interval (`0`: none).")
RABBITMQ_CONNECT_TIMEOUT: Final = FloatSetting(
    env="RABBITMQ_CONNECT_TIMEOUT", default=10.0, minimum=0.001, unit="s",
    used_by=(PUBLISHER, CONSUMER, DEMO), description="Time allowed for one connection attempt.")
RABBITMQ_PREFETCH: Final = IntSetting(
    env="RABBITMQ_PREFETCH", default=100, minimum=1, used_by=(CONSUMER, DEMO),
    description="Unsettled deliveries the broker sends a consumer at once.")
DATABASE_URL: Final = UrlSetting(
    env="DATABASE_URL", default="sqlite:///instrumented-clients-demo.db",
    used_by=(DATABASE, DEMO, CHECK), description="SQLAlchemy database URL.")
DB_RETRY_MAX_ATTEMPTS: Final = IntSetting(
    env="DB_RETRY_MAX_ATTEMPTS", default=4, minimum=1, used_by=_DB_READERS,
    description="Attempts per operation, the first included (4: retries after ~1, 2, 4 s).")
DB_RETRY_BASE_DELAY: Final = FloatSetting(
    env="DB_RETRY_BASE_DELAY", default=1.0, minimum=0, unit="s", used_by=_DB_READERS,
    description="First retry delay; it doubles, with ×0.5–1.5 jitter.")
DB_RETRY_MAX_DELAY: Final = FloatSetting(
    env="DB_RETRY_MAX_DELAY", default=30.0, minimum=0, unit="s", used_by=_DB_READERS,
    description="Cap on the retry delay.")
DB_VALIDATE_IDLE_AFTER: Final = FloatSetting(
    env="DB_VALIDATE_IDLE_AFTER", default=1.0, minimum=0, unit="s",
    used_by=(DATABASE, "AsyncResilientDatabase", DEMO),
    description="A pooled connection idle at least this long is pinged before use (0: every "
    "checkout); psycopg reads and transactions find a dead one with their own BEGIN instead.")
REDIS_URL: Final = UrlSetting(
    env="REDIS_URL", default="redis://localhost:6379/0",
    used_by=(REDIS, REDIS_CLUSTER, DEMO, CHECK),
    description="Redis URL (`redis://`, `rediss://` or `unix://`), or the Sentinels and the "
    "service behind them: `redis+sentinel://host:port[,host:port...]/service[/db]`; for "
    "ResilientRedisCluster any node's `redis://` URL.")
REDIS_RETRY_MAX_ATTEMPTS: Final = IntSetting(
    env="REDIS_RETRY_MAX_ATTEMPTS", default=4, minimum=1, used_by=_REDIS_READERS,
    description="Attempts per command, the first included.")
REDIS_RETRY_BASE_DELAY: Final = FloatSetting(
    env="REDIS_RETRY_BASE_DELAY", default=0.5, minimum=0, unit="s", used_by=_REDIS_READERS,
    description="First retry delay; it doubles, with ×0.5–1.5 jitter.")
REDIS_RETRY_MAX_DELAY: Final = FloatSetting(
    env="REDIS_RETRY_MAX_DELAY", default=10.0, minimum=0, unit="s", used_by=_REDIS_READERS,
    description="Cap on the retry delay.")
METRICS_PORT: Final = IntSetting(
    env="METRICS_PORT", default=8000, minimum=0, maximum=65535, used_by=(DEMO,),
    description="Port of the demo's `/metrics`, `/health` and `/ready` (`--port` wins).")
PROMETHEUS_MULTIPROC_DIR: Final = TextSetting(
    env="PROMETHEUS_MULTIPROC_DIR", used_by=("serve_metrics_and_health", "metrics_registry"),
    description="prometheus_client's multiprocess directory: set it (before prometheus_client "
    "is imported) to serve one scrape for every worker process.")

AnySetting = IntSetting | FloatSetting | BoolSetting | UrlSetting | TextSetting

SETTINGS: Final[tuple[AnySetting, ...]] = (
    RABBITMQ_URL, RABBITMQ_REQUIRED, RABBITMQ_MAX_RETRIES, RABBITMQ_RETRY_DELAY,
    RABBITMQ_RETRY_MAX_DELAY, RABBITMQ_MAX_PENDING_EVENTS, RABBITMQ_HEARTBEAT,
    RABBITMQ_CONNECT_TIMEOUT, RABBITMQ_PREFETCH,
    DATABASE_URL, DB_RETRY_MAX_ATTEMPTS, DB_RETRY_BASE_DELAY, DB_RETRY_MAX_DELAY,
    DB_VALIDATE_IDLE_AFTER,
    REDIS_URL, REDIS_RETRY_MAX_ATTEMPTS, REDIS_RETRY_BASE_DELAY, REDIS_RETRY_MAX_DELAY,
    METRICS_PORT, PROMETHEUS_MULTIPROC_DIR,
)

_BY_ENV: Final = {entry.env: entry for entry in SETTINGS}


def setting(env: str) -> AnySetting:
    """Look a setting up by its variable name."""
    try:
        return _BY_ENV[env]
    except KeyError:
        raise KeyError(f"no setting {env!r} in the table") from None


def markdown_table() -> str:
    """The table as Markdown (the README's copy is checked against this)."""
    rows = ["| variable | type | default | read by | meaning |", "|---|---|---|---|---|"]
    for entry in SETTINGS:
        rows.append(f"| `{entry.env}` | {entry.type_name} | {entry.default_text} | "
                    f"{', '.join(entry.used_by)} | {entry.description} |")
    return "\n".join(rows) + "\n"
