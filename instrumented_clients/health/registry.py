"""``HealthRegistry``: one answer to "can this service do its job?" from every client's health().

A dependency is *required* (the service cannot work without it: ``unhealthy``, ``/ready`` says 503)
or *optional* (the service works, degraded: events are buffered, the cache is skipped). The report
never carries a credential: every string in it goes through
:func:`~instrumented_clients.redaction.redact_text` and URL-like keys through
:func:`~instrumented_clients.redaction.redact_url`, whatever the client put there.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol, runtime_checkable

from instrumented_clients.client import HealthReport
from instrumented_clients.redaction import redact_text, redact_url

__all__ = [
    "HealthRegistry",
    "HealthStatus",
    "SupportsHealth",
    "get_default_health_registry",
    "is_dependency_up",
    "sanitize",
]

_log = logging.getLogger(__name__)

# States in which a connection can serve calls. ``closing``/``closed`` are intentional, but a
# closed client cannot serve either, so they count as down too.
_UP_STATES: Final = frozenset({"connected"})
_SECRET_KEYS: Final = frozenset({"password", "passwd", "pwd", "secret", "token", "api_key"})
_URL_KEYS: Final = frozenset({"url", "urls", "dsn", "uri", "address", "addresses"})


class HealthStatus(str, enum.Enum):
    """The overall verdict of :meth:`HealthRegistry.check`."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"

    def __str__(self) -> str:
        return self.value


@runtime_checkable
class SupportsHealth(Protocol):
    """What the registry needs from a client: a ``health()`` that returns a mapping (a
    :class:`~instrumented_clients.client.HealthReport` or a dict)."""

    def health(self) -> Mapping[str, Any]: ...


