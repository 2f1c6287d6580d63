"""The timing of the operator's loops: the one retry delay (core.backoff, shared with the
sidecar's watch), and the pacing of changes that must not become a push each."""

from __future__ import annotations

import math
from dataclasses import dataclass

from gremlinlb.core.backoff import Backoff as Backoff


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
