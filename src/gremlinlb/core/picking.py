"""Choosing the next backend among the healthy ones.

Round-robin keeps a cursor on the *sequence number* of the last host picked, not on a list
index, so hosts joining or leaving never shift the ring under it: no host takes two turns in a
row while another healthy host waits (not even one removed and added back, which comes back
with a new sequence number, right after the cursor).
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar


class Candidate(Protocol):
    @property
    def seq(self) -> int: ...

    @property
    def endpoint(self) -> Any: ...

    @property
    def in_flight(self) -> int: ...


C = TypeVar("C", bound=Candidate)


def _seq(host: Candidate) -> int:
    return host.seq


class RoundRobin:
    def __init__(self) -> None:
        self._last_seq = -1
        self._last_endpoint: Any = None

    def pick(self, ring: Sequence[C], eligible: Callable[[C], bool]) -> C | None:
        """`ring` is sorted by seq; return the first eligible host after the last one picked,
        the server picked last only if no other is eligible."""
        if not ring:
            return None
        start = bisect.bisect_right(ring, self._last_seq, key=_seq)
        count = len(ring)
        again: C | None = None
        for offset in range(count):
            host = ring[(start + offset) % count]
            if eligible(host):
                if host.endpoint == self._last_endpoint and again is None:
                    again = host  # the same server as last time: only if nobody else can
                    continue
                return self._take(host)
        return None if again is None else self._take(again)

    def _take(self, host: C) -> C:
        self._last_seq = host.seq
        self._last_endpoint = host.endpoint
        return host


class LeastInFlight:
    """Power of two choices: sample two eligible hosts, take the one with fewer in flight."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def pick(self, ring: Sequence[C], eligible: Callable[[C], bool]) -> C | None:
        hosts = [host for host in ring if eligible(host)]
        if len(hosts) <= 1:
            return hosts[0] if hosts else None
        first, second = self._rng.sample(hosts, 2)
        return first if first.in_flight <= second.in_flight else second


class LeastCost:
    """Power of two choices by a cost the balancer computes (peak-EWMA x (in flight + 1)).

    Linkerd's balancer: two random candidates keep the choice cheap and avoid herding onto
    the single best host, the cost steers away from the slow and the busy.
    """

    def __init__(self, cost: Callable[[Any], float], rng: random.Random | None = None) -> None:
        self._cost = cost
        self._rng = rng or random.Random()

    def pick(self, ring: Sequence[C], eligible: Callable[[C], bool]) -> C | None:
        hosts = [host for host in ring if eligible(host)]
        if len(hosts) <= 1:
            return hosts[0] if hosts else None
        first, second = self._rng.sample(hosts, 2)
        return first if self._cost(first) <= self._cost(second) else second


Picker = RoundRobin | LeastInFlight | LeastCost
