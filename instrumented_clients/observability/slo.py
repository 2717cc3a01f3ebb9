"""The SLO's recording rules and burn-rate expressions, in Sloth's contract.

One SLO per client as a whole: ``job``, ``system``, ``client`` (and the grouping labels), summed
over its instances. Errors are ``failure``, ``failure_after_retry`` and ``rejected``; ``buffered``
counts on neither side. Every series carries Sloth's ``sloth_id``, ``sloth_service`` and
``sloth_slo`` labels (the error ratios also ``sloth_window``), so Sloth's Grafana dashboards read
them as they read Sloth's own rules.

The windows up to 3 days are ratios of rates over the raw counters. The period (30 days by default)
is a ratio of sums, not Sloth's average of 5-minute ratios: the error budget is a share of
operations, and an average of ratios weighs a quiet five minutes (one failure out of two calls)
as heavily as a busy one (one out of ten thousand). To keep it cheap, the per-client error and
operation rates over one hour are recorded, and a subquery with a one-hour step sums them over the
period: 720 samples per client for 30 days, whatever the evaluation interval.
"""

from __future__ import annotations

from typing import Any

from instrumented_clients.observability.config import ObservabilityConfig
from instrumented_clients.telemetry.catalog import ERROR_OUTCOMES, OPERATION_COUNT, SYSTEMS

__all__ = [
    "PAGE_BURN",
    "SLOTH_LABELS",
    "SLO_WINDOWS",
    "TICKET_BURN",
    "burn_expr",
    "period_window",
    "slo_rules",
]

ERRORS = "|".join(ERROR_OUTCOMES)
SLO_WINDOWS: dict[str, int] = {
    "5m": 300, "30m": 1800, "1h": 3600, "2h": 7200, "6h": 21600, "1d": 86400, "3d": 259200,
}
"""The short windows (name: seconds) of the burn-rate alerts, over the raw counters."""
# (factor, short window, long window) — the SRE workbook's multi-window, multi-burn-rate alerts.
PAGE_BURN = ((14.4, "5m", "1h"), (6.0, "30m", "6h"))
TICKET_BURN = ((3.0, "2h", "1d"), (1.0, "6h", "3d"))
SLOTH_LABELS = ("sloth_id", "sloth_service", "sloth_slo")
HOUR = 3600


def period_window(config: ObservabilityConfig) -> str:
    """The period's window name, ``30d`` by default."""
    return f"{config.slo_period_days}d"


def sli_error(window: str) -> str:
    """Sloth's name of the error ratio over ``window``."""
    return f"slo:sli_error:ratio_rate{window}"


def _q(value: str) -> str:
    return f'"{value}"'


class _Slo:
    def __init__(self, config: ObservabilityConfig) -> None:
        self.c = config
        self.by = config.client_by
        self.keys = ", ".join((*config.labels("job", "system", "client"), *SLOTH_LABELS))
        self.sel = config.selector()

    def rate(self, matcher: str, seconds: int) -> str:
        series = self.c.series(OPERATION_COUNT, matcher)
        return f"sum by ({self.by}) (rate({series}[{self.c.duration(seconds)}]))"

    def errors(self, seconds: int) -> str:
        return self.rate("outcome=~" + _q(ERRORS), seconds)

    def settled(self, seconds: int) -> str:
        return self.rate("outcome!=" + _q("buffered"), seconds)

    def sloth(self, expr: str) -> str:
        """``expr`` with Sloth's identity labels, joined from the SLO's own labels."""
        service = ", ".join(_q(label) for label in self.c.labels("job"))
        return (
            'label_join(label_join(label_join(\n'
            f'  {expr},\n'
            f'  "sloth_service", "-", {service}),\n'
            '  "sloth_slo", "-", "system", "client"),\n'
            '  "sloth_id", "-", "sloth_service", "sloth_slo")'
        )

    def per_slo(self, expr: str) -> str:
        """One series (value 1) per SLO in ``expr``."""
        return f"group by ({self.keys}) ({expr})"

    def budget_ratio(self, ratio: str) -> str:
        return (f"{ratio}{self.sel}\n/ on (sloth_id) group_left ()\n"
                f"slo:error_budget:ratio{self.sel}")


