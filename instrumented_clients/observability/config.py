"""The one configuration object of the dashboards and alert rules (a mixin's ``_config``).

Everything a deployment may want to tune lives here: the metric namespace, the job selector, the
extra grouping labels (``cluster``, ``namespace``), the per-system thresholds of the ratio alerts,
the minimum-traffic guard, the SLO objectives (per system, overridden per client), the runbook and
Grafana base URLs, and the time scale that end-to-end tests use to make ``for: 2m`` fire in seconds.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Any

from instrumented_clients.config import ConfigError
from instrumented_clients.telemetry.catalog import DEFAULT_NAMESPACE, METRICS, SQL_SYSTEMS, SYSTEMS

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_GRAFANA_URL",
    "DEFAULT_RUNBOOK_URL_BASE",
    "SYSTEM_DASHBOARDS",
    "ObservabilityConfig",
    "SystemThresholds",
    "format_duration",
]

_NAMESPACE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_ABSOLUTE_URL = re.compile(r"^https?://[^/\s]+(/\S*)?$")

DEFAULT_RUNBOOK_URL_BASE = (
    "https://github.com/instrumented-clients/instrumented-clients/blob/main/docs/runbooks"
)
"""Where ``runbook_url`` points by default: this project's own runbook pages."""
DEFAULT_GRAFANA_URL = "http://localhost:3000"
"""The Grafana of the docker-compose stack; ``dashboard_url`` starts here by default."""


@dataclass(frozen=True)
class SystemThresholds:
    """Alert thresholds for one ``system``.

    Args:
        retry_ratio: retries per operation above which ``HighRetryRatio`` fires.
        error_ratio: share of failed operations above which ``HighErrorRatio`` fires.
        p99_latency_seconds: p99 operation latency above which ``HighP99Latency`` fires.
        slo_objective: share of operations that must succeed (0.999 = 99.9 %).
    """

    retry_ratio: float = 0.1
    error_ratio: float = 0.05
    p99_latency_seconds: float = 1.0
    slo_objective: float = 0.999


SYSTEM_DASHBOARDS: dict[str, str] = {
    "rabbitmq": "rabbitmq", "redis": "redis", **dict.fromkeys(SQL_SYSTEMS, "sql"),
}
"""The dashboard (file stem) that shows each system's clients in detail."""
assert set(SYSTEM_DASHBOARDS) == set(SYSTEMS)


_DEFAULT_THRESHOLDS: dict[str, SystemThresholds] = {
    # A loopback Redis answers in ~80 µs: a p99 of 100 ms already means trouble.
    "redis": SystemThresholds(p99_latency_seconds=0.1),
    # A confirmed publish waits for the broker's fsync.
    "rabbitmq": SystemThresholds(p99_latency_seconds=1.0),
    "postgresql": SystemThresholds(p99_latency_seconds=0.5),
    "mysql": SystemThresholds(p99_latency_seconds=0.5),
    "mariadb": SystemThresholds(p99_latency_seconds=0.5),
    "sqlite": SystemThresholds(p99_latency_seconds=0.5),
}


def format_duration(seconds: float) -> str:
    """``seconds`` as a Prometheus duration (``2m``, ``1h30m``, ``2s``), rounded up to 1 s."""
    total = max(1, math.ceil(round(seconds, 6)))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


