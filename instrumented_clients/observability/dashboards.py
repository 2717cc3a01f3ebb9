"""The five dashboards, each a list of panels built from the metric catalog.

``overview`` (health at a glance), ``rabbitmq``, ``redis``, ``sql`` and ``slo``. Every query
filters on the grouping, ``job``, ``instance``, ``system`` and ``client`` variables (the SLO's
recorded series are per client across instances, so they ignore ``instance``). Each dashboard
links to the other four with the time range and variables; on the overview, a client's series
links to its system's dashboard.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from instrumented_clients.observability.config import (
    DEFAULT_CONFIG,
    SYSTEM_DASHBOARDS,
    ObservabilityConfig,
)
from instrumented_clients.observability.panels import (
    DataLink,
    Panel,
    Query,
    alerts_annotation,
    build_dashboard,
    dashboard_link,
    row,
    stat,
    state_timeline,
    timeseries,
)
from instrumented_clients.observability.queries import Queries, eq
from instrumented_clients.observability.slo import period_window
from instrumented_clients.telemetry.catalog import (
    BREAKER_STATES,
    CONNECTION_STATES,
    ERROR_OUTCOMES,
    OPERATION_COUNT,
    SQL_SYSTEMS,
)

__all__ = ["DASHBOARDS", "build_all"]

ERRORS = "|".join(ERROR_OUTCOMES)
_EXTRAPOLATED = ("increase() extrapolates to the edges of its window, so a count is rounded to "
                 "the nearest whole event.")

CONNECTION_COLOURS = {
    "connected": "green", "connecting": "yellow", "disconnected": "orange", "failed": "red",
    "closing": "purple", "closed": "text",
}
BREAKER_COLOURS = {"closed": "green", "half_open": "yellow", "open": "red"}


def _states(states: Sequence[str], colours: dict[str, str]) -> list[tuple[int, str, str]]:
    return [(i, state, colours[state]) for i, state in enumerate(states)]


def _client_links(config: ObservabilityConfig) -> list[DataLink]:
    """From a client's series to its system's dashboard, narrowed to that client and process."""
    carried = "&".join(f"${{{name}:queryparam}}" for name in ("datasource", *config.labels("job")))
    return [DataLink(
        "${__field.labels.client} on its system's dashboard",
        "/d/${__field.labels.dashboard}?var-system=${__field.labels.system}"
        "&var-client=${__field.labels.client}&var-instance=${__field.labels.instance}"
        f"&{carried}&${{__url_time_range}}",
    )]


def _latency_panel(q: Queries, title: str, by: str, *matchers: str,
                   width: int = 12, healthy: str = "") -> Panel:
    legend = "{{" + "}} {{".join(part.strip() for part in by.split(",")) + "}}"
    return timeseries(
        title,
        [Query(q.quantile(quantile, "operation_duration_seconds", by, *matchers),
               f"p{round(quantile * 100)} {legend}", exemplar=True)
         for quantile in (0.5, 0.9, 0.99)],
        unit="s", width=width,
        description="Whole logical operations, retries and backoff included. Exemplars link a "
                    "slow call to its trace.",
        healthy=healthy or "flat lines at the dependency's usual latency (Redis: well under a "
                           "millisecond on a LAN); a p99 that jumps to seconds means retries.",
    )


def _connection_panels(q: Queries, links: Sequence[DataLink] = ()) -> list[Panel]:
    by = "instance, system, client"
    connection = q.state_code("connection_state", CONNECTION_STATES, by)
    breaker = q.state_code("circuit_breaker_state", BREAKER_STATES, by)
    if links:
        connection, breaker = q.with_dashboard(connection), q.with_dashboard(breaker)
    return [
        state_timeline(
            "Connection state",
            [Query(connection, "{{client}} {{instance}}")],
            states=_states(CONNECTION_STATES, CONNECTION_COLOURS),
            description="One bar per client and process: an outage is a red or orange stretch.",
            healthy="every bar green (connected); grey only for a client closed on purpose.",
            links=links,
        ),
        state_timeline(
            "Circuit breaker state",
            [Query(breaker, "{{client}} {{instance}}")],
            states=_states(BREAKER_STATES, BREAKER_COLOURS),
            description="Open: calls are refused without touching the network.",
            healthy="every bar green (closed).",
            links=links,
        ),
    ]


def _buffer_panels(q: Queries) -> list[Panel]:
    return [
        timeseries("Buffer depth and capacity", [
            Query(f"sum by (system, client, instance) ({q.s('buffer_events')})",
                  "held {{client}} {{instance}}"),
            Query(f"sum by (system, client, instance) ({q.s('buffer_capacity_events')})",
                  "capacity {{client}} {{instance}}"),
        ], whole=True, description="Events held while the dependency is down.",
            healthy="held at 0, far below capacity; it fills only during an outage and drains "
                    "after it."),
        timeseries("Buffered, flushed and dropped events", [
            Query(q.rate("buffered_events_total", "system, client"), "buffered {{client}}"),
            Query(q.rate("buffer_flushed_events_total", "system, client"), "flushed {{client}}"),
            Query(q.rate("buffer_dropped_events_total", "system, client, reason"),
                  "dropped ({{reason}}) {{client}}"),
        ], unit="ops", description="Any drop is data loss.",
            healthy="all 0; after an outage, flushed matches buffered and dropped stays 0."),
    ]


def _count_stat(title: str, expr: str, healthy: str, *, description: str = "",
                colour: str = "red") -> Panel:
    """A whole number of events over the dashboard's time range."""
    return stat(title, [Query(f"round({expr})")], whole=True,
                thresholds=((None, "green"), (1, colour)),
                description=f"{description} {_EXTRAPOLATED}".strip(), healthy=healthy)


