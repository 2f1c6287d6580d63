"""Per-request counts kept in plain integers and folded into Prometheus on scrape.

A prometheus_client counter or histogram takes a lock (and, for a histogram, walks its buckets)
on every update; per request that was a few percent of the sidecar's CPU (issue 26 point 3).
The request path adds to plain ints here instead (on the event loop only); `fold` adds what
came since the last fold to the real series when the registry is collected, so every reader of
the registry (a scrape, `get_sample_value`) sees every count.

Counts are cumulative and only the loop thread writes them: a fold from another thread reads a
snapshot and adds the difference to what it folded before, so nothing is lost or counted twice.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector


class CounterTally:
    """Counts per key, folded into `child(key).inc`."""

    __slots__ = ("_child", "_counts", "_folded")

    def __init__(self, child: Callable[[Any], Any]) -> None:
        self._child = child
        self._counts: dict[Hashable, int] = {}
        self._folded: dict[Hashable, int] = {}

    def add(self, key: Hashable) -> None:
        counts = self._counts
        counts[key] = counts.get(key, 0) + 1

    def forget(self, key: Hashable) -> None:
        """The series of `key` was removed: counts not yet folded go with it."""
        self._counts.pop(key, None)
        self._folded.pop(key, None)

    def fold(self) -> None:
        folded = self._folded
        for key, count in list(self._counts.items()):
            delta = count - folded.get(key, 0)
            if delta:
                self._child(key).inc(delta)
                folded[key] = count


class HistogramTally:
    """Observations per key, bucketed as the histogram `child(key)` would and folded into it.

    Folding writes the histogram's bucket and sum values (prometheus_client keeps no public bulk
    observe); tests/unit/test_sidecar_tallies.py checks it matches `observe` exactly."""

    __slots__ = ("_bounds", "_child", "_counts", "_folded")

    def __init__(self, child: Callable[[Any], Any], bounds: Iterable[float]) -> None:
        self._child = child
        self._bounds = list(bounds)
        if not self._bounds or self._bounds[-1] != float("inf"):
            self._bounds.append(float("inf"))  # as prometheus_client adds it
        # Per key: observations per bucket, then their sum as the last item.
        self._counts: dict[Hashable, list[float]] = {}
        self._folded: dict[Hashable, list[float]] = {}

    def observe(self, key: Hashable, value: float) -> None:
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = [0.0] * (len(self._bounds) + 1)
        counts[bisect_left(self._bounds, value)] += 1
        counts[-1] += value

    def forget(self, key: Hashable) -> None:
        self._counts.pop(key, None)
        self._folded.pop(key, None)

    def fold(self) -> None:
        for key, counts in list(self._counts.items()):
            now = list(counts)
            before = self._folded.get(key) or [0.0] * len(now)
            if now == before:
                continue
            histogram = self._child(key)
            for index, (mine, theirs) in enumerate(zip(now[:-1], before[:-1], strict=True)):
                if mine != theirs:
                    histogram._buckets[index].inc(mine - theirs)
            histogram._sum.inc(now[-1] - before[-1])
            self._folded[key] = now


class Folder(Collector):
    """Registered before the series it folds into: collecting the registry folds first."""

    def __init__(self) -> None:
        self.tallies: list[CounterTally | HistogramTally] = []
        self._lock = threading.Lock()  # two scrapes at once fold one after the other

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            for tally in self.tallies:
                tally.fold()
        return iter(())
