"""Runbook pages, one per alert: what it means, how to confirm it, what to do.

Generated into ``docs/runbooks/<AlertName>.md`` with the rules, so an alert cannot exist without
its page (a test checks both ways).
"""

from __future__ import annotations

from dataclasses import dataclass

from instrumented_clients.observability.rules import Alert

__all__ = ["RUNBOOKS", "Runbook", "render_runbook"]


@dataclass(frozen=True)
class Runbook:
    meaning: str
    confirm: str
    actions: tuple[str, ...]


_DEPENDENCY = ("Check the dependency itself: is the server up, reachable from the service's "
               "host (DNS, firewall, security group), and not out of memory, disk or file "
               "descriptors?")

RUNBOOKS: dict[str, Runbook] = {
    "ResilientClientConnectionDown": Runbook(
        "The client has been DISCONNECTED, CONNECTING or FAILED for 2 minutes. The service keeps "
        "running: RabbitMQ publishes go to the buffer, Redis and SQL calls are retried and then "
        "fail or are rejected by the breaker. A client closed on purpose (CLOSED) does not fire.",
        "*Overview* → **Connection state** shows an orange/yellow/red bar for the client; "
        "**Reconnect attempts** shows failures. The service's `health()` output names the "
        "`last_error` (redacted).",
        (_DEPENDENCY,
         "Look at the client's log lines for the error category (`connection`, `timeout`, "
         "`auth`, ...). An `auth` or `permission` error will not heal by waiting: fix the "
         "credentials.",
         "The alert names the process (`instance`): if only one replica fires, restart that "
         "replica; if every replica of the job fires, the dependency is the problem."),
    ),
    "ResilientClientConnectionFailed": Runbook(
        "The reconnect policy is spent (e.g. `RABBITMQ_MAX_RETRIES` attempts). The client keeps "
        "trying at the capped interval and returns to CONNECTED on the first success, but the "
        "outage has outlasted what the policy was sized for.",
        "*Overview* → **Connection state** shows a red bar; **Reconnect attempts** shows only "
        "`failure`.",
        (_DEPENDENCY,
         "Watch **Buffer depth** on the *RabbitMQ* dashboard: once the buffer is full, events "
         "are dropped (`ResilientClientEventsDropped`).",
         "Once the dependency is back, confirm the state turns green without a restart."),
    ),
    "ResilientClientCircuitBreakerOpen": Runbook(
        "The breaker saw enough consecutive failures to open and has not closed for 2 minutes: "
        "calls fail fast with `CircuitOpenError` instead of reaching the dependency. Each "
        "cool-down lets one probe through (half-open); a failed probe opens it again.",
        "*Overview* → **Circuit breaker state** is red/yellow; **Breaker transitions and "
        "rejections** shows the rejected calls; **Error ratio** rises with `rejected`.",
        (_DEPENDENCY,
         "Find the error behind the failures in **Retries by error type**.",
         "Do not reset the breaker by restarting the service while the dependency is down: it "
         "protects the dependency from a retry storm while it recovers."),
    ),
    "ResilientClientCircuitBreakerFlapping": Runbook(
        "The breaker opened more than 3 times in 30 minutes: the dependency recovers briefly and "
        "fails again (overload, a crash loop, a flaky network path).",
        "*Overview* → **Circuit breaker state** alternates red and green; **Reconnect attempts** "
        "and **Connection state** usually flap at the same times.",
        ("Look for restarts or OOM kills of the dependency and for saturation (CPU, connections, "
         "memory).",
         "If the dependency is overloaded, lower the callers' concurrency or raise the breaker's "
         "`recovery_timeout` so probes stop adding load."),
    ),
    "ResilientClientHighRetryRatio": Runbook(
        "More retries per operation than the system's threshold (see `ObservabilityConfig`) "
        "for 10 minutes, with enough traffic to matter. Retries hide failures from callers but "
        "add latency and load.",
        "*Overview* → **Retry ratio** and **Retries by error type** show which client and "
        "which error category.",
        ("`timeout`: the dependency is slow; check its latency and saturation.",
         "`connection`: connections are being reset; check the network path and the server's "
         "idle timeouts (`CLIENT KILL`, `pg_terminate_backend`, load balancers).",
         "If retries are legitimate (e.g. serialization failures), raise the threshold in the "
         "config rather than muting the alert."),
    ),
    "ResilientClientHighErrorRatio": Runbook(
        "The share of operations ending in `failure`, `failure_after_retry` or `rejected` is "
        "above the system's threshold for 5 minutes, with enough traffic to matter.",
        "*Overview* → **Error ratio** and **Operations by outcome**; the *SLO* dashboard shows "
        "how much error budget this costs.",
        (_DEPENDENCY,
         "`rejected` outcomes come from an open breaker: see "
         "`ResilientClientCircuitBreakerOpen`.",
         "Permanent errors (bad credentials, missing queue, SQL errors) are not retried: check "
         "recent deployments of the service."),
    ),
    "ResilientClientRetriesExhausted": Runbook(
        "Operations keep failing on their last allowed attempt: callers see the error.",
        "*Overview* → **Retries by error type** (the `exhausted` series); the service's own "
        "error logs for the operation named in the alert.",
        (_DEPENDENCY,
         "If the outages are short but longer than the retry schedule, consider a longer "
         "schedule (`*_RETRY_MAX_ATTEMPTS`, `*_RETRY_MAX_DELAY`) — at the price of latency."),
    ),
    "ResilientClientRetryBudgetExhausted": Runbook(
        "The client's retry budget (retries as a share of calls) is spent, so retries are "
        "refused. This is the budget doing its job: a fleet-wide failure is not amplified into "
        "a retry storm.",
        "*Overview* → **Retries by error type** (the `budget denied` series) next to **Error "
        "ratio**.",
        (_DEPENDENCY,
         "Do not raise the budget during an outage; fix the dependency."),
    ),
    "ResilientClientEventsDropped": Runbook(
        "Events were lost: the buffer overflowed (`overflow`), held them past their maximum age "
        "(`expired`) or was closed with events still in it (`shutdown`). Any drop is data loss, "
        "so this pages. It keeps firing for 10 minutes after the last drop.",
        "*Overview* or *RabbitMQ* → **Buffered, flushed and dropped events** (the `dropped` "
        "series by reason) and **Buffer depth and capacity**.",
        ("`overflow`: the broker has been down longer than the buffer can hold; restore the "
         "broker first, then consider a larger `RABBITMQ_MAX_PENDING_EVENTS` or a durable "
         "fallback (`on_drop`).",
         "`expired`: events waited longer than `max_age`; same causes as overflow.",
         "`shutdown`: the service stopped while disconnected; drain before stopping (a longer "
         "termination grace period).",
         "Work out which events were lost from the service's `on_drop` hook or logs and replay "
         "them if the business needs it."),
    ),
    "ResilientClientBufferNearlyFull": Runbook(
        "The buffer holds more than 80 % of its capacity for 2 minutes; when it is full, events "
        "are dropped.",
        "*RabbitMQ* → **Buffer depth and capacity** and **Connection state**.",
        ("Restore the broker connection (see `ResilientClientConnectionDown`).",
         "If the broker is up but the buffer does not drain, check **Publisher confirms by "
         "outcome** for nacks and timeouts and **Connection blocked**."),
    ),
    "ResilientClientPublishNacked": Runbook(
        "The broker refused publishes (`nack`) or did not confirm them in time (`timeout`). The "
        "publisher reports these to the caller; they are not silently lost, but they are not "
        "stored either.",
        "*RabbitMQ* → **Publisher confirms by outcome**.",
        ("`nack`: check the broker's logs (queue length limits with `reject-publish`, internal "
         "errors).",
         "`timeout`: the broker is slow to fsync or is under a resource alarm; check its disk "
         "and memory, and **Connection blocked**."),
    ),
    "ResilientClientUnroutableMessages": Runbook(
        "Messages published as mandatory were returned: no queue is bound for their routing "
        "key. They are reported, never re-sent.",
        "*RabbitMQ* → **Returned (unroutable) in range** and **Publisher confirms by outcome** "
        "(`returned`).",
        ("Check the exchange's bindings in the management UI: a consumer that declares its "
         "queue may not have started, or a deployment changed a routing key.",
         "Declare the queue and binding on the publisher side if messages must never be "
         "unroutable."),
    ),
    "ResilientClientReconnectChurn": Runbook(
        "The client reconnected more than 5 times in 30 minutes: connections are being cut "
        "repeatedly, which costs latency, re-sent messages and load on the server.",
        "*Overview* → **Reconnect attempts** and **Connection state**.",
        ("Look for idle timeouts on load balancers or NAT gateways shorter than the heartbeat "
         "(`RABBITMQ_HEARTBEAT`).",
         "Check the server's logs for why it closes the connections (client limits, memory, "
         "`CLIENT KILL`, `pg_terminate_backend`)."),
    ),
    "ResilientClientHighP99Latency": Runbook(
        "The 99th percentile of whole operations (retries and backoff included) is above the "
        "system's threshold for 10 minutes.",
        "*Overview* → **Operation latency**; click an exemplar to open the slow call's trace "
        "and see whether the time went into retries, backoff or the server.",
        ("Retries in the trace: see `ResilientClientHighRetryRatio`.",
         "Slow server time: check the dependency's own latency and saturation.",
         "SQL: check **Pool wait** — a saturated pool adds waiting before the statement runs."),
    ),
    "ResilientClientPoolSaturated": Runbook(
        "At least 90 % of the pool's connections have been in use for 5 minutes; callers queue "
        "for a connection.",
        "*SQL* or *Redis* → **Pool connections** (in use vs max) and **Pool wait**.",
        ("Look for slow statements or transactions held open across slow work.",
         "Raise the pool size only if the database can take more connections."),
    ),
    "ResilientClientConnectionBlocked": Runbook(
        "RabbitMQ blocked the connection because of a memory or disk alarm; publishes wait in "
        "the buffer until the broker unblocks it.",
        "*RabbitMQ* → **Connection blocked** and **Buffer depth and capacity**.",
        ("Check the broker: `rabbitmqctl status` (alarms), queue lengths, disk free.",
         "Drain or purge the queues that filled the broker; add consumers."),
    ),
    "ResilientClientIllegalTransitions": Runbook(
        "A client attempted a connection state change that its state table forbids. The client "
        "refused it, logged it and kept running; it is a bug, not an outage.",
        "*Overview* → **Illegal state transitions**.",
        ("Collect the log lines around the increase (they name both states) and report them "
         "with the library version.",),
    ),
    "ResilientClientErrorBudgetBurnFast": Runbook(
        "The operation error ratio is 14.4 times the budget over both 5 minutes and 1 hour (2 % "
        "of a 30-day budget spent in an hour), or 6 times over both 30 minutes and 6 hours. "
        "At this rate the budget is gone in days: page.",
        "*SLO* → **Burn rate 5m/1h/30m/6h** and **Error budget remaining (30d)**; *Overview* → "
        "**Error ratio** for the client.",
        (_DEPENDENCY,
         "Correlate with the connection and breaker alerts of the same client; they usually "
         "name the cause."),
    ),
    "ResilientClientErrorBudgetBurnSlow": Runbook(
        "The error ratio is 3 times the budget over 2 hours and 1 day, or above the budget over "
        "6 hours and 3 days: the SLO will be missed if nothing changes. Ticket, not page.",
        "*SLO* → **Burn rate 2h/1d/6h/3d**.",
        ("Look for a steady source of errors (a bad deployment, a permanent error class, a "
         "flapping network path) and schedule the fix.",),
    ),
    "ResilientClientMetricsAbsent": Runbook(
        "Prometheus has no operation metrics of any resilient client for 15 minutes: the "
        "services are down, not scraped, or no longer instrumented. Every other alert here is "
        "blind while this fires.",
        "Prometheus → *Status* → *Targets*: is the service's target up? `curl` its `/metrics` "
        "and look for `resilient_client_operation_duration_seconds_count`.",
        ("Restart or redeploy the service if it is down.",
         "Fix the scrape configuration (job name, port, network policy) if it is up.",
         "If the metric namespace changed, regenerate the rules with `instrumented-clients "
         "generate --namespace NS`."),
    ),
}


def render_runbook(alert: Alert) -> str:
    """The Markdown page of ``alert``."""
    book = RUNBOOKS[alert.name]
    actions = "\n".join(f"{i}. {action}" for i, action in enumerate(book.actions, start=1))
    return (
        f"# {alert.name}\n\n"
        f"Severity: **{alert.severity}**. {alert.summary}\n\n"
        f"## Meaning\n\n{book.meaning}\n\n"
        f"## Confirm on the dashboards\n\n{book.confirm} The alert's `dashboard_url` opens its "
        "dashboard with the variables set to the alert's labels.\n\n"
        f"## What to do\n\n{actions}\n\n"
        f"## Expression\n\n```promql\n{alert.expr}\n```\n\n"
        "Generated by `instrumented-clients generate` from "
        "`instrumented_clients/observability/runbooks.py`; edit it there.\n"
    )