def overview(config: ObservabilityConfig) -> list[Panel]:
    q = Queries(config)
    ops = OPERATION_COUNT
    per_process = ", ".join(config.labels("job", "instance", "system", "client"))
    links = _client_links(config)
    return [
        row("Health at a glance"),
        stat("Clients not connected", [Query(
            f"count(sum by ({per_process}) "
            f"({q.s('connection_state', eq('state', 'disconnected|connecting|failed', '=~'))})"
            " > 0) or vector(0)")],
            thresholds=((None, "green"), (1, "red")), whole=True,
            description="Clients (per process) disconnected, connecting or failed.",
            healthy="0."),
        stat("Breakers not closed", [Query(
            f"count(sum by ({per_process}) "
            f"({q.s('circuit_breaker_state', eq('state', 'closed', '!='))}) > 0) or vector(0)")],
            thresholds=((None, "green"), (1, "red")), whole=True,
            description="Circuit breakers (per process) open or half-open.", healthy="0."),
        _count_stat("Events dropped in range",
                    f"sum(increase({q.s('buffer_dropped_events_total')}[$__range]))",
                    "0: any drop is data loss (ResilientClientEventsDropped).",
                    description="Buffered events dropped (overflow, expiry, shutdown)."),
        stat("Illegal state transitions", [Query(f"sum({q.s('illegal_transitions_total')})")],
             thresholds=((None, "green"), (1, "orange")), whole=True,
             description="Transitions the state machine refused since the processes started.",
             healthy="0; anything else is a bug in a client, worth a report."),
        row("Connections and breakers"),
        *_connection_panels(q, links),
        timeseries("Reconnect attempts", [
            Query(q.increase("reconnect_attempts_total", "system, client, outcome"),
                  "{{client}} {{outcome}}"),
        ], bars=True, width=6, whole=True, description=_EXTRAPOLATED,
            healthy="no bars; a burst of failures then one success is an outage that healed."),
        timeseries("Connection transitions", [
            Query(q.increase("connection_transitions_total", "system, client, to_state"),
                  "to {{to_state}} {{client}}"),
        ], bars=True, width=6, whole=True, description=_EXTRAPOLATED,
            healthy="no bars after start-up."),
        timeseries("Reconnect duration", [
            Query(q.quantile(0.5, "reconnect_duration_seconds", "system, client"),
                  "p50 {{client}}"),
            Query(q.quantile(0.99, "reconnect_duration_seconds", "system, client"),
                  "p99 {{client}}"),
        ], unit="s", width=6, description="From losing the connection to connected again.",
            healthy="no data (no reconnects), or seconds: the outage's length."),
        timeseries("Breaker transitions and rejections", [
            Query(q.increase("circuit_breaker_transitions_total", "system, client, to_state"),
                  "to {{to_state}} {{client}}"),
            Query(q.increase("circuit_breaker_rejections_total", "system, client"),
                  "rejected {{client}}"),
        ], bars=True, width=6, whole=True, description=_EXTRAPOLATED,
            healthy="no bars: the breaker stays closed and refuses nothing."),
        row("Operations"),
        timeseries("Operations by outcome", [
            Query(q.rate(ops, "system, outcome"), "{{system}} {{outcome}}"),
        ], unit="ops", stacked=True, description="Settled and buffered operations per second.",
            healthy="almost all success; success_after_retry, failure and rejected thin "
                    "slivers."),
        timeseries("Error ratio", [Query(q.with_dashboard(q.ratio(
            q.rate(ops, "system, client, instance", f'outcome=~"{ERRORS}"'),
            q.rate(ops, "system, client, instance", 'outcome!="buffered"'))),
            "{{system}} {{client}} {{instance}}")],
            unit="percentunit", links=links,
            description="failure, failure_after_retry and rejected over all settled operations.",
            healthy="well under the SLO's error budget (0.1 % for a 99.9 % objective)."),
        timeseries("Retry ratio", [Query(q.with_dashboard(q.ratio(
            q.rate("retries_total", "system, client, instance"),
            q.rate(ops, "system, client, instance", 'outcome!="buffered"'))),
            "{{system}} {{client}} {{instance}}")],
            unit="percentunit", links=links, description="Retries per operation.",
            healthy="near 0; a steady few percent is a flaky network path."),
        timeseries("Retries by error type", [
            Query(q.rate("retries_total", "system, client, error_type"),
                  "{{client}} {{error_type}}"),
            Query(q.rate("retries_exhausted_total", "system, client"), "exhausted {{client}}"),
            Query(q.rate("retry_budget_denied_total", "system, client"),
                  "budget denied {{client}}"),
        ], unit="ops", description="Which error category the retries answer.",
            healthy="0; exhausted and budget denied above all."),
        _latency_panel(q, "Operation latency", "system, client", width=24),
        row("Buffer"),
        *_buffer_panels(q),
    ]