def sanitize(value: Any, key: str | None = None, _depth: int = 0) -> Any:
    """A JSON-ready copy of ``value`` with every credential removed.

    Strings lose passwords (``scheme://user:***@host``, ``password=***``); values under URL-like
    keys lose their query string as well; values under secret-looking keys become ``***``.
    Anything that is not JSON (enums, exceptions, objects) becomes its redacted ``str``.
    """
    if key is not None and key.lower() in _SECRET_KEYS and value is not None:
        return "***"
    if _depth > 8:  # a self-referencing structure must not hang the health check
        return "<nested too deeply>"
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        if key is not None and key.lower() in _URL_KEYS and "://" in value:
            return ",".join(redact_url(part.strip()) for part in value.split(","))
        return redact_text(value)
    if isinstance(value, Mapping):
        return {str(k): sanitize(v, str(k), _depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [sanitize(item, key, _depth + 1) for item in value]
    return redact_text(str(value))


def is_dependency_up(report: Mapping[str, Any]) -> bool:
    """Whether one dependency's health report means it can serve calls now.

    An explicit ``healthy`` key decides; otherwise the dependency is up when it is ``connected``
    (or in the ``connected`` state) and its circuit breaker is not open.
    """
    explicit = report.get("healthy")
    if isinstance(explicit, bool):
        return explicit
    connected = report.get("connected")
    if not isinstance(connected, bool):
        connected = str(report.get("state", "")).lower() in _UP_STATES
    return connected and not report.get("circuit_breaker_open", False)


@dataclass(slots=True)
class _Entry:
    name: str
    client: SupportsHealth
    required: bool


def _describe(name: str, report: Mapping[str, Any], required: bool) -> str:
    kind = "required" if required else "optional"
    state = report.get("state", "unknown")
    detail = f"{kind} dependency {name!r} is down (state {state}"
    if report.get("circuit_breaker_open"):
        detail += ", circuit breaker open"
    pending = report.get("pending_events")
    if isinstance(pending, int) and pending:
        detail += f", {pending} pending events"
    error = report.get("last_error") or report.get("error")
    if error:
        detail += f", last error: {error}"
    return detail + ")"


class HealthRegistry:
    """The clients a service depends on, each required or optional, checked together.

    Args:
        service: optional service name, reported as ``service``.

    Example::

        health = HealthRegistry(service="orders")
        health.register(database)                      # required by default
        health.register(publisher, required=False)     # buffered while down
        health.check()["status"]                       # "healthy" | "degraded" | "unhealthy"
    """

    def __init__(self, service: str | None = None) -> None:
        self.service = service
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def register(
        self, client: SupportsHealth, *, name: str | None = None, required: bool | None = None
    ) -> SupportsHealth:
        """Add ``client`` and return it.

        Args:
            client: anything with ``health() -> dict``.
            name: the key in ``dependencies`` (default: the client's ``name`` attribute).
            required: whether the service is unhealthy without it (default: the client's own
                ``required`` — every :class:`~instrumented_clients.client.ResilientClient` has
                one, e.g. the publisher's ``RABBITMQ_REQUIRED`` — else True).

        Raises:
            TypeError: ``client`` has no callable ``health``.
            ValueError: no name could be found, or the name is taken.
        """
        if not callable(getattr(client, "health", None)):
            raise TypeError(f"client must have a health() method, got {client!r}")
        chosen = name if name is not None else getattr(client, "name", None)
        if not isinstance(chosen, str) or not chosen:
            raise ValueError(f"pass name= for a client without a name attribute: {client!r}")
        if required is None:
            own = getattr(client, "required", True)
            required = own if isinstance(own, bool) else True
        with self._lock:
            if chosen in self._entries:
                raise ValueError(f"a dependency named {chosen!r} is already registered")
            self._entries[chosen] = _Entry(chosen, client, required)
        return client

    def unregister(self, name: str) -> None:
        """Remove a dependency; unknown names are ignored."""
        with self._lock:
            self._entries.pop(name, None)

    @property
    def names(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._entries)

    def _report(self, entry: _Entry) -> dict[str, Any]:
        try:
            raw = entry.client.health()
            if isinstance(raw, HealthReport):
                raw = raw.to_dict()  # built once, not once per key
            if not isinstance(raw, Mapping):
                raise TypeError(f"health() returned {type(raw).__name__}, not a dict")
            report: dict[str, Any] = sanitize(raw)
        except Exception as error:  # a broken client must not break the whole health check
            _log.warning("health() of %r failed: %s", entry.name,
                         redact_text(f"{type(error).__name__}: {error}"))
            report = {
                "state": "unknown",
                "connected": False,
                "healthy": False,
                "error": redact_text(f"{type(error).__name__}: {error}"),
            }
        report["required"] = entry.required
        report["healthy"] = is_dependency_up(report)
        return report

    def check(self) -> dict[str, Any]:
        """Ask every dependency once and judge.

        Returns:
            ``{"status", "dependencies": {name: report}, "issues": [str], "checked_at"}``, plus
            ``service`` when set. Each report is the client's ``health()`` without credentials,
            with ``required`` and ``healthy`` added.
        """
        with self._lock:
            entries = list(self._entries.values())
        dependencies: dict[str, Any] = {}
        issues: list[str] = []
        status = HealthStatus.HEALTHY
        for entry in entries:
            report = self._report(entry)
            dependencies[entry.name] = report
            if report["healthy"]:
                continue
            issues.append(_describe(entry.name, report, entry.required))
            if entry.required:
                status = HealthStatus.UNHEALTHY
            elif status is HealthStatus.HEALTHY:
                status = HealthStatus.DEGRADED
        result: dict[str, Any] = {"status": status.value}
        if self.service is not None:
            result["service"] = self.service
        result.update(dependencies=dependencies, issues=issues, checked_at=time.time())
        return result

    def ready(self) -> bool:
        """False when a required dependency is down (``/ready`` answers 503)."""
        return bool(self.check()["status"] != HealthStatus.UNHEALTHY.value)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __repr__(self) -> str:
        return f"HealthRegistry({', '.join(self.names)})"


_default: HealthRegistry | None = None
_default_lock = threading.Lock()


def get_default_health_registry() -> HealthRegistry:
    """The process-wide registry that ``serve_metrics_and_health`` uses when given none."""
    global _default
    with _default_lock:
        if _default is None:
            _default = HealthRegistry()
        return _default
