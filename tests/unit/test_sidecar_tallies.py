"""Per-request counts tallied in ints and folded into Prometheus on collection (tallies.py)."""

from __future__ import annotations

import pytest
from gremlinlb.sidecar.tallies import CounterTally, Folder, HistogramTally
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram

BOUNDS = (0.001, 0.01, 0.1, 1.0)
values = st.lists(st.floats(0, 5, allow_nan=False), max_size=40)


def _folding_registry() -> tuple[CollectorRegistry, Folder]:
    registry = CollectorRegistry()
    folder = Folder()
    registry.register(folder)
    return registry, folder


@given(values, values)
def test_a_folded_histogram_reads_as_if_every_value_was_observed(
    first: list[float], second: list[float]
) -> None:
    registry, folder = _folding_registry()
    folded = Histogram("t", "t", ["host"], buckets=BOUNDS, registry=registry)
    tally = HistogramTally(folded.labels, BOUNDS)
    folder.tallies.append(tally)
    expected_registry = CollectorRegistry()
    observed = Histogram("t", "t", ["host"], buckets=BOUNDS, registry=expected_registry)
    for batch in (first, second):  # folded twice: the second fold adds only what is new
        for value in batch:
            tally.observe("a", value)
            observed.labels("a").observe(value)
        assert _samples(registry) == pytest.approx(_samples(expected_registry))


def _samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    """Every sample but the creation times (the two registries were made apart)."""
    return {
        (s.name, repr(sorted(s.labels.items()))): s.value
        for metric in registry.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


def test_counts_show_in_the_registry_without_a_scrape_of_the_admin_port() -> None:
    registry, folder = _folding_registry()
    counter = Counter("attempts", "t", ["host"], registry=registry)
    tally = CounterTally(lambda key: counter.labels(key))
    folder.tallies.append(tally)
    for _ in range(3):
        tally.add("a")
    assert registry.get_sample_value("attempts_total", {"host": "a"}) == 3
    tally.add("a")
    assert registry.get_sample_value("attempts_total", {"host": "a"}) == 4


def test_a_forgotten_key_folds_nothing_more() -> None:
    registry, folder = _folding_registry()
    counter = Counter("attempts", "t", ["host"], registry=registry)
    tally = CounterTally(lambda key: counter.labels(key))
    folder.tallies.append(tally)
    tally.add("a")
    tally.forget("a")
    assert registry.get_sample_value("attempts_total", {"host": "a"}) is None
