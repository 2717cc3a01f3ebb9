"""Recording and alerting rules as plain data, from the metric catalog and one config object.

Alert style follows mixtool's lint: CamelCase names, ``severity`` critical / warning / info, a
``summary`` without templates ending in a period, a ``description`` with ``{{ $labels }}`` templates
and a ``runbook_url``. Every range, window, ``for:`` and ``keep_firing_for`` goes through
:meth:`ObservabilityConfig.duration`, so one time scale shrinks them all for end-to-end tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from instrumented_clients.observability.config import (
    DEFAULT_CONFIG,
    SYSTEM_DASHBOARDS,
    ObservabilityConfig,
)
from instrumented_clients.observability.slo import (
    PAGE_BURN,
    SLO_WINDOWS,
    TICKET_BURN,
    burn_expr,
    slo_rules,
)
from instrumented_clients.telemetry.catalog import ERROR_OUTCOMES, OPERATION_COUNT

__all__ = ["ALERT_NAMES", "SLO_WINDOWS", "Alert", "alerts", "build_rules", "recording_rules"]

ERRORS = "|".join(ERROR_OUTCOMES)
MINUTE = 60
# Which labels an alert keeps, and so which dashboard variables its dashboard_url sets.
INSTANCE = "instance"  # one client in one process: a per-process symptom
CLIENT = "client"  # one client across its processes: the SLO
JOB = "job"  # the scrape itself


@dataclass(frozen=True)
class Alert:
    """One alerting rule. ``for_seconds`` and ``keep_firing_seconds`` are unscaled.

    ``scope`` says which labels the alert keeps (:data:`INSTANCE`, :data:`CLIENT` or :data:`JOB`);
    ``dashboard`` is the stem of the dashboard its ``dashboard_url`` opens, or ``"system"`` for
    the dashboard of the alert's own system.
    """

    name: str
    expr: str
    severity: str
    summary: str
    description: str
    for_seconds: int = 0
    keep_firing_seconds: int = 0
    scope: str = INSTANCE
    dashboard: str = "overview"

    def to_rule(self, config: ObservabilityConfig) -> dict[str, Any]:
        rule: dict[str, Any] = {"alert": self.name, "expr": self.expr}
        if self.for_seconds:
            rule["for"] = config.duration(self.for_seconds)
        if self.keep_firing_seconds:
            rule["keep_firing_for"] = config.duration(self.keep_firing_seconds)
        rule["labels"] = {"severity": self.severity}
        rule["annotations"] = {
            "summary": self.summary,
            "description": self.description,
            "runbook_url": f"{config.runbook_url_base.rstrip('/')}/{self.name}.md",
            "dashboard_url": dashboard_url(config, self.dashboard, kept_labels(config,
                                                                               self.scope)),
        }
        return rule


def kept_labels(config: ObservabilityConfig, scope: str) -> tuple[str, ...]:
    """The labels an alert of ``scope`` keeps (besides ``severity``)."""
    if scope == INSTANCE:
        return config.labels("job", "instance", "system", "client")
    if scope == CLIENT:
        return config.labels("job", "system", "client")
    return ()


def _system_dashboard(config: ObservabilityConfig) -> str:
    """A Go template that picks the dashboard of ``$labels.system``."""
    systems_of: dict[str, list[str]] = {}
    for system, stem in SYSTEM_DASHBOARDS.items():
        systems_of.setdefault(stem, []).append(system)
    *choices, (fallback, _) = systems_of.items()
    text = ""
    for index, (stem, systems) in enumerate(choices):
        keyword = "if" if index == 0 else "else if"
        names = " ".join(_q(system) for system in systems)
        text += f"{{{{ {keyword} eq $labels.system {names} }}}}{config.dashboard_url(stem)}"
    return text + f"{{{{ else }}}}{config.dashboard_url(fallback)}{{{{ end }}}}"


def dashboard_url(config: ObservabilityConfig, stem: str, labels: tuple[str, ...]) -> str:
    """An alert template that renders to dashboard ``stem`` (``"system"``: the alert's system's)
    with its variables set to the alert's labels, URL-escaped."""
    base = _system_dashboard(config) if stem == "system" else config.dashboard_url(stem)
    query = "&".join(f"var-{label}={{{{ $labels.{label} | urlquery }}}}" for label in labels)
    return f"{base}?{query}" if query else base


