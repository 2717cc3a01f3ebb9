"""A Prometheus histogram whose observations take no lock: per-thread values, summed at scrape.

prometheus_client's ``Histogram.observe`` takes a lock twice (the bucket, the sum) and walks the
bucket list in Python; for the operation histogram, updated on every call of every client, that
was most of what the library added to a Redis command. Here each thread writes only its own
list of bucket counts (found by thread id), so an observation is a dictionary look-up, a
``bisect`` and two list updates, and no update is ever lost: a list has one writer. A scrape
sums the lists under a lock that observations never take. A thread id reused by a new thread
continues the old thread's list, which nobody else writes any more.

A scrape may see an observation's bucket before its sum (the same holds for prometheus_client,
whose values are locked one by one). prometheus_client's multiprocess mode reads values from
files that only its own metric classes write: :func:`create_histogram` returns a plain
``prometheus_client.Histogram`` there.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from threading import get_ident
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import values as prometheus_values
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

__all__ = ["PerThreadHistogram", "create_histogram", "multiprocess_mode"]


def multiprocess_mode() -> bool:
    """Whether prometheus_client chose its multiprocess values (``PROMETHEUS_MULTIPROC_DIR`` set
    before it was imported): the decision it made itself, read from where it keeps it."""
    return prometheus_values.ValueClass is not prometheus_values.MutexValue


def create_histogram(name: str, documentation: str, labelnames: Sequence[str],
                     buckets: Sequence[float],
                     registry: CollectorRegistry) -> Histogram | PerThreadHistogram:
    """A :class:`PerThreadHistogram`, or prometheus_client's ``Histogram`` in multiprocess
    mode; both are used the same way (``labels(...).observe(value, exemplar)``)."""
    if multiprocess_mode():
        return Histogram(name, documentation, labelnames, registry=registry, buckets=buckets)
    return PerThreadHistogram(name, documentation, labelnames, buckets, registry)


class _Child:
    """One label set: a list per thread of ``[count per bucket..., sum]``."""

    __slots__ = ("_bounds", "_exemplars", "_lock", "_shards", "_width", "created")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self._width = len(bounds)
        self._shards: dict[int, list[float]] = {}
        self._lock = threading.Lock()
        self._exemplars: list[Exemplar | None] = [None] * len(bounds)
        self.created = time.time()

    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
        """Count ``amount`` in its bucket and add it to the sum; ``exemplar`` labels (a trace
        id) are kept for that bucket."""
        try:
            values = self._shards[get_ident()]
        except KeyError:
            values = self._new_shard()
        index = bisect_left(self._bounds, amount)  # the first bucket whose bound >= amount
        values[index] += 1
        values[-1] += amount
        if exemplar is not None:
            self._exemplars[index] = Exemplar(exemplar, amount, time.time())

    def _new_shard(self) -> list[float]:
        values: list[float] = [0] * self._width + [0.0]
        with self._lock:
            self._shards[get_ident()] = values
        return values

    def exemplars(self) -> list[Exemplar | None]:
        """The latest exemplar of each bucket (None where there is none)."""
        return list(self._exemplars)

    def totals(self) -> list[float]:
        """Counts per bucket (not cumulative) and, last, the sum, over every thread."""
        with self._lock:
            shards = list(self._shards.values())
        totals = [0.0] * (self._width + 1)
        for values in shards:
            for index, value in enumerate(list(values)):
                totals[index] += value
        return totals


class PerThreadHistogram:
    """A labelled histogram, registered on ``registry`` as a collector.

    Args:
        name: the full metric name (without ``_bucket`` etc.).
        documentation: the help text.
        labelnames: label names; ``labels()`` takes their values in this order.
        buckets: upper bounds; ``+Inf`` is added when missing.
        registry: where it is exported.
    """

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 buckets: Sequence[float], registry: CollectorRegistry) -> None:
        bounds = [float(bound) for bound in buckets]
        if not bounds or bounds != sorted(bounds):
            raise ValueError(f"buckets must be sorted and non-empty, got {list(buckets)!r}")
        if bounds[-1] != float("inf"):
            bounds.append(float("inf"))
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._bounds = tuple(bounds)
        self._children: dict[tuple[str, ...], _Child] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def labels(self, *values: str) -> _Child:
        """The child of one label set (made on first use; keep it: the look-up is the slow
        part)."""
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values!r}")
        key = tuple(str(value) for value in values)
        child = self._children.get(key)
        if child is None:
            with self._lock:
                child = self._children.setdefault(key, _Child(self._bounds))
        return child

    def remove(self, *values: str) -> None:
        """Drop the series of one label set (as ``prometheus_client``'s ``remove``)."""
        with self._lock:
            self._children.pop(tuple(str(value) for value in values), None)

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            children = list(self._children.items())
        for key, child in children:
            totals = child.totals()
            buckets: list[Any] = []
            cumulative = 0.0
            for bound, count, exemplar in zip(self._bounds, totals, child.exemplars(),
                                              strict=False):
                cumulative += count
                le = floatToGoString(bound)  # type: ignore[no-untyped-call]  # as prometheus_client
                buckets.append((le, cumulative, exemplar))
            family.add_metric(list(key), buckets, totals[-1])
            family.add_sample(f"{self.name}_created", dict(zip(self.labelnames, key, strict=True)),
                              child.created)
        yield family
