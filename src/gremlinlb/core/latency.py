"""Latency estimates: peak-EWMA for picking, recent medians and percentiles for decisions.

Two views on purpose. Peak-EWMA (Linkerd, tower) jumps to a slow answer at once and forgets
it over `tau`: right for *picking*, which should avoid a host that was just slow. Ejecting a
host and sizing the hedge delay must not follow one slow query, so they use order statistics
of recent samples (a median cannot be moved by one outlier).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

# Tower's and Linkerd's decay time: a slow answer is mostly forgotten after ~10 s.
DEFAULT_TAU = 10.0


class PeakEwma:
    """Linkerd's peak-sensitive EWMA of latency. Not thread-safe (the balancer's lock)."""

    __slots__ = ("_stamp", "_tau", "_value")

    def __init__(self, tau: float = DEFAULT_TAU) -> None:
        self._tau = tau
        self._value: float | None = None
        self._stamp = 0.0

    def update(self, sample: float, now: float) -> None:
        """A worse sample is taken as is (peak); a better one is blended in by elapsed time."""
        if self._value is None or sample > self._value:
            self._value = sample
        else:
            decay = math.exp(-max(0.0, now - self._stamp) / self._tau)
            self._value = self._value * decay + sample * (1.0 - decay)
        self._stamp = now

    def value(self, now: float) -> float | None:
        """The estimate decayed toward zero by the silence since the last sample (as tower
        does), so a host avoided after one slow answer is tried again in time."""
        if self._value is None:
            return None
        return self._value * math.exp(-max(0.0, now - self._stamp) / self._tau)


class Samples(deque[float]):
    """The last `size` latencies (a bounded deque: `append` is the C one); order statistics."""

    def __init__(self, size: int) -> None:
        super().__init__(maxlen=size)

    def quantile(self, q: float) -> float | None:
        return quantile(self, q)


def quantile(values: Iterable[float], q: float) -> float | None:
    """The nearest-rank `q` quantile (0 < q < 1), or None without values."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[rank]


def median(values: Iterable[float]) -> float | None:
    return quantile(values, 0.5)
