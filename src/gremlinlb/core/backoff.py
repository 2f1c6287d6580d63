"""The one retry delay: the operator's loops (pushes, watches, API calls) and the sidecar's
watch of the operator wait by it."""

from __future__ import annotations

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
