"""Latency estimates: peak-EWMA for picking, recent medians and percentiles for decisions.

Two views on purpose. Peak-EWMA (Linkerd, tower) jumps to a slow answer at once and forgets
it over `tau`: right for *picking*, which should avoid a host that was just slow. Ejecting a
host and sizing the hedge delay must not follow one slow query, so they use order statistics
of recent samples (a median cannot be moved by one outlier): those are in core.samples.
"""

from __future__ import annotations

import math

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
