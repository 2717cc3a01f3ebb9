"""The metric catalog: every metric the library emits, defined once.

The Prometheus sink creates its metrics from here; the dashboard and alert generators read it; a
test fails when a dashboard or rule names a metric or label missing from it, or when a metric here
appears on no dashboard. Names are given without the namespace (``resilient_client`` by default).

Each metric says which systems it belongs to (by default, all): a client creates the families of
its own system only, so a registry holding a Redis client exports no RabbitMQ family.

Labels are bounded: ``system`` (OpenTelemetry's names), ``client`` (the user's ``name=``),
``operation`` (an allow-list per system) and the small enums below. Never a URL, host, key, query,
routing key or message id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "BREAKER_STATES",
    "CONFIRM_OUTCOMES",
    "CONNECTION_STATES",
    "CONSUME_OUTCOMES",
    "DEFAULT_NAMESPACE",
    "DROP_REASONS",
    "DURATION_BUCKETS",
    "ERROR_OUTCOMES",
    "METRICS",
    "OPERATION_COUNT",
    "OUTCOMES",
    "POOLED_SYSTEMS",
    "RECONNECT_BUCKETS",
    "SQL_SYSTEMS",
    "SYSTEMS",
    "MetricSpec",
    "families_for",
    "metric",
]

DEFAULT_NAMESPACE: Final = "resilient_client"

SYSTEMS: Final = ("rabbitmq", "redis", "postgresql", "mysql", "mariadb", "sqlite")
SQL_SYSTEMS: Final = ("postgresql", "mysql", "mariadb", "sqlite")
POOLED_SYSTEMS: Final = ("redis", *SQL_SYSTEMS)
"""The systems whose clients hold a connection pool."""
_BROKER: Final = ("rabbitmq",)
OUTCOMES: Final = (
    "success", "success_after_retry", "failure", "failure_after_retry", "rejected", "buffered"
)
OPERATION_COUNT: Final = "operation_duration_seconds_count"
"""The series that counts operations: one histogram gives both the count (by outcome) and the
duration, so an operation pays for one observation."""
ERROR_OUTCOMES: Final = ("failure", "failure_after_retry", "rejected")
"""The SLO's errors; ``buffered`` counts on neither side."""
CONNECTION_STATES: Final = (
    "disconnected", "connecting", "connected", "failed", "closing", "closed"
)
BREAKER_STATES: Final = ("closed", "open", "half_open")
DROP_REASONS: Final = ("overflow", "expired", "shutdown")
CONFIRM_OUTCOMES: Final = ("ack", "nack", "returned", "timeout")
CONSUME_OUTCOMES: Final = ("ack", "requeue", "reject")
RECONNECT_OUTCOMES: Final = ("success", "failure")
POOL_STATES: Final = ("idle", "in_use")