class _Expr:
    """PromQL building blocks over one config."""

    def __init__(self, config: ObservabilityConfig) -> None:
        self.c = config
        self.by = config.instance_by

    def d(self, seconds: int) -> str:
        return self.c.duration(seconds)

    def series(self, name: str, *matchers: str) -> str:
        return self.c.series(name, *matchers)

    def rate_sum(self, name: str, seconds: int, *matchers: str, extra: str = "") -> str:
        by = ", ".join(x for x in (extra, self.by) if x)
        return f"sum by ({by}) (rate({self.series(name, *matchers)}[{self.d(seconds)}]))"

    def increase_sum(self, name: str, seconds: int, *matchers: str, extra: str = "") -> str:
        by = ", ".join(x for x in (self.by, extra) if x)
        return f"sum by ({by}) (increase({self.series(name, *matchers)}[{self.d(seconds)}]))"

    def traffic(self, seconds: int) -> str:
        """Operations per second: the minimum-traffic guard of the ratio alerts."""
        return (f"{self.rate_sum(OPERATION_COUNT, seconds, 'outcome!=' + _q('buffered'))} "
                f"> {self.c.min_operations_per_second:g}")

    def per_system(self, attribute: str, build: Callable[[str], str]) -> str:
        """``build(matcher) > threshold`` for each group of systems sharing a threshold.

        Systems with their own value get ``system=~"a|b"``; the rest share the default through
        ``system!~"..."``, so a system unknown to the config is still covered.
        """
        c = self.c
        default = getattr(c.default, attribute)
        groups: dict[float, list[str]] = {}
        for system in c.systems():
            groups.setdefault(getattr(c.for_system(system), attribute), []).append(system)
        special = {value: systems for value, systems in groups.items() if value != default}
        if not special:
            return f"(\n  {build('')}\n) > {default:g}"
        clauses = []
        for value, systems in special.items():
            matcher = "system=~" + _q("|".join(systems))
            clauses.append(f"(\n  {build(matcher)}\n) > {value:g}")
        others = "system!~" + _q("|".join(s for systems in special.values() for s in systems))
        clauses.append(f"(\n  {build(others)}\n) > {default:g}")
        return "(\n" + "\nor\n".join(clauses) + "\n)"


def _q(value: str) -> str:
    return f'"{value}"'


def recording_rules(config: ObservabilityConfig = DEFAULT_CONFIG) -> list[dict[str, Any]]:
    """The SLO's recording rules (see :mod:`instrumented_clients.observability.slo`)."""
    return slo_rules(config)


def _guarded(e: _Expr, ratio: str) -> str:
    return f"{ratio}\nand on ({e.by})\n{e.traffic(5 * MINUTE)}"


