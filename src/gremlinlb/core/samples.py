"""Recent latencies and their order statistics (medians, percentiles) for ejecting hosts and
sizing the hedge delay: a median cannot be moved by one slow query.

Not compiled with mypyc (gremlinlb.native): Samples subclasses deque, which a native class
cannot; the append on the hot path is deque's own C code either way.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable


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