# A loopback Redis command takes ~80 µs; a call that spans a reconnect can take tens of seconds.
DURATION_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)
RECONNECT_BUCKETS: Final = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
POOL_WAIT_BUCKETS: Final = (
    0.00001, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0,
)

Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric: its name without namespace, type, help text, labels and (histograms) buckets.

    ``label_values`` lists the enum labels' closed value sets, so series can be pre-initialised
    and the generators know every value a label can take. ``systems`` names the systems the
    metric belongs to; empty: every system.
    """

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()
    label_values: tuple[tuple[str, tuple[str, ...]], ...] = ()
    multiprocess_mode: str = "livesum"
    systems: tuple[str, ...] = ()

    def belongs_to(self, system: str) -> bool:
        return not self.systems or system in self.systems

    def full_name(self, namespace: str = DEFAULT_NAMESPACE) -> str:
        return f"{namespace}_{self.name}" if namespace else self.name

    def values_of(self, label: str) -> tuple[str, ...]:
        return dict(self.label_values).get(label, ())


_SC = ("system", "client")

METRICS: Final[tuple[MetricSpec, ...]] = (
    MetricSpec(
        "operation_duration_seconds", "histogram",
        "Duration of whole logical operations by outcome, retries and backoff included; its "
        "_count counts operations (retries of one operation count once).",
        (*_SC, "operation", "outcome"), buckets=DURATION_BUCKETS,
        label_values=(("outcome", OUTCOMES),),
    ),
    MetricSpec(
        "retries_total", "counter",
        "Retries scheduled after a failed attempt, by the error's category.",
        (*_SC, "operation", "error_type"),
    ),
    MetricSpec(
        "retries_exhausted_total", "counter",
        "Operations that failed on their last allowed attempt.",
        (*_SC, "operation"),
    ),
    MetricSpec(
        "retry_budget_denied_total", "counter",
        "Retries refused because the client's retry budget was spent.",
        _SC,
    ),
    MetricSpec(
        "connection_state", "gauge",
        "Current connection state: 1 for the current state, 0 for the others.",
        (*_SC, "state"), label_values=(("state", CONNECTION_STATES),),
    ),
    MetricSpec(
        "connection_transitions_total", "counter",
        "Connection state changes.",
        (*_SC, "from_state", "to_state"),
    ),
    MetricSpec(
        "illegal_transitions_total", "counter",
        "State transitions refused by the state table (a bug in the client; should stay 0).",
        _SC,
    ),
    MetricSpec(
        "reconnect_attempts_total", "counter",
        "Reconnect attempts by outcome.",
        (*_SC, "outcome"), label_values=(("outcome", RECONNECT_OUTCOMES),),
    ),
    MetricSpec(
        "reconnect_duration_seconds", "histogram",
        "Time from losing the connection to being connected again.",
        _SC, buckets=RECONNECT_BUCKETS,
    ),
    MetricSpec(
        "connection_blocked", "gauge",
        "1 while the broker blocks the connection (memory or disk alarm).",
        _SC, systems=_BROKER,
    ),
    MetricSpec(
        "circuit_breaker_state", "gauge",
        "Current circuit breaker state: 1 for the current state, 0 for the others.",
        (*_SC, "state"), label_values=(("state", BREAKER_STATES),),
    ),
    MetricSpec(
        "circuit_breaker_transitions_total", "counter",
        "Circuit breaker state changes.",
        (*_SC, "from_state", "to_state"),
    ),
    MetricSpec(
        "circuit_breaker_rejections_total", "counter",
        "Calls refused by an open circuit breaker without touching the network.",
        _SC,
    ),
    MetricSpec(
        "buffer_events", "gauge", "Events held in the buffer now.", _SC, systems=_BROKER,
    ),
    MetricSpec(
        "buffer_capacity_events", "gauge", "Capacity of the buffer in events.", _SC,
        systems=_BROKER,
    ),
    MetricSpec(
        "buffered_events_total", "counter", "Events taken into the buffer.", _SC,
        systems=_BROKER,
    ),
    MetricSpec(
        "buffer_flushed_events_total", "counter", "Events that left the buffer for delivery.", _SC,
        systems=_BROKER,
    ),
    MetricSpec(
        "buffer_dropped_events_total", "counter",
        "Events lost from the buffer, by reason. Any increase is data loss.",
        (*_SC, "reason"), label_values=(("reason", DROP_REASONS),), systems=_BROKER,
    ),
    MetricSpec(
        "publish_confirms_total", "counter",
        "Publishes settled by the broker, by outcome.",
        (*_SC, "outcome"), label_values=(("outcome", CONFIRM_OUTCOMES),), systems=_BROKER,
    ),
    MetricSpec(
        "publish_resent_total", "counter",
        "Unconfirmed messages published again after a reconnect.",
        _SC, systems=_BROKER,
    ),
    MetricSpec(
        "consumed_messages_total", "counter",
        "Deliveries settled by a consumer, by outcome.",
        (*_SC, "outcome"), label_values=(("outcome", CONSUME_OUTCOMES),), systems=_BROKER,
    ),
    MetricSpec(
        "pool_connections", "gauge",
        "Connections in the pool by state, read from the pool's own counts.",
        (*_SC, "state"), label_values=(("state", POOL_STATES),), systems=POOLED_SYSTEMS,
    ),
    MetricSpec(
        "pool_max_connections", "gauge", "Most connections the pool may open.", _SC,
        systems=POOLED_SYSTEMS,
    ),
    MetricSpec(
        "pool_wait_seconds", "histogram",
        "Time spent getting a connection from the pool.",
        _SC, buckets=POOL_WAIT_BUCKETS, systems=POOLED_SYSTEMS,
    ),
)

_BY_NAME: Final = {spec.name: spec for spec in METRICS}


def families_for(system: str) -> tuple[MetricSpec, ...]:
    """The metrics a client of ``system`` may emit."""
    return tuple(spec for spec in METRICS if spec.belongs_to(system))


def metric(name: str) -> MetricSpec:
    """Look a metric up by its name without namespace."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no metric {name!r} in the catalog") from None


def markdown_table(namespace: str = DEFAULT_NAMESPACE) -> str:
    """The catalog as a Markdown table (the README's copy is checked against this)."""
    rows = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for spec in METRICS:
        labels = []
        for label in spec.labels:
            values = spec.values_of(label)
            labels.append(f"{label} ({', '.join(values)})" if values else label)
        rows.append(
            f"| `{spec.full_name(namespace)}` | {spec.kind} | {', '.join(labels)} | {spec.help} |"
        )
    return "\n".join(rows) + "\n"
