"""The timing of the operator's loops: the one retry delay (pushes, watches and a cluster's own
API calls), and the pacing of changes that must not become a push each."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential and jittered (so that many retrying loops do not fall into step), capped."""

    first: float = 0.2
    factor: float = 2.0
    maximum: float = 10.0
    jitter: float = 0.2

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """How long to wait after the ``failures``-th failure in a row (1 for the first)."""
        base = min(self.maximum, self.first * self.factor ** max(0, failures - 1))
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, base * (1.0 + spread))


@dataclass(slots=True)
class Pacer:
    """At most one event per ``interval`` seconds (times from one monotonic clock)."""

    interval: float
    last: float = -math.inf

    def wait(self, now: float) -> float:
        """How long an event wanted ``now`` has to wait (0: it may happen now)."""
        return max(0.0, self.last + self.interval - now)

    def happened(self, now: float) -> None:
        self.last = now
