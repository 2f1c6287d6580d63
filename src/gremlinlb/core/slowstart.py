"""Slow start: a host back in rotation gets a growing share of requests over a window.

Envoy's slow start (weight from min_weight_percent up to full over slow_start_window), gated
by credit so round-robin and two choices both honour it.
"""

from __future__ import annotations

from dataclasses import dataclass

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