def _hourly(config: ObservabilityConfig, what: str) -> str:
    return config.record(f"operations_{what}:rate1h")


def objective_table(config: ObservabilityConfig) -> list[dict[str, Any]]:
    """The objective of each system, and of each client that overrides its system's."""
    rules: list[dict[str, Any]] = [
        {"record": config.record("slo_objective:ratio", level="system"),
         "expr": f"vector({config.objective(system):g})", "labels": {"system": system}}
        for system in dict.fromkeys((*SYSTEMS, *config.systems()))
    ]
    rules += [
        {"record": config.record("slo_objective:ratio", level="client"),
         "expr": f"vector({objective:g})", "labels": {"client": client}}
        for client, objective in sorted(config.client_objectives.items())
    ]
    return rules


def slo_rules(config: ObservabilityConfig) -> list[dict[str, Any]]:
    """Every SLO recording rule, in evaluation order (later rules read earlier ones)."""
    s = _Slo(config)
    period = period_window(config)
    rules = objective_table(config)
    errors_1h, settled_1h = _hourly(config, "errors"), _hourly(config, "settled")
    rules += [
        {"record": errors_1h, "expr": s.errors(HOUR)},
        {"record": settled_1h, "expr": s.settled(HOUR)},
    ]
    for window, seconds in SLO_WINDOWS.items():
        ratio = (f"{errors_1h}{s.sel}\n  /\n  {settled_1h}{s.sel}" if seconds == HOUR
                 else f"{s.errors(seconds)}\n  /\n  {s.settled(seconds)}")
        rules.append({"record": sli_error(window), "expr": s.sloth(ratio),
                      "labels": {"sloth_window": window}})
    span = f"[{config.duration(config.slo_period_days * 86400)}:{config.duration(HOUR)}]"
    rules.append({
        "record": sli_error(period),
        # Before the subquery's first hourly step holds data, all of it is within the last
        # hour: that hour's ratio is the period's.
        "expr": s.sloth(f"(\n    sum_over_time({errors_1h}{s.sel}{span})\n    /\n    "
                        f"sum_over_time({settled_1h}{s.sel}{span})\n  )\n  or\n  "
                        f"{errors_1h}{s.sel} / {settled_1h}{s.sel}"),
        "labels": {"sloth_window": period},
    })
    known = s.per_slo(f"{sli_error(period)}{s.sel}")  # every SLO with data in the period
    system_objective = config.record("slo_objective:ratio", level="system")
    objective = f"{known} * on (system) group_left () {system_objective}"
    if config.client_objectives:
        client_objective = config.record("slo_objective:ratio", level="client")
        objective = (f"(\n  {known} * on (client) group_left () {client_objective}\n)\nor\n"
                     f"(\n  {objective}\n)")
    rules += [
        {"record": "slo:objective:ratio", "expr": objective},
        {"record": "slo:error_budget:ratio", "expr": f"1 - slo:objective:ratio{s.sel}"},
        {"record": "slo:time_period:days", "expr": f"{known} * {config.slo_period_days}"},
        {"record": "slo:current_burn_rate:ratio", "expr": s.budget_ratio(sli_error("5m"))},
        {"record": "slo:period_burn_rate:ratio", "expr": s.budget_ratio(sli_error(period))},
        {"record": "slo:period_error_budget_remaining:ratio",
         "expr": f"1 - slo:period_burn_rate:ratio{s.sel}"},
        {"record": "sloth_slo_info", "expr": known},
    ]
    return rules


def burn_expr(config: ObservabilityConfig,
              factors: tuple[tuple[float, str, str], ...]) -> str:
    """Multi-window burn: both windows of a pair above ``factor`` times the client's budget.

    The result keeps the SLO's labels only (no ``sloth_window``), one series per client.
    """
    s = _Slo(config)
    pairs = []
    for factor, short, long in factors:
        threshold = f"on (sloth_id) group_left () ({factor:g} * slo:error_budget:ratio{s.sel})"
        pairs.append(f"(\n    {sli_error(short)}{s.sel} > {threshold}\n    and on (sloth_id)\n"
                     f"    {sli_error(long)}{s.sel} > {threshold}\n  )")
    return f"max by ({s.by}) (\n  " + "\n  or\n  ".join(pairs) + "\n)"