def alerts(config: ObservabilityConfig = DEFAULT_CONFIG) -> list[Alert]:
    """Every alert, in the order of the rules file."""
    e = _Expr(config)
    c = config
    whole = "{{ $labels.system }} client {{ $labels.client }} of job {{ $labels.job }}"
    who = whole + " on {{ $labels.instance }}"
    five = 5 * MINUTE

    def retry_ratio(matcher: str) -> str:
        return (f"{e.rate_sum('retries_total', five, matcher)}\n  /\n  "
                f"{e.rate_sum(OPERATION_COUNT, five, matcher, 'outcome!=' + _q('buffered'))}")

    def error_ratio(matcher: str) -> str:
        return (f"{e.rate_sum(OPERATION_COUNT, five, matcher, 'outcome=~' + _q(ERRORS))}\n  /\n"
                f"  {e.rate_sum(OPERATION_COUNT, five, matcher, 'outcome!=' + _q('buffered'))}")

    def p99(matcher: str) -> str:
        bucket = e.rate_sum('operation_duration_seconds_bucket', five, matcher, extra="le")
        return f"histogram_quantile(0.99, {bucket})"

    not_connected = _q("disconnected|connecting|failed")
    return [
        Alert(
            "ResilientClientConnectionDown",
            f"sum by ({e.by}) ({e.series('connection_state', 'state=~' + not_connected)}) > 0",
            "warning", "A resilient client has not been connected for 2 minutes.",
            f"The {who} has not been CONNECTED for 2 minutes; operations are buffered, retried "
            "or rejected until it reconnects.",
            for_seconds=2 * MINUTE,
        ),
        Alert(
            "ResilientClientConnectionFailed",
            f"sum by ({e.by}) ({e.series('connection_state', 'state=' + _q('failed'))}) > 0",
            "critical", "A resilient client spent its reconnect policy.",
            f"The {who} is FAILED: every reconnect attempt of its policy failed. It keeps trying "
            "at the capped interval.",
            for_seconds=1 * MINUTE,
        ),
        Alert(
            "ResilientClientCircuitBreakerOpen",
            f"sum by ({e.by}) ({e.series('circuit_breaker_state', 'state!=' + _q('closed'))}) > 0",
            "critical", "A circuit breaker has not been closed for 2 minutes.",
            f"The circuit breaker of the {who} has been open or half-open for 2 minutes: calls "
            "are refused without reaching the dependency.",
            for_seconds=2 * MINUTE,
        ),
        Alert(
            "ResilientClientCircuitBreakerFlapping",
            f"{e.increase_sum('circuit_breaker_transitions_total', 30 * MINUTE, 'to_state=' + _q('open'))} > 3",  # noqa: E501
            "warning", "A circuit breaker keeps opening.",
            f"The circuit breaker of the {who} opened {{{{ $value | humanize }}}} times in 30 "
            "minutes: the dependency is flapping.",
        ),
        Alert(
            "ResilientClientHighRetryRatio",
            _guarded(e, e.per_system("retry_ratio", retry_ratio)),
            "warning", "A resilient client retries a large share of its operations.",
            f"The {who} makes {{{{ $value | humanizePercentage }}}} retries per operation over "
            "5 minutes.",
            for_seconds=10 * MINUTE,
        ),
        Alert(
            "ResilientClientHighErrorRatio",
            _guarded(e, e.per_system("error_ratio", error_ratio)),
            "warning", "A resilient client fails a large share of its operations.",
            f"{{{{ $value | humanizePercentage }}}} of the operations of the {who} failed or "
            "were rejected over 5 minutes.",
            for_seconds=5 * MINUTE,
        ),
        Alert(
            "ResilientClientRetriesExhausted",
            f"{e.increase_sum('retries_exhausted_total', five, extra='operation')} > 0",
            "warning", "Operations fail after their last allowed retry.",
            f"{{{{ $value | humanize }}}} {{{{ $labels.operation }}}} operations of the {who} "
            "failed on their last attempt in 5 minutes.",
            for_seconds=5 * MINUTE,
        ),
        Alert(
            "ResilientClientRetryBudgetExhausted",
            f"{e.increase_sum('retry_budget_denied_total', five)} > 0",
            "warning", "Retries are refused because the retry budget is spent.",
            f"The {who} was refused {{{{ $value | humanize }}}} retries in 5 minutes by its "
            "retry budget: the dependency is failing for many callers at once.",
            for_seconds=5 * MINUTE,
        ),
        Alert(
            "ResilientClientEventsDropped",
            f"{e.increase_sum('buffer_dropped_events_total', five, extra='reason')} > 0",
            "critical", "Buffered events were dropped: data was lost.",
            f"The {who} dropped {{{{ $value | humanize }}}} buffered events "
            "(reason {{ $labels.reason }}) in 5 minutes. They will not be delivered.",
            keep_firing_seconds=10 * MINUTE,
        ),
        Alert(
            "ResilientClientBufferNearlyFull",
            f"max by ({e.by}) (\n  {e.series('buffer_events')}\n  /\n  "
            f"{e.series('buffer_capacity_events')}\n) > {c.buffer_full_ratio:g}",
            "warning", "An event buffer is nearly full.",
            f"The buffer of the {who} is {{{{ $value | humanizePercentage }}}} full; events "
            "will be dropped when it overflows.",
            for_seconds=2 * MINUTE,
        ),
        Alert(
            "ResilientClientPublishNacked",
            f"{e.increase_sum('publish_confirms_total', five, 'outcome=~' + _q('nack|timeout'), extra='outcome')} > 0",  # noqa: E501
            "warning", "The broker nacked publishes or did not confirm them in time.",
            f"{{{{ $value | humanize }}}} publishes of the {who} ended as "
            "{{ $labels.outcome }} in 5 minutes.",
            dashboard="rabbitmq",
        ),
        Alert(
            "ResilientClientUnroutableMessages",
            f"{e.increase_sum('publish_confirms_total', five, 'outcome=' + _q('returned'))} > 0",
            "warning", "Published messages were returned as unroutable.",
            f"The broker returned {{{{ $value | humanize }}}} messages of the {who} in 5 "
            "minutes: no queue is bound for their routing key.",
            dashboard="rabbitmq",
        ),
        Alert(
            "ResilientClientReconnectChurn",
            f"{e.increase_sum('reconnect_attempts_total', 30 * MINUTE, 'outcome=' + _q('success'))} > 5",  # noqa: E501
            "warning", "A resilient client keeps losing its connection.",
            f"The {who} reconnected {{{{ $value | humanize }}}} times in 30 minutes.",
        ),
        Alert(
            "ResilientClientHighP99Latency",
            _guarded(e, e.per_system("p99_latency_seconds", p99)),
            "warning", "Operations of a resilient client are slow.",
            f"The p99 operation latency of the {who} is {{{{ $value | humanizeDuration }}}} "
            "over 5 minutes.",
            for_seconds=10 * MINUTE,
        ),
        Alert(
            "ResilientClientPoolSaturated",
            f"sum by ({e.by}) ({e.series('pool_connections', 'state=' + _q('in_use'))})\n/\n"
            f"sum by ({e.by}) ({e.series('pool_max_connections')})\n"
            f">= {c.pool_saturation_ratio:g}",
            "warning", "A connection pool is saturated.",
            f"The pool of the {who} has {{{{ $value | humanizePercentage }}}} of its connections "
            "in use; callers wait for a connection.",
            for_seconds=5 * MINUTE,
            dashboard="system",
        ),
        Alert(
            "ResilientClientConnectionBlocked",
            f"max by ({e.by}) ({e.series('connection_blocked')}) > 0",
            "warning", "The broker is blocking a connection.",
            f"The broker has blocked the connection of the {who} for 5 minutes (memory or disk "
            "alarm); publishes wait in the buffer.",
            for_seconds=5 * MINUTE,
            dashboard="rabbitmq",
        ),
        Alert(
            "ResilientClientIllegalTransitions",
            f"{e.increase_sum('illegal_transitions_total', 60 * MINUTE)} > 0",
            "info", "A client attempted an illegal connection state transition.",
            f"The {who} attempted {{{{ $value | humanize }}}} illegal state transitions in an "
            "hour: a bug in the client, worth a report.",
        ),
        Alert(
            "ResilientClientErrorBudgetBurnFast",
            burn_expr(config, PAGE_BURN),
            "critical", "A resilient client burns its error budget fast.",
            f"The {whole} fails {{{{ $value | humanizePercentage }}}} of its operations: at this "
            "rate its 30-day error budget is gone in days (14.4x over 5m and 1h, or 6x over 30m "
            "and 6h).",
            for_seconds=2 * MINUTE, scope=CLIENT, dashboard="slo",
        ),
        Alert(
            "ResilientClientErrorBudgetBurnSlow",
            burn_expr(config, TICKET_BURN),
            "warning", "A resilient client burns its error budget steadily.",
            f"The {whole} fails {{{{ $value | humanizePercentage }}}} of its operations, burning "
            "its error budget faster than it refills (3x over 2h and 1d, or 1x over 6h and 3d).",
            for_seconds=15 * MINUTE, scope=CLIENT, dashboard="slo",
        ),
        Alert(
            "ResilientClientMetricsAbsent",
            f"absent({e.series(OPERATION_COUNT)})",
            "warning", "No resilient client metrics are scraped.",
            f"Prometheus has scraped no {c.metric(OPERATION_COUNT)} series"
            "{{ with $labels.job }} of job {{ . }}{{ end }} for 15 minutes: the services are "
            "down, not scraped, or no longer instrumented.",
            for_seconds=15 * MINUTE, scope=JOB,
        ),
    ]


ALERT_NAMES: tuple[str, ...] = tuple(alert.name for alert in alerts())


def build_rules(config: ObservabilityConfig = DEFAULT_CONFIG) -> dict[str, Any]:
    """The rules file as data: one recording group, one alerting group."""
    return {
        "groups": [
            {"name": "resilient-clients-slo.rules", "rules": recording_rules(config)},
            {"name": "resilient-clients.alerts",
             "rules": [alert.to_rule(config) for alert in alerts(config)]},
        ]
    }
