"""Slow start: a host back in rotation gets a growing share of requests over a window.

Envoy's slow start (weight from min_weight_percent up to full over slow_start_window), gated
by credit so round-robin and two choices both honour it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gremlinlb.core.picking import Picker, RoundRobin
from gremlinlb.core.settings import BalancerSettings

if TYPE_CHECKING:
    from gremlinlb.core.hosts import Host

# Slow start begins at this share of a full host (Envoy's min_weight_percent default).
MIN_WEIGHT = 0.1
# A ramping host's credit never exceeds this many requests' worth: one the policy keeps passing
# over (two choices found it busier) banks no burst for later.
MAX_CREDIT = 2.0


@dataclass(slots=True)
class Ramp:
    """One host's part of slow start."""

    start: float | None = None  # when its ramp began; None: at full weight
    credit: float = 0.0


class SlowStart:
    """When ramps end, and the credit gate a pick goes through while some host ramps."""

    def __init__(self, settings: BalancerSettings) -> None:
        self.settings = settings
        self.ends = -math.inf  # no host is in slow start from then on

    def start(self, host: Host, now: float) -> None:
        """`host` ramps up from `now` (nothing with slow start off)."""
        if self.settings.slow_start > 0:
            host.ramp.start = now
            self.ends = max(self.ends, now + self.settings.slow_start)
            host.ramp.credit = 1.0  # its first turn is taken: one request tells at once how it is

    def rescheduled(self, ring: Iterable[Host]) -> None:
        """New settings: ramps under way end by the new window."""
        starts = [h.ramp.start for h in ring if h.ramp.start is not None]
        self.ends = max(starts, default=-math.inf) + self.settings.slow_start

    def warming(self, host: Host, now: float) -> bool:
        """In slow start: just joined or back, maybe a cold JVM whose first answers take a
        second; it gets a small share meanwhile, so it is not judged stuck."""
        start = host.ramp.start
        return start is not None and now - start < self.settings.slow_start

    def pick(
        self, picker: Picker, ring: Sequence[Host], fits: Callable[[Host], bool], now: float
    ) -> Host | None:
        """The policy's pick among hosts that fit. Hosts in slow start are gated by credit:
        each time one is considered it earns its current weight, it is a candidate while it
        has a whole request's worth, and it spends that only when the policy picks it (two
        choices may pass over a candidate)."""
        if now >= self.ends:  # the common case: nobody in slow start
            return picker.pick(ring, fits)
        window = self.settings.slow_start
        ramping = False
        full = False
        candidates = 0
        for host in ring:
            ramp = host.ramp
            if ramp.start is not None and (window <= 0 or now - ramp.start >= window):
                ramp.start = None
            if fits(host):
                candidates += 1
                ramping = ramping or ramp.start is not None
                full = full or ramp.start is None
        if not (ramping and full):  # all at full weight, or all ramping alike: no gating
            return picker.pick(ring, fits)
        # Round-robin considers a host about once a round of picks; two choices consider every
        # candidate on every pick, so there a host earns its weight over a round of picks.
        per_turn = 1.0 if isinstance(picker, RoundRobin) else 1.0 / candidates

        def gated(host: Host) -> bool:
            if not fits(host):
                return False
            ramp = host.ramp
            if ramp.start is None:
                return True
            weight = max(MIN_WEIGHT, (now - ramp.start) / window)
            ramp.credit = min(ramp.credit + weight * per_turn, MAX_CREDIT)
            return ramp.credit >= 1.0

        chosen = picker.pick(ring, gated)
        if chosen is not None and chosen.ramp.start is not None:
            chosen.ramp.credit -= 1.0  # spent by the host picked, not by every candidate
        return chosen
