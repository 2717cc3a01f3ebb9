"""A small PromQL reader for the generator tests: which metrics, labels and values a query uses.

Regex-based, made for the queries this repository generates: selectors ``name{matchers}``,
functions, grouping clauses and Grafana variables. Not a parser for arbitrary PromQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "offset", "bool", "inf", "nan", "atan2", "Inf", "NaN",
}
_SELECTOR = re.compile(r"([a-zA-Z_:][\w:]*)?\s*\{([^{}]*)\}")
_MATCHER = re.compile(r'\s*([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_IDENT = re.compile(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)(\s*\()?")
_GRAFANA_VARIABLE = re.compile(r"\$\{?\w+\}?")


@dataclass
class Selector:
    metric: str | None
    matchers: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass
class QueryNames:
    selectors: list[Selector]
    grouping_labels: set[str]

    @property
    def metrics(self) -> set[str]:
        return {s.metric for s in self.selectors if s.metric}


def read(expr: str) -> QueryNames:
    """Every selector (metric and matchers) and every label named in a grouping clause."""
    selectors: list[Selector] = []
    for match in _SELECTOR.finditer(expr):
        body = match.group(2)
        matchers = [(m.group(1), m.group(2), m.group(3)) for m in _MATCHER.finditer(body)]
        leftover = _MATCHER.sub("", body).strip()
        if leftover:
            raise ValueError(f"cannot read matchers {body!r} in {expr!r}")
        selectors.append(Selector(match.group(1), matchers))
    rest = _SELECTOR.sub(" ", expr)
    rest = re.sub(r'"(?:[^"\\]|\\.)*"', " ", rest)  # strings (label_replace arguments, ...)
    rest = re.sub(r"\[[^\]]*\]", " ", rest)  # ranges and subqueries
    rest = _GRAFANA_VARIABLE.sub(" ", rest)
    grouping: set[str] = set()
    for match in _GROUPING.finditer(rest):
        grouping |= {label.strip() for label in match.group(2).split(",") if label.strip()}
    rest = _GROUPING.sub(" ", rest)
    rest = re.sub(r"\b\d+(\.\d+)?([eE][+-]?\d+)?[smhdwy]?\b", " ", rest)  # numbers, durations
    for match in _IDENT.finditer(rest):
        name, call = match.group(1), match.group(2)
        if call or name in KEYWORDS:
            continue
        selectors.append(Selector(name))
    return QueryNames(selectors, grouping)
