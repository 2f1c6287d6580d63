"""Zone-aware routing: how much traffic stays in the client's zone, and where the rest goes.

Envoy's rule (zone-aware routing, ``regenerateLocalityRoutingStructures``): keep the load per
host even across zones. It compares two distributions over the zones: the clients' (Envoy's
originating cluster: here the sidecars per zone the operator counts, or a distribution an
application gives) and the healthy hosts'. With ``local_pct`` the share of the clients in the
client's zone and ``upstream_pct`` its share of the healthy hosts:

* ``upstream_pct >= local_pct``: every request stays in the zone;
* else the zone is overloaded if it keeps everything (3 of 4 clients on 1 of 4 servers): it
  keeps ``upstream_pct / local_pct`` of its requests and sends the rest to the zones with
  residual capacity (``upstream_pct[z] - local_pct[z] > 0``), in proportion to it.

Without a client distribution the clients are assumed to be spread over the zones like the
hosts are listed (healthy or not), so only health makes a zone spill. A distribution that
counts no client in the client's own zone is stale or foreign and is ignored likewise (Envoy
turns zone routing off then; the listed share keeps the same-zone preference instead).

``min_hosts`` is Envoy's ``min_cluster_size``: below that many healthy hosts of a kind there
is no zone preference at all.

Pure: no clock, no randomness; the balancer draws.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction


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

    @property
    def preferred(self) -> bool:
        """Whether the plan prefers any zone at all."""
        return bool(self.local or self.spill)


# No preference: the client's zone is unknown, or lists no host, or no host is healthy.
NO_PREFERENCE = ZonePlan(local=0.0)


def client_zones(counts: Mapping[str, int] | None) -> dict[str, int] | None:
    """A client distribution made canonical: zones with no client dropped, None when empty.
    Refuses a blank zone name or a count that is not an integer >= 0 (ValueError)."""
    if counts is None:
        return None
    kept: dict[str, int] = {}
    for zone, count in counts.items():
        if not isinstance(zone, str) or not zone.strip():
            raise ValueError(f"client zone names must be non-empty strings, got {zone!r}")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ValueError(
                f"the client count of zone {zone!r} must be an integer >= 0, got {count!r}"
            )
        if count:
            kept[zone] = count
    return dict(sorted(kept.items())) or None


def plan_zones(
    local_zone: str,
    hosts: Iterable[tuple[str | None, bool]],
    clients: Mapping[str, int] | None = None,
    min_hosts: int = 1,
) -> ZonePlan:
    """The plan for a client in `local_zone` over `hosts` as (zone, healthy) pairs: the
    candidates of one kind (writers or readers), draining hosts left out. `clients` is the
    number of clients per zone (None: assume they are spread like the hosts are listed). A
    host with no zone counts as a zone of its own that is never local."""
    listed: Counter[str | None] = Counter()
    healthy: Counter[str | None] = Counter()
    for zone, up in hosts:
        listed[zone] += 1
        if up:
            healthy[zone] += 1
    total_healthy = sum(healthy.values())
    if not total_healthy or total_healthy < min_hosts:
        return NO_PREFERENCE
    share: Mapping[str | None, int]
    if clients and clients.get(local_zone, 0) > 0:
        share = {zone: count for zone, count in clients.items()}
    elif listed[local_zone]:
        share = listed
    else:
        return NO_PREFERENCE
    total_share = sum(share.values())

    def client_pct(zone: str | None) -> Fraction:
        return Fraction(share.get(zone, 0), total_share)

    def upstream_pct(zone: str | None) -> Fraction:
        return Fraction(healthy[zone], total_healthy)

    local_pct = client_pct(local_zone)
    if healthy[local_zone] and upstream_pct(local_zone) >= local_pct:
        return ZonePlan(local=1.0)
    keep = upstream_pct(local_zone) / local_pct
    residual = {
        zone: max(Fraction(0), upstream_pct(zone) - client_pct(zone))
        for zone, count in healthy.items()
        if zone != local_zone and zone is not None and count
    }
    if not sum(residual.values()):  # only rounding or zoneless hosts: by healthy hosts
        residual = {zone: Fraction(healthy[zone]) for zone in residual}
    total = sum(residual.values())
    if not total:  # only hosts without a zone are healthy elsewhere
        return ZonePlan(local=float(keep))
    spill = tuple(
        (zone, float(weight / total)) for zone, weight in sorted(residual.items()) if weight
    )
    return ZonePlan(local=float(keep), spill=spill)