def rabbitmq(config: ObservabilityConfig) -> list[Panel]:
    q = Queries(config)
    ops = OPERATION_COUNT
    return [
        row("Publishing"),
        timeseries("Publishes by outcome", [
            Query(q.rate(ops, "client, outcome", 'operation="publish"'),
                  "{{client}} {{outcome}}"),
        ], unit="ops", stacked=True,
            description="buffered: held while the broker is away; rejected: refused by the "
                        "breaker.",
            healthy="success only; buffered appears during an outage, then drains."),
        timeseries("Publisher confirms by outcome", [
            Query(q.rate("publish_confirms_total", "client, outcome"), "{{client}} {{outcome}}"),
        ], unit="ops", stacked=True,
            description="ack: stored. nack/timeout: the broker did not take it. returned: "
                        "unroutable.",
            healthy="ack only."),
        _count_stat("Returned (unroutable) in range", "sum(increase("
                    f"{q.s('publish_confirms_total', eq('outcome', 'returned'))}[$__range]))",
                    "0: every message found a queue.", colour="orange"),
        _count_stat("Re-sent after reconnect in range",
                    f"sum(increase({q.s('publish_resent_total')}[$__range]))",
                    "0, or a few after a reconnect (at-least-once: consumers deduplicate).",
                    colour="orange"),
        stat("Connection blocked", [Query(
            f"max({q.s('connection_blocked')}) or vector(0)")],
            thresholds=((None, "green"), (1, "red")), width=6, whole=True,
            description="1 while the broker's memory or disk alarm blocks publishing.",
            healthy="0."),
        stat("Buffered now", [Query(f"sum({q.s('buffer_events')})")], width=6, whole=True,
             description="Events waiting for the broker.", healthy="0."),
        _latency_panel(q, "Publish latency", "client", 'operation="publish"',
                       healthy="tens of milliseconds (the broker confirms after its fsync); "
                               "seconds while the broker is away."),
        timeseries("Re-sent after reconnect", [
            Query(q.increase("publish_resent_total", "client"), "{{client}}"),
        ], bars=True, whole=True, description=_EXTRAPOLATED,
            healthy="no bars; a bar right after a reconnect is the unconfirmed window."),
        row("Buffer"),
        *_buffer_panels(q),
        row("Consuming"),
        timeseries("Consumer outcomes", [
            Query(q.rate("consumed_messages_total", "client, outcome"), "{{client}} {{outcome}}"),
        ], unit="ops", stacked=True, description="What the handlers did with each delivery.",
            healthy="ack; requeue and reject only for the messages your handler refuses."),
        _latency_panel(q, "Handler latency", "client", 'operation="process"',
                       healthy="your handler's usual time, flat."),
        row("Connection"),
        *_connection_panels(q),
        timeseries("Reconnect attempts", [
            Query(q.increase("reconnect_attempts_total", "client, outcome"),
                  "{{client}} {{outcome}}"),
        ], bars=True, whole=True, description=_EXTRAPOLATED, healthy="no bars."),
        timeseries("Connection blocked", [
            Query(f"max by (client, instance) ({q.s('connection_blocked')})",
                  "{{client}} {{instance}}"),
        ], description="1 while the broker blocks the connection (memory or disk alarm).",
            healthy="0 throughout."),
    ]


