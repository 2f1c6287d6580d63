"""Zone-aware routing: how much traffic stays in the client's zone, and where the rest goes.

Envoy's rule (zone-aware routing): keep the load per host even across zones. The clients are
assumed to be spread over the zones like the hosts are listed (the originating cluster Envoy
compares with is, here, the host list itself, healthy or not). While the client's zone has at
least its share of the healthy hosts, every request stays in it. When it has fewer (some of
its hosts are down), it keeps healthy_share / listed_share of its requests and sends the
excess to the zones with more healthy hosts than their share, in proportion to that surplus.
Pure: no clock, no randomness; the balancer draws.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ZonePlan:
    """`local`: the share of requests to keep in the client's zone (0 to 1); `spill`: the
    other zones with the weight each takes of the rest (summing to 1 when there is a rest)."""

    local: float
    spill: tuple[tuple[str, float], ...] = ()

    def zone_for(self, draw: float, second: float, local_zone: str) -> str | None:
        """The zone a request goes to, from two uniform draws in [0, 1); None for any."""
        if draw < self.local:
            return local_zone
        for zone, weight in self.spill:
            if second < weight:
                return zone
            second -= weight
        return None


# No preference: the client's zone is unknown, or lists no host, or no host is healthy.
NO_PREFERENCE = ZonePlan(local=0.0)


def plan_zones(local_zone: str, hosts: Iterable[tuple[str | None, bool]]) -> ZonePlan:
    """The plan for a client in `local_zone` over `hosts` as (zone, healthy) pairs: the
    candidates of one kind (writers or readers), draining hosts left out. A host with no
    zone counts as a zone of its own that is never local."""
    listed: Counter[str | None] = Counter()
    healthy: Counter[str | None] = Counter()
    for zone, up in hosts:
        listed[zone] += 1
        if up:
            healthy[zone] += 1
    total_listed = sum(listed.values())
    total_healthy = sum(healthy.values())
    if not listed[local_zone] or not total_healthy:
        return NO_PREFERENCE
    expected = listed[local_zone] / total_listed
    actual = healthy[local_zone] / total_healthy
    if actual >= expected:
        return ZonePlan(local=1.0)
    return _spill_all(local_zone, listed, healthy, total_listed, total_healthy, actual / expected)


def _spill_all(
    local_zone: str,
    listed: Counter[str | None],
    healthy: Counter[str | None],
    total_listed: int,
    total_healthy: int,
    local: float,
) -> ZonePlan:
    """Send 1 - `local` of the requests to the other zones by their surplus of healthy hosts
    over their listed share (by their healthy hosts when none has a surplus)."""
    surplus: dict[str, float] = {}
    for zone, count in healthy.items():
        if zone == local_zone or zone is None or not count:
            continue
        surplus[zone] = max(0.0, count / total_healthy - listed[zone] / total_listed)
    if not sum(surplus.values()):
        surplus = {z: float(healthy[z]) for z in surplus}
    total = sum(surplus.values())
    if not total:  # only hosts without a zone are healthy elsewhere
        return ZonePlan(local=local)
    spill = tuple((zone, weight / total) for zone, weight in sorted(surplus.items()) if weight)
    return ZonePlan(local=local, spill=spill)
