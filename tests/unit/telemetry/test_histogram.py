"""The per-thread histogram: the same scrape as prometheus_client's, no update lost."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import values as prometheus_values
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics

from instrumented_clients.telemetry.catalog import DURATION_BUCKETS
from instrumented_clients.telemetry.histogram import PerThreadHistogram, create_histogram

LABELS = ("system", "client")


def samples(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in registry.collect() for sample in family.samples
            if not sample.name.endswith("_created")}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=60))
def test_scrape_equals_prometheus_clients_for_the_same_observations(amounts: list[float]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    fast = PerThreadHistogram("op_seconds", "help", LABELS, DURATION_BUCKETS, ours)
    plain = Histogram("op_seconds", "help", LABELS, buckets=DURATION_BUCKETS, registry=theirs)
    fast_child, plain_child = fast.labels("redis", "c"), plain.labels("redis", "c")
    for amount in amounts:
        fast_child.observe(amount)
        plain_child.observe(amount)
    # Bucket bounds included (le is "less or equal"), counts cumulative, _count and _sum alike.
    assert samples(ours).keys() == samples(theirs).keys()
    for key, value in samples(theirs).items():
        assert samples(ours)[key] == pytest.approx(value)


def test_threads_lose_no_observation() -> None:
    registry = CollectorRegistry()
    histogram = PerThreadHistogram("op_seconds", "help", LABELS, DURATION_BUCKETS, registry)
    child = histogram.labels("redis", "c")
    threads, per_thread = 8, 5_000
    start = threading.Barrier(threads)

    def work(index: int) -> None:
        start.wait()
        for _ in range(per_thread):
            child.observe(0.001 * (index + 1))

    workers = [threading.Thread(target=work, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    labels = {"system": "redis", "client": "c"}
    assert registry.get_sample_value("op_seconds_count", labels) == threads * per_thread
    expected_sum = sum(0.001 * (index + 1) * per_thread for index in range(threads))
    assert registry.get_sample_value("op_seconds_sum", labels) == pytest.approx(expected_sum)
    assert registry.get_sample_value("op_seconds_bucket", {**labels, "le": "0.001"}) == per_thread


def test_scrapes_during_observations_never_go_backwards() -> None:
    registry = CollectorRegistry()
    child = PerThreadHistogram("op_seconds", "help", LABELS, DURATION_BUCKETS,
                               registry).labels("redis", "c")
    done = threading.Event()

    def work() -> None:
        for _ in range(20_000):
            child.observe(0.0002)
        done.set()

    worker = threading.Thread(target=work)
    worker.start()
    seen = []
    while not done.is_set():
        seen.append(registry.get_sample_value("op_seconds_count",
                                              {"system": "redis", "client": "c"}))
    worker.join()
    assert seen == sorted(seen)
    final = registry.get_sample_value("op_seconds_count", {"system": "redis", "client": "c"})
    assert final == 20_000


def test_exemplars_reach_the_openmetrics_scrape() -> None:
    registry = CollectorRegistry()
    child = PerThreadHistogram("op_seconds", "help", LABELS, DURATION_BUCKETS,
                               registry).labels("redis", "c")
    child.observe(0.0003, {"trace_id": "ab" * 16})
    text = openmetrics(registry).decode()
    bucket = next(line for line in text.splitlines()
                  if line.startswith("op_seconds_bucket") and 'le="0.0005"' in line)
    assert ' 1.0 # {trace_id="' + "ab" * 16 + '"} 0.0003 ' in bucket
    assert "op_seconds_created" in text


def test_remove_labels_and_duplicate_registration() -> None:
    registry = CollectorRegistry()
    histogram = PerThreadHistogram("op_seconds", "help", LABELS, (0.1, 1.0), registry)
    histogram.labels("redis", "c").observe(0.5)
    histogram.remove("redis", "c")
    assert registry.get_sample_value("op_seconds_count", {"system": "redis", "client": "c"}) is None
    with pytest.raises(ValueError, match="takes labels"):
        histogram.labels("redis")
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Histogram("op_seconds", "help", registry=registry)
    with pytest.raises(ValueError, match="sorted"):
        PerThreadHistogram("other_seconds", "help", LABELS, (1.0, 0.1), registry)


def test_multiprocess_mode_gets_prometheus_clients_histogram(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(create_histogram("a_seconds", "h", LABELS, (1.0,), CollectorRegistry()),
                      PerThreadHistogram)
    # prometheus_client picks its value class once, at import, from PROMETHEUS_MULTIPROC_DIR.
    monkeypatch.setattr(prometheus_values, "ValueClass", object())
    made = create_histogram("b_seconds", "h", LABELS, (1.0,), CollectorRegistry())
    assert type(made) is Histogram