def _pool_panels(q: Queries) -> list[Panel]:
    return [
        timeseries("Pool connections", [
            Query(f"sum by (client, instance, state) ({q.s('pool_connections')})",
                  "{{client}} {{instance}} {{state}}"),
            Query(f"sum by (client, instance) ({q.s('pool_max_connections')})",
                  "{{client}} {{instance}} max"),
        ], width=12, stacked=False, whole=True,
            description="Connections in use and idle, against the pool's maximum.",
            healthy="in use well below max."),
        timeseries("Pool wait", [
            Query(q.quantile(0.99, "pool_wait_seconds", "client"), "p99 {{client}}"),
            Query(q.quantile(0.5, "pool_wait_seconds", "client"), "p50 {{client}}"),
        ], unit="s", width=12, description="Time to get a connection from the pool.",
            healthy="near 0; waiting means the pool is too small or connections leak."),
    ]


def _datastore(config: ObservabilityConfig, extra: Sequence[Panel] = ()) -> list[Panel]:
    q = Queries(config)
    ops = OPERATION_COUNT
    return [
        row("Operations"),
        timeseries("Operations by operation and outcome", [
            Query(q.rate(ops, "client, operation, outcome"),
                  "{{client}} {{operation}} {{outcome}}"),
        ], unit="ops", stacked=True, description="Calls per second by command or statement.",
            healthy="success; failure and rejected absent."),
        timeseries("Retries by operation and error type", [
            Query(q.rate("retries_total", "client, operation, error_type"),
                  "{{client}} {{operation}} {{error_type}}"),
            Query(q.rate("retries_exhausted_total", "client, operation"),
                  "exhausted {{client}} {{operation}}"),
        ], unit="ops", description="Retries answer transient errors; exhausted ones fail.",
            healthy="0."),
        _latency_panel(q, "Latency by operation", "client, operation", width=24),
        *extra,
        row("Pool"),
        *_pool_panels(q),
        row("Connection and breaker"),
        *_connection_panels(q),
        timeseries("Breaker rejections", [
            Query(q.rate("circuit_breaker_rejections_total", "client"), "{{client}}"),
        ], unit="ops", description="Calls refused by an open breaker.", healthy="0."),
        timeseries("Reconnect attempts", [
            Query(q.increase("reconnect_attempts_total", "client, outcome"),
                  "{{client}} {{outcome}}"),
        ], bars=True, whole=True, description=_EXTRAPOLATED, healthy="no bars."),
    ]


def redis(config: ObservabilityConfig) -> list[Panel]:
    return _datastore(config)


def sql(config: ObservabilityConfig) -> list[Panel]:
    q = Queries(config)
    transaction = 'operation="transaction"'
    return _datastore(config, [
        timeseries("Transaction retries by error type", [
            Query(q.increase("retries_total", "client, error_type", transaction),
                  "{{client}} {{error_type}}"),
        ], bars=True, whole=True,
            description="Serialization failures and deadlocks re-run the whole transaction. "
                        + _EXTRAPOLATED,
            healthy="no bars, or rare ones under write contention."),
        timeseries("Transaction outcomes", [
            Query(q.rate(OPERATION_COUNT, "client, outcome", transaction),
                  "{{client}} {{outcome}}"),
        ], unit="ops", stacked=True, description="Transactions per second by outcome.",
            healthy="success and a little success_after_retry."),
    ])


