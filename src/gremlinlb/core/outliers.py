"""Outlier detection: evidence per host apart from verdicts over the fleet.

As Envoy's DetectorHostMonitorImpl (per host) apart from DetectorImpl (fleet), each host
keeps its own `Evidence` (answers, failures in a row, latency window, ejection history), and
the verdicts compare a host with its peers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from gremlinlb.core.latency import Samples

# A host's typical latency is the median of its last RECENT answers, and counts only with at
# least MIN_SAMPLES of them: one slow query can never make a host look slow. It is ejected as
# slow only when found slow again after RECENT more answers (two successive windows): on a
# CPU-starved machine servers take turns being descheduled for a fraction of a second, and one
# window of it made every client eject a healthy server for base_ejection seconds (measured in
# `make bench`: 8 of 8 client processes, every 64-worker cell, 10-15 points of throughput).
RECENT = 16
MIN_SAMPLES = 8


@dataclass(slots=True)
class Evidence:
    """One host's outlier evidence."""

    recent: Samples = field(default_factory=lambda: Samples(RECENT))
    samples: int = 0  # latency samples ever taken: how far `recent` moved on
    slow_mark: int | None = None  # `samples` when first found slow, until found not slow
    last_answer: float = -math.inf
    failures_in_row: int = 0
    # A connection loss or timeout made us doubt it: probe it now, hand it no buffered request.
    suspect: bool = False
    # Stuck (requests in flight, no answer while its peers answer) when the share cap left no
    # room to eject it: it gets new requests only when no other candidate is left, and is not
    # counted as ejected. Cleared by its next answer or passing probe.
    stuck: bool = False
    probe_passed_at: float = -math.inf  # the last probe it answered
    # The last probe whose traversal got no answer in time while the server itself answered
    # (a WebSocket ping on the probe's own connection): alive, its workers busy with slow work.
    alive_at: float = -math.inf
    ejections: int = 0
    ejection_level: int = 0  # the multiplier of base_ejection; decays while healthy
    ejected_until: float | None = None
    returned_at: float | None = None

    def sample(self, latency: float) -> None:
        self.recent.append(latency)
        self.samples += 1

    def typical(self) -> float | None:
        return self.recent.quantile(0.5) if len(self.recent) >= MIN_SAMPLES else None
