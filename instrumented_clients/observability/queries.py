"""PromQL of the dashboards: catalog series filtered by the dashboard's variables."""

from __future__ import annotations

from collections.abc import Sequence

from instrumented_clients.observability.config import SYSTEM_DASHBOARDS, ObservabilityConfig

__all__ = ["RATE", "Queries", "eq", "variables_selector"]

RATE = "$__rate_interval"


class Queries:
    """PromQL snippets over one config's metric names and the dashboard's variables."""

    def __init__(self, config: ObservabilityConfig) -> None:
        self.c = config
        self.per_client = variables_selector(config, "job", "system", "client")
        self.per_instance = variables_selector(config, "job", "instance", "system", "client")

    def s(self, name: str, *matchers: str) -> str:
        return self.c.series(name, self.per_instance, *matchers)

    def rate(self, name: str, by: str, *matchers: str, window: str = RATE) -> str:
        return f"sum by ({by}) (rate({self.s(name, *matchers)}[{window}]))"

    def increase(self, name: str, by: str, *matchers: str, window: str = RATE) -> str:
        """A whole-number count of events per ``by`` over ``window``."""
        return f"round(sum by ({by}) (increase({self.s(name, *matchers)}[{window}])))"

    def quantile(self, q: float, name: str, by: str, *matchers: str) -> str:
        return (f"histogram_quantile({q}, sum by (le, {by}) "
                f"(rate({self.s(name + '_bucket', *matchers)}[{RATE}])))")

    def state_code(self, name: str, states: Sequence[str], by: str) -> str:
        """One series per (by) whose value is the index of its current state in ``states``: the
        gauge has one series per state, 1 for the current one."""
        parts = [f"({self.s(name, eq('state', state))} == 1) * 0 + {i}"
                 for i, state in enumerate(states)]
        return f"max by ({by}) (\n  " + "\n  or ".join(parts) + "\n)"

    def ratio(self, numerator: str, denominator: str) -> str:
        return f"{numerator}\n/\n{denominator}"

    def recorded(self, name: str) -> str:
        """A recorded SLO series of this dashboard's selection (per client, no instance)."""
        return f"{name}{{{self.per_client}}}"

    def with_dashboard(self, expr: str) -> str:
        """``expr`` with a ``dashboard`` label naming its system's dashboard, for data links."""
        stems: dict[str, list[str]] = {}
        for system, stem in SYSTEM_DASHBOARDS.items():
            stems.setdefault(stem, []).append(system)
        for stem, systems in stems.items():
            expr = (f'label_replace(\n{expr},\n"dashboard", "{self.c.dashboard_uid(stem)}", '
                    f'"system", "{"|".join(systems)}")')
        return expr


def variables_selector(config: ObservabilityConfig, *names: str) -> str:
    return ", ".join(f'{name}=~"${name}"' for name in config.labels(*names))


def eq(label: str, value: str, op: str = "=") -> str:
    return f'{label}{op}"{value}"'