@dataclass(frozen=True)
class ObservabilityConfig:
    """Settings shared by the dashboard and rule generators.

    Args:
        namespace: metric name prefix (the catalog's ``resilient_client`` by default).
        job_selector: label matchers that pick the scraped services, e.g. ``job=~"orders.*"``;
            empty selects every job.
        thresholds: per-system :class:`SystemThresholds`; systems not listed use ``default``.
        default: thresholds for a system missing from ``thresholds``.
        min_operations_per_second: ratio alerts stay silent below this traffic, so one failure
            out of two calls does not page.
        buffer_full_ratio: buffer depth over capacity above which ``BufferNearlyFull`` fires.
        pool_saturation_ratio: connections in use over the pool's maximum that counts as saturated.
        runbook_url_base: absolute URL of the runbook pages (``<base>/<AlertName>.md``); point it
            at your own copy (a fork, a wiki) to edit the pages.
        grafana_url: absolute URL of the Grafana that serves the dashboards; every alert's
            ``dashboard_url`` is a dashboard there, filtered to the alert's labels.
        grouping_labels: labels above ``job`` that every aggregation, alert and dashboard keeps
            (e.g. ``("cluster", "namespace")`` when one Prometheus sees several clusters).
        client_objectives: SLO objective per client name, overriding its system's
            ``slo_objective`` (``{"payments": 0.9999}``).
        slo_period_days: the SLO period: the error budget is counted over this many days.
        time_scale: multiplies every ``for:``, range and window (results rounded up to whole
            seconds); 1.0 in production, about 0.02 in end-to-end tests.
        dashboard_prefix: prefix of dashboard uids and titles.
    """

    namespace: str = DEFAULT_NAMESPACE
    job_selector: str = ""
    thresholds: dict[str, SystemThresholds] = field(
        default_factory=lambda: dict(_DEFAULT_THRESHOLDS)
    )
    default: SystemThresholds = SystemThresholds()
    min_operations_per_second: float = 0.1
    buffer_full_ratio: float = 0.8
    pool_saturation_ratio: float = 0.9
    runbook_url_base: str = DEFAULT_RUNBOOK_URL_BASE
    grafana_url: str = DEFAULT_GRAFANA_URL
    grouping_labels: tuple[str, ...] = ()
    client_objectives: dict[str, float] = field(default_factory=dict)
    slo_period_days: int = 30
    time_scale: float = 1.0
    dashboard_prefix: str = "resilient-clients"

    def __post_init__(self) -> None:
        if not isinstance(self.namespace, str) or (
            self.namespace and not _NAMESPACE.match(self.namespace)
        ):
            raise ValueError(
                f"namespace must be a Prometheus metric name prefix ([a-zA-Z_:][a-zA-Z0-9_:]*), "
                f"got {self.namespace!r}"
            )
        if (
            isinstance(self.time_scale, bool)
            or not isinstance(self.time_scale, (int, float))
            or not 0 < self.time_scale <= 1000
        ):
            raise ValueError(f"time_scale must be a number in (0, 1000], got {self.time_scale!r}")
        for system, limits in self.thresholds.items():
            if not 0 < limits.slo_objective < 1:
                raise ValueError(
                    f"slo_objective for {system!r} must be between 0 and 1 (0.999 = 99.9 %), "
                    f"got {limits.slo_objective!r}"
                )
        for client, objective in self.client_objectives.items():
            if not isinstance(objective, float) or not 0 < objective < 1:
                raise ConfigError(f"client_objectives[{client!r}]", str(objective),
                                  "a float between 0 and 1 (0.999 = 99.9 %)")
        for name in ("runbook_url_base", "grafana_url"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _ABSOLUTE_URL.match(value):
                raise ConfigError(name, str(value), "an absolute http(s) URL")
        taken = {"job", "instance", "le"} | {label for spec in METRICS for label in spec.labels}
        if isinstance(self.grouping_labels, str):
            raise ConfigError("grouping_labels", str(self.grouping_labels),
                              "a tuple of label names, e.g. ('cluster', 'namespace')")
        for label in self.grouping_labels:
            if not isinstance(label, str) or not _LABEL.match(label) or label in taken:
                raise ConfigError("grouping_labels", str(self.grouping_labels),
                                  "Prometheus label names other than job, instance and the "
                                  "metric labels")
        if (isinstance(self.slo_period_days, bool) or not isinstance(self.slo_period_days, int)
                or not 1 <= self.slo_period_days <= 365):
            raise ConfigError("slo_period_days", str(self.slo_period_days),
                              "a whole number of days from 1 to 365")

    # -- names and selectors ----------------------------------------------------------------------

    def metric(self, name: str) -> str:
        """The full metric name of catalog entry ``name``."""
        return f"{self.namespace}_{name}" if self.namespace else name

    def selector(self, *matchers: str) -> str:
        """``{job_selector, matchers...}``; empty braces are left out."""
        parts = [m for m in (self.job_selector, *matchers) if m]
        return "{" + ", ".join(parts) + "}" if parts else ""

    def series(self, name: str, *matchers: str) -> str:
        """``metric{selector}`` for catalog entry ``name``."""
        return self.metric(name) + self.selector(*matchers)

    def record(self, what: str, level: str = "job_system_client") -> str:
        """A recording rule's name, ``level:namespace_metric:operations``."""
        return f"{level}:{self.namespace or 'resilient_client'}_{what}"

    def labels(self, *names: str) -> tuple[str, ...]:
        """The grouping labels, then ``names``: the aggregation keys of one level."""
        return (*self.grouping_labels, *names)

    @property
    def client_by(self) -> str:
        """``by`` clause of a client as a whole, across its processes (SLOs, burn rates)."""
        return ", ".join(self.labels("job", "system", "client"))

    @property
    def instance_by(self) -> str:
        """``by`` clause of one client in one process (connection, breaker, buffer...)."""
        return ", ".join(self.labels("job", "instance", "system", "client"))

    def objective(self, system: str, client: str | None = None) -> float:
        """The SLO objective of ``client`` (its own, else its system's)."""
        if client is not None and client in self.client_objectives:
            return self.client_objectives[client]
        return self.for_system(system).slo_objective

    def dashboard_uid(self, stem: str) -> str:
        """The uid of dashboard ``stem`` (``overview``, ``redis``, ...)."""
        return f"{self.dashboard_prefix}-{stem}"[:40]

    def dashboard_url(self, stem: str) -> str:
        """The absolute URL of dashboard ``stem`` on :attr:`grafana_url`."""
        return f"{self.grafana_url.rstrip('/')}/d/{self.dashboard_uid(stem)}"

    # -- thresholds -----------------------------------------------------------------------------

    def for_system(self, system: str) -> SystemThresholds:
        return self.thresholds.get(system, self.default)

    def systems(self) -> tuple[str, ...]:
        """Every system with a threshold row, catalog order first."""
        known = [s for s in SYSTEMS if s in self.thresholds]
        return (*known, *sorted(set(self.thresholds) - set(known)))

    # -- time -----------------------------------------------------------------------------------

    def duration(self, seconds: float) -> str:
        """A scaled Prometheus duration for a range, window or ``for:``."""
        return format_duration(seconds * self.time_scale)

    def with_changes(self, **changes: Any) -> ObservabilityConfig:
        return replace(self, **changes)


DEFAULT_CONFIG = ObservabilityConfig()
