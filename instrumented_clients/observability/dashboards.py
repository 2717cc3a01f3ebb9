"""The five dashboards, each a list of panels built from the metric catalog.

``overview`` (health at a glance), ``rabbitmq``, ``redis``, ``sql`` and ``slo``. Every query
filters on the ``job``, ``system`` and ``client`` variables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from instrumented_clients.observability.config import DEFAULT_CONFIG, ObservabilityConfig
from instrumented_clients.observability.panels import (
    Panel,
    Query,
    build_dashboard,
    row,
    stat,
    state_timeline,
    timeseries,
)
from instrumented_clients.telemetry.catalog import (
    BREAKER_STATES,
    CONNECTION_STATES,
    ERROR_OUTCOMES,
    SQL_SYSTEMS,
)

__all__ = ["DASHBOARDS", "build_all"]

_SEL = 'job=~"$job", system=~"$system", client=~"$client"'
_RATE = "$__rate_interval"
ERRORS = "|".join(ERROR_OUTCOMES)

CONNECTION_COLOURS = {
    "connected": "green", "connecting": "yellow", "disconnected": "orange", "failed": "red",
    "closing": "purple", "closed": "text",
}
BREAKER_COLOURS = {"closed": "green", "half_open": "yellow", "open": "red"}


class _Queries:
    """PromQL snippets over one config's metric names and the dashboard's variables."""

    def __init__(self, config: ObservabilityConfig) -> None:
        self.c = config

    def s(self, name: str, *matchers: str) -> str:
        return self.c.series(name, _SEL, *matchers)

    def rate(self, name: str, by: str, *matchers: str, window: str = _RATE) -> str:
        return f"sum by ({by}) (rate({self.s(name, *matchers)}[{window}]))"

    def increase(self, name: str, by: str, *matchers: str, window: str = _RATE) -> str:
        return f"sum by ({by}) (increase({self.s(name, *matchers)}[{window}]))"

    def quantile(self, q: float, name: str, by: str, *matchers: str) -> str:
        return (f"histogram_quantile({q}, sum by (le, {by}) "
                f"(rate({self.s(name + '_bucket', *matchers)}[{_RATE}])))")

    def state_code(self, name: str, states: Sequence[str], by: str) -> str:
        """One series per (by) whose value is the index of its current state in ``states``: the
        gauge has one series per state, 1 for the current one."""
        parts = [f"({self.s(name, _eq('state', state))} == 1) * 0 + {i}"
                 for i, state in enumerate(states)]
        return f"max by ({by}) (\n  " + "\n  or ".join(parts) + "\n)"

    def ratio(self, numerator: str, denominator: str) -> str:
        return f"{numerator}\n/\n{denominator}"


def _eq(label: str, value: str, op: str = "=") -> str:
    return f'{label}{op}"{value}"'


def _states(states: Sequence[str], colours: dict[str, str]) -> list[tuple[int, str, str]]:
    return [(i, state, colours[state]) for i, state in enumerate(states)]


def _latency_panel(q: _Queries, title: str, by: str, *matchers: str,
                   width: int = 12) -> Panel:
    legend = "{{" + "}} {{".join(part.strip() for part in by.split(",")) + "}}"
    return timeseries(
        title,
        [Query(q.quantile(quantile, "operation_duration_seconds", by, *matchers),
               f"p{round(quantile * 100)} {legend}", exemplar=True)
         for quantile in (0.5, 0.9, 0.99)],
        unit="s", width=width,
        description="Whole logical operations, retries and backoff included. Exemplars link a "
                    "slow call to its trace.",
    )


def _connection_panels(q: _Queries) -> list[Panel]:
    return [
        state_timeline(
            "Connection state",
            [Query(q.state_code("connection_state", CONNECTION_STATES, "system, client"),
                   "{{system}} {{client}}")],
            states=_states(CONNECTION_STATES, CONNECTION_COLOURS),
            description="One bar per client: an outage is a red or orange stretch.",
        ),
        state_timeline(
            "Circuit breaker state",
            [Query(q.state_code("circuit_breaker_state", BREAKER_STATES, "system, client"),
                   "{{system}} {{client}}")],
            states=_states(BREAKER_STATES, BREAKER_COLOURS),
            description="Open: calls are refused without touching the network.",
        ),
    ]


def _buffer_panels(q: _Queries) -> list[Panel]:
    return [
        timeseries("Buffer depth and capacity", [
            Query(f"sum by (system, client) ({q.s('buffer_events')})", "held {{client}}"),
            Query(f"sum by (system, client) ({q.s('buffer_capacity_events')})",
                  "capacity {{client}}"),
        ], description="Events held while the dependency is down."),
        timeseries("Buffered, flushed and dropped events", [
            Query(q.rate("buffered_events_total", "system, client"), "buffered {{client}}"),
            Query(q.rate("buffer_flushed_events_total", "system, client"), "flushed {{client}}"),
            Query(q.rate("buffer_dropped_events_total", "system, client, reason"),
                  "dropped ({{reason}}) {{client}}"),
        ], unit="ops", description="Any drop is data loss."),
    ]


def overview(config: ObservabilityConfig) -> list[Panel]:
    q = _Queries(config)
    ops = "operations_total"
    return [
        row("Health at a glance"),
        stat("Clients not connected", [Query(
            f"count(sum by (job, system, client) "
            f"({q.s('connection_state', _eq('state', 'disconnected|connecting|failed', '=~'))})"
            " > 0) or vector(0)")],
            thresholds=((None, "green"), (1, "red"))),
        stat("Breakers not closed", [Query(
            f"count(sum by (job, system, client) "
            f"({q.s('circuit_breaker_state', _eq('state', 'closed', '!='))}) > 0) or vector(0)")],
            thresholds=((None, "green"), (1, "red"))),
        stat("Events dropped in range", [Query(
            f"sum(increase({q.s('buffer_dropped_events_total')}[$__range]))")],
            thresholds=((None, "green"), (1, "red")),
            description="Any drop is data loss (ResilientClientEventsDropped)."),
        stat("Illegal state transitions", [Query(f"sum({q.s('illegal_transitions_total')})")],
             thresholds=((None, "green"), (1, "orange")),
             description="A bug in a client: should stay 0."),
        row("Connections and breakers"),
        *_connection_panels(q),
        timeseries("Reconnect attempts", [
            Query(q.increase("reconnect_attempts_total", "system, client, outcome"),
                  "{{client}} {{outcome}}"),
        ], bars=True, width=6),
        timeseries("Connection transitions", [
            Query(q.increase("connection_transitions_total", "system, client, to_state"),
                  "to {{to_state}} {{client}}"),
        ], bars=True, width=6),
        timeseries("Reconnect duration", [
            Query(q.quantile(0.5, "reconnect_duration_seconds", "system, client"),
                  "p50 {{client}}"),
            Query(q.quantile(0.99, "reconnect_duration_seconds", "system, client"),
                  "p99 {{client}}"),
        ], unit="s", width=6, description="From losing the connection to connected again."),
        timeseries("Breaker transitions and rejections", [
            Query(q.increase("circuit_breaker_transitions_total", "system, client, to_state"),
                  "to {{to_state}} {{client}}"),
            Query(q.rate("circuit_breaker_rejections_total", "system, client"),
                  "rejected/s {{client}}"),
        ], width=6),
        row("Operations"),
        timeseries("Operations by outcome", [
            Query(q.rate(ops, "system, outcome"), "{{system}} {{outcome}}"),
        ], unit="ops", stacked=True),
        timeseries("Error ratio", [Query(q.ratio(
            q.rate(ops, "system, client", f'outcome=~"{ERRORS}"'),
            q.rate(ops, "system, client", 'outcome!="buffered"')), "{{system}} {{client}}")],
            unit="percentunit",
            description="failure, failure_after_retry and rejected over all settled operations."),
        timeseries("Retry ratio", [Query(q.ratio(
            q.rate("retries_total", "system, client"),
            q.rate(ops, "system, client", 'outcome!="buffered"')), "{{system}} {{client}}")],
            unit="percentunit", description="Retries per operation."),
        timeseries("Retries by error type", [
            Query(q.rate("retries_total", "system, client, error_type"),
                  "{{client}} {{error_type}}"),
            Query(q.rate("retries_exhausted_total", "system, client"), "exhausted {{client}}"),
            Query(q.rate("retry_budget_denied_total", "system, client"),
                  "budget denied {{client}}"),
        ], unit="ops"),
        _latency_panel(q, "Operation latency", "system, client", width=24),
        row("Buffer"),
        *_buffer_panels(q),
    ]


def rabbitmq(config: ObservabilityConfig) -> list[Panel]:
    q = _Queries(config)
    ops = "operations_total"
    return [
        row("Publishing"),
        timeseries("Publishes by outcome", [
            Query(q.rate(ops, "client, outcome", 'operation="publish"'),
                  "{{client}} {{outcome}}"),
        ], unit="ops", stacked=True),
        timeseries("Publisher confirms by outcome", [
            Query(q.rate("publish_confirms_total", "client, outcome"), "{{client}} {{outcome}}"),
        ], unit="ops", stacked=True,
            description="ack: stored. nack/timeout: the broker did not take it. returned: "
                        "unroutable."),
        stat("Returned (unroutable) in range", [Query(
            f"sum(increase({q.s('publish_confirms_total', _eq('outcome', 'returned'))}"
            "[$__range]))")],
            thresholds=((None, "green"), (1, "orange")), width=6),
        stat("Re-sent after reconnect in range", [Query(
            f"sum(increase({q.s('publish_resent_total')}[$__range]))")], width=6),
        stat("Connection blocked", [Query(
            f"max({q.s('connection_blocked')}) or vector(0)")],
            thresholds=((None, "green"), (1, "red")), width=6,
            description="1 while the broker's memory or disk alarm blocks publishing."),
        stat("Buffered now", [Query(f"sum({q.s('buffer_events')})")], width=6),
        _latency_panel(q, "Publish latency", "client", 'operation="publish"'),
        timeseries("Re-sent after reconnect", [
            Query(q.increase("publish_resent_total", "client"), "{{client}}"),
        ], bars=True),
        row("Buffer"),
        *_buffer_panels(q),
        row("Consuming"),
        timeseries("Consumer outcomes", [
            Query(q.rate("consumed_messages_total", "client, outcome"), "{{client}} {{outcome}}"),
        ], unit="ops", stacked=True),
        _latency_panel(q, "Handler latency", "client", 'operation="process"'),
        row("Connection"),
        *_connection_panels(q),
        timeseries("Reconnect attempts", [
            Query(q.increase("reconnect_attempts_total", "client, outcome"),
                  "{{client}} {{outcome}}"),
        ], bars=True),
        timeseries("Connection blocked", [
            Query(f"max by (client) ({q.s('connection_blocked')})", "{{client}}"),
        ]),
    ]


def _pool_panels(q: _Queries) -> list[Panel]:
    return [
        timeseries("Pool connections", [
            Query(f"sum by (client, state) ({q.s('pool_connections')})",
                  "{{client}} {{state}}"),
            Query(f"sum by (client) ({q.s('pool_max_connections')})", "{{client}} max"),
        ], width=12, stacked=False),
        timeseries("Pool wait", [
            Query(q.quantile(0.99, "pool_wait_seconds", "client"), "p99 {{client}}"),
            Query(q.quantile(0.5, "pool_wait_seconds", "client"), "p50 {{client}}"),
        ], unit="s", width=12, description="Time to get a connection from the pool."),
    ]


def _datastore(config: ObservabilityConfig, extra: Sequence[Panel] = ()) -> list[Panel]:
    q = _Queries(config)
    ops = "operations_total"
    return [
        row("Operations"),
        timeseries("Operations by operation and outcome", [
            Query(q.rate(ops, "client, operation, outcome"),
                  "{{client}} {{operation}} {{outcome}}"),
        ], unit="ops", stacked=True),
        timeseries("Retries by operation and error type", [
            Query(q.rate("retries_total", "client, operation, error_type"),
                  "{{client}} {{operation}} {{error_type}}"),
            Query(q.rate("retries_exhausted_total", "client, operation"),
                  "exhausted {{client}} {{operation}}"),
        ], unit="ops"),
        _latency_panel(q, "Latency by operation", "client, operation", width=24),
        *extra,
        row("Pool"),
        *_pool_panels(q),
        row("Connection and breaker"),
        *_connection_panels(q),
        timeseries("Breaker rejections", [
            Query(q.rate("circuit_breaker_rejections_total", "client"), "{{client}}"),
        ], unit="ops"),
        timeseries("Reconnect attempts", [
            Query(q.increase("reconnect_attempts_total", "client, outcome"),
                  "{{client}} {{outcome}}"),
        ], bars=True),
    ]


def redis(config: ObservabilityConfig) -> list[Panel]:
    return _datastore(config)


def sql(config: ObservabilityConfig) -> list[Panel]:
    q = _Queries(config)
    transaction = 'operation="transaction"'
    return _datastore(config, [
        timeseries("Transaction retries by error type", [
            Query(q.increase("retries_total", "client, error_type", transaction),
                  "{{client}} {{error_type}}"),
        ], bars=True, description="Serialization failures and deadlocks re-run the whole "
                                  "transaction."),
        timeseries("Transaction outcomes", [
            Query(q.rate("operations_total", "client, outcome", transaction),
                  "{{client}} {{outcome}}"),
        ], unit="ops", stacked=True),
    ])


def slo(config: ObservabilityConfig) -> list[Panel]:
    q = _Queries(config)
    objective = config.record("slo_objective:ratio", level="system")
    sel = 'job=~"$job", system=~"$system", client=~"$client"'
    panels: list[Panel] = [row("Error budget")]
    ratio_1d = config.record("operations_errors:ratio_rate1d")
    ratio_3d = config.record("operations_errors:ratio_rate3d")
    panels += [
        stat("Objective", [Query(f'max by (system) ({objective}{{system=~"$system"}})',
                                 "{{system}}")], unit="percentunit", width=6),
        stat("Availability (3d)", [Query(f"1 - max by (system, client) ({ratio_3d}{{{sel}}})",
                                         "{{system}} {{client}}")],
             unit="percentunit", width=6, thresholds=((None, "red"), (0.999, "green"))),
        stat("Error budget remaining (3d)", [Query(
            f"1 - max by (system, client) ({ratio_3d}{{{sel}}}) / on (system) group_left () "
            f'(1 - max by (system) ({objective}{{system=~"$system"}}))',
            "{{system}} {{client}}")],
            unit="percentunit", width=12,
            thresholds=((None, "red"), (0.25, "orange"), (0.5, "green")),
            description="1 = untouched, 0 = spent, negative = objective missed."),
        timeseries("Error ratio over 1d", [Query(f"{ratio_1d}{{{sel}}}", "{{system}} {{client}}")],
                   unit="percentunit"),
        timeseries("Errors and operations", [
            Query(q.rate("operations_total", "system, client", f'outcome=~"{ERRORS}"'),
                  "errors {{client}}"),
            Query(q.rate("operations_total", "system, client", 'outcome!="buffered"'),
                  "operations {{client}}"),
        ], unit="ops"),
        row("Burn rates (1 = spending the budget exactly over the SLO period)"),
    ]
    for window in ("5m", "30m", "1h", "2h", "6h", "1d", "3d"):
        recorded = config.record(f"operations_errors:ratio_rate{window}")
        panels.append(timeseries(f"Burn rate {window}", [Query(
            f"max by (system, client) ({recorded}{{{sel}}}) / on (system) group_left () "
            f'(1 - max by (system) ({objective}{{system=~"$system"}}))',
            "{{system}} {{client}}")], width=6, height=6))
    panels.append(timeseries("Page thresholds: 14.4x (5m & 1h), 6x (30m & 6h)", [
        Query("vector(14.4)", "14.4x"), Query("vector(6)", "6x"),
        Query("vector(3)", "3x (ticket)"), Query("vector(1)", "1x (ticket)"),
    ], width=6, height=6))
    return panels


_SQL_REGEX = "|".join(SQL_SYSTEMS)
_Builder = Callable[[ObservabilityConfig], list[Panel]]
DASHBOARDS: dict[str, tuple[str, str, str, _Builder]] = {
    "overview": ("Resilient clients / Overview", ".*",
                 "Health of every resilient client at a glance.", overview),
    "rabbitmq": ("Resilient clients / RabbitMQ", "rabbitmq",
                 "Publishers, confirms, the buffer, consumers and reconnects.", rabbitmq),
    "redis": ("Resilient clients / Redis", "redis",
              "Commands, retries, latency, pool and breaker of Redis clients.", redis),
    "sql": ("Resilient clients / SQL", _SQL_REGEX,
            "Statements, transaction retries and the connection pool of SQL clients.", sql),
    "slo": ("Resilient clients / SLO", ".*",
            "Error budget and multi-window burn rates of the operation SLO.", slo),
}


def build_all(config: ObservabilityConfig = DEFAULT_CONFIG) -> dict[str, dict[str, Any]]:
    """Every dashboard as JSON-ready data, keyed by file stem."""
    out = {}
    for stem, (title, system_regex, description, panels) in DASHBOARDS.items():
        out[stem] = build_dashboard(
            uid=f"{config.dashboard_prefix}-{stem}"[:40],
            title=title,
            description=description,
            panels=panels(config),
            variable_metric=config.metric("operations_total"),
            job_selector=config.job_selector,
            system_regex=system_regex,
            tags=["resilient-clients", stem],
        )
    return out