def slo(config: ObservabilityConfig) -> list[Panel]:
    q = Queries(config)
    period = period_window(config)
    by = "system, client"
    legend = "{{system}} {{client}}"
    whole_client = "The SLO counts the client across its processes: it ignores Instance."
    budget = f"max by ({by}) ({q.recorded('slo:error_budget:ratio')})"

    def burn(ratio: str) -> str:
        return f"max by ({by}) ({q.recorded(ratio)})\n/ on ({by})\n{budget}"

    panels: list[Panel] = [
        row(f"Error budget over {period}"),
        stat("Objective", [Query(f"max by ({by}) ({q.recorded('slo:objective:ratio')})",
                                 legend)], unit="percentunit", width=6,
             description=f"Share of operations that must succeed, per client. {whole_client}",
             healthy="the objective you chose (99.9 % by default)."),
        stat(f"Availability ({period})", [Query(
            f"1 - max by ({by}) ({q.recorded(f'slo:sli_error:ratio_rate{period}')})", legend)],
            unit="percentunit", width=6, thresholds=((None, "red"), (0.999, "green")),
            description=f"Successful share of settled operations over the period. "
                        f"{whole_client}",
            healthy="at or above the objective."),
        stat(f"Error budget remaining ({period})", [Query(
            f"min by ({by}) ({q.recorded('slo:period_error_budget_remaining:ratio')})",
            legend)],
            unit="percentunit", width=12,
            thresholds=((None, "red"), (0.25, "orange"), (0.5, "green")),
            description=f"1 = untouched, 0 = spent, negative = objective missed. {whole_client}",
            healthy="well above 0, and above the share of the period still ahead."),
        timeseries(f"Error budget remaining ({period}) over time", [Query(
            f"min by ({by}) ({q.recorded('slo:period_error_budget_remaining:ratio')})",
            legend)], unit="percentunit",
            description=f"How the budget was spent. {whole_client}",
            healthy="flat or slowly falling; a cliff is an incident."),
        timeseries("Errors and operations", [
            Query(q.rate(OPERATION_COUNT, "system, client", f'outcome=~"{ERRORS}"'),
                  "errors {{client}}"),
            Query(q.rate(OPERATION_COUNT, "system, client", 'outcome!="buffered"'),
                  "operations {{client}}"),
        ], unit="ops", description="The raw counts behind the ratios (this filter applies "
                                   "Instance).",
            healthy="errors a thin line far below operations."),
        row("Burn rates (1 = spending the budget exactly over the SLO period)"),
    ]
    for window in ("5m", "30m", "1h", "2h", "6h", "1d", "3d", period):
        panels.append(timeseries(
            f"Burn rate {window}", [Query(burn(f"slo:sli_error:ratio_rate{window}"), legend)],
            width=6, height=6, description=f"Error ratio over {window} divided by the error "
                                            f"budget. {whole_client}",
            healthy="below 1; the page and ticket thresholds are on the last panel."))
    panels.append(timeseries("Page thresholds: 14.4x (5m & 1h), 6x (30m & 6h)", [
        Query("vector(14.4)", "14.4x"), Query("vector(6)", "6x"),
        Query("vector(3)", "3x (ticket)"), Query("vector(1)", "1x (ticket)"),
    ], width=6, height=6, description="The burn rates above which the budget alerts fire.",
        healthy="constant lines; the burn rates stay below them."))
    return panels


_Builder = Callable[[ObservabilityConfig], list[Panel]]
DASHBOARDS: dict[str, tuple[str, str, str, _Builder]] = {
    "overview": ("Resilient clients / Overview", ".*",
                 "Health of every resilient client at a glance.", overview),
    "rabbitmq": ("Resilient clients / RabbitMQ", "rabbitmq",
                 "Publishers, confirms, the buffer, consumers and reconnects.", rabbitmq),
    "redis": ("Resilient clients / Redis", "redis",
              "Commands, retries, latency, pool and breaker of Redis clients.", redis),
    "sql": ("Resilient clients / SQL", "|".join(SQL_SYSTEMS),
            "Statements, transaction retries and the connection pool of SQL clients.", sql),
    "slo": ("Resilient clients / SLO", ".*",
            "Error budget and multi-window burn rates of the operation SLO.", slo),
}
assert set(SYSTEM_DASHBOARDS.values()) < set(DASHBOARDS)


def _firing_alerts(config: ObservabilityConfig) -> dict[str, Any]:
    # `|` lets through the alerts without the label: SLO alerts have no instance, none of them
    # a grouping label when the rules were generated without it.
    matchers = ", ".join(f'{name}=~"${name}|"'
                         for name in config.labels("job", "instance", "system", "client"))
    return alerts_annotation(f'ALERTS{{alertstate="firing", {matchers}}}')


def build_all(config: ObservabilityConfig = DEFAULT_CONFIG) -> dict[str, dict[str, Any]]:
    """Every dashboard as JSON-ready data, keyed by file stem."""
    out = {}
    for stem, (title, system_regex, description, panels) in DASHBOARDS.items():
        links = [dashboard_link(other_title.split(" / ")[-1], config.dashboard_uid(other))
                 for other, (other_title, *_) in DASHBOARDS.items() if other != stem]
        out[stem] = build_dashboard(
            uid=config.dashboard_uid(stem),
            title=title,
            description=description,
            panels=panels(config),
            variable_metric=config.metric(OPERATION_COUNT),
            job_selector=config.job_selector,
            system_regex=system_regex,
            tags=["resilient-clients", stem],
            grouping_labels=config.grouping_labels,
            links=links,
            annotations=[_firing_alerts(config)],
        )
    return out
