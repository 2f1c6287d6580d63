"""Routing: which candidates a request is picked among, and the pick.

Hosts known to lack the traversal source a request names are skipped first (while one that
serves it is left).

As linkerd's balancer keeps choice apart from discovery and load: a request's `Candidates`
(its kind, the hosts it already failed on, whether it comes from the buffer or is a hedge)
select the hosts that fit; roles (writers, readers, read_routing), then the client's zone
(Envoy's spill-over plan, core.topology), then the policy (round-robin, two choices by in
flight or by peak-EWMA cost) through slow start's gate choose among them. The router reads
the balancer's rings (the same lists, kept sorted by the balancer) and keeps the counts
of roles and zones they hold.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from gremlinlb.core.buffer import Waiter
from gremlinlb.core.endpoints import Endpoint, HostState, Role
from gremlinlb.core.errors import BufferTimeoutError
from gremlinlb.core.hedging import HedgeRule
from gremlinlb.core.hosts import Host
from gremlinlb.core.lease import Lease
from gremlinlb.core.outliers import OutlierDetector
from gremlinlb.core.picking import LeastCost, LeastInFlight, Picker, RoundRobin
from gremlinlb.core.samples import median
from gremlinlb.core.settings import BalancerSettings, Policy, ReadRouting
from gremlinlb.core.slowstart import SlowStart
from gremlinlb.core.sources import TraversalSources, skip_for_source
from gremlinlb.core.topology import ZonePlan, client_zones, plan_zones

# Peak-EWMA cost of a host with no data while no other host has any either.
DEFAULT_RTT = 0.01

Filter = Callable[[Host], bool]


@dataclass(frozen=True, slots=True)
class Candidates:
    """What one pick is among. `write`: writers only (a request that may write, a session);
    else readers, then writers by read_routing. `exclude`: hosts this request already failed
    on. `buffered`: a buffered request being released (no suspect host, at most
    release_per_host buffered ones per host). `answering`: a hedge (only hosts that answer).
    Then, with the client's zone known, a host in that zone is preferred (core.topology).
    Retries and hedges pass the same `write`: a request never changes its kind, and waits
    while no candidate of its kind is healthy."""

    write: bool = True
    exclude: Collection[Endpoint] = ()
    buffered: bool = False
    answering: bool = False


# The candidates of a first attempt (no exclusions, not a hedge), by `write`: shared.
PLAIN = {True: Candidates(write=True), False: Candidates(write=False)}


class Router:
    """Picks hosts for requests; counts attempts by role and zone."""

    def __init__(
        self,
        settings: BalancerSettings,
        ring: list[Host],
        healthy_ring: list[Host],
        *,
        zone: str | None,
        clients: Mapping[str, int] | None,
        rng: random.Random,
        slow_start: SlowStart,
        outliers: OutlierDetector,
        hedging: HedgeRule,
    ) -> None:
        self.settings = settings
        self.zone = zone
        self.clients = client_zones(clients)
        self._ring = ring  # every host, sorted by seq (the balancer's list)
        self._healthy_ring = healthy_ring  # the healthy ones, sorted by seq (idem)
        self._rng = rng
        self._slow_start = slow_start
        self._outliers = outliers
        self._hedging = hedging
        self._roles: Counter[Role] = Counter()  # of the listed hosts
        self.any_roles = False  # some listed host is only a writer or only a reader
        self.zoned = 0  # listed hosts that carry a zone
        self._plans: dict[str, ZonePlan] = {}  # by candidate kind; cleared on any change
        self.by_role: Counter[Role] = Counter()
        self.same_zone = 0
        self.cross_zone = 0
        self._picker = self._make_picker(settings.policy)
        # Round-robin keeps one cursor per candidate group (kind, zone): with one shared cursor
        # a read after each write would always start from the same reader.
        self._cursors: dict[tuple[str, str | None], Picker] = {}
        # which hosts lack which traversal source (fed by the adapters' health loops)
        self.sources = TraversalSources()

    def update(self, settings: BalancerSettings) -> None:
        if settings.policy is not self.settings.policy:
            self._picker = self._make_picker(settings.policy)
            self._cursors.clear()
        self.settings = settings
        self._plans.clear()

    def set_clients(self, clients: Mapping[str, int] | None) -> None:
        canonical = client_zones(clients)
        if canonical != self.clients:
            self.clients = canonical
            self._plans.clear()

    def changed(self) -> None:
        """Hosts or their health changed: zone plans are computed afresh."""
        self._plans.clear()

    def count(self, endpoint: Endpoint, sign: int) -> None:
        """A listed host (+1) or one unlisted (-1), by role and zone."""
        self._roles[endpoint.role] += sign
        self.any_roles = bool(self._roles[Role.WRITER] or self._roles[Role.READER])
        self.zoned += sign if endpoint.zone is not None else 0
        self._plans.clear()

    def lease(
        self, host: Host, now: float, *, hedge: bool = False, session: bool = False, write: bool
    ) -> Lease:
        """An attempt on `host` from `now`: in flight there until it ends."""
        lease = Lease(host.endpoint, now, hedge=hedge, session=session, write=write)
        host.leases[lease] = None
        self._leased(host.endpoint)
        return lease

    def _leased(self, endpoint: Endpoint) -> None:
        """An attempt sent to `endpoint`: counted by its role and zone."""
        self.by_role[endpoint.role] += 1
        if self.zone is not None and endpoint.zone is not None:
            if endpoint.zone == self.zone:
                self.same_zone += 1
            else:
                self.cross_zone += 1

    def zone_plans(self) -> dict[str, ZonePlan]:
        if self.zone is None or not self.zoned or not self.settings.zone_aware:
            return {}
        kinds = dict.fromkeys((self.kind_for(write=True), self.kind_for(write=False)))
        return {kind: self._plan_for(kind) for kind in kinds}

    def may_serve(self, host: Host, write: bool) -> bool:
        """Whether `host` is a candidate at all for a request of this kind."""
        if write:
            return host.endpoint.role.writes
        if self.settings.read_routing is ReadRouting.READERS_ONLY:
            return host.endpoint.role.reads
        return True

    def kind_for(self, *, write: bool) -> str:
        """The candidates a request of this kind is picked among first: every host while no
        host has a role of its own (or reads may go anywhere), else writers or readers."""
        if not self.any_roles or (not write and self.settings.read_routing is ReadRouting.ANY):
            return "all"
        return "writers" if write else "readers"

    def skip_for_source(
        self, source: str | None, exclude: Collection[Endpoint]
    ) -> Collection[Endpoint]:
        """`exclude` plus the hosts known to lack `source`, as long as a healthy host that
        serves it is left."""
        missing = self.sources.missing_on(source)
        if not missing:
            return exclude
        healthy = [h.endpoint for h in self._healthy_ring]
        return skip_for_source(missing, healthy, exclude)

    def serves_elsewhere(
        self, missing: Collection[Endpoint], exclude: Collection[Endpoint]
    ) -> bool:
        """Whether a healthy host outside `exclude` and `missing` is left."""
        return any(
            h.endpoint not in exclude and h.endpoint not in missing for h in self._healthy_ring
        )

    def pick(self, candidates: Candidates, now: float) -> Host | None:
        """The next host among `candidates`: its kind's hosts, then the client's zone, then
        the policy among the healthy ones. Hosts deprioritised as stuck are picked only when
        no other fits; a hedge goes only to a host that answers."""
        fits: Filter
        if candidates.buffered:
            cap = self.settings.buffer.release_per_host

            def fits(host: Host) -> bool:
                return (
                    host.state is HostState.HEALTHY
                    and not host.evidence.suspect
                    and len(host.from_buffer) < cap
                )

        elif candidates.exclude:
            exclude = candidates.exclude

            def fits(host: Host) -> bool:
                return host.state is HostState.HEALTHY and host.endpoint not in exclude

        else:
            fits = _healthy

        answering = candidates.answering
        stuck = self._outliers.stuck_hosts
        if stuck or answering:
            preferred = _and(fits, self._hedging.answering(now)) if answering else fits
            if stuck:
                preferred = _and(preferred, _not_stuck)
            host = self._pick_kind(preferred, now, write=candidates.write)
            if host is not None or answering:
                return host  # a hedge goes only to a host that answers
        return self._pick_kind(fits, now, write=candidates.write)

    def wait_timeout_error(self, waiter: Waiter, max_wait: float) -> BufferTimeoutError:
        """Why a waiter found no host in time, naming the role it waited for if one."""
        if self.any_roles and waiter.write:
            what = "no writer (role writer or any) became healthy"
            why = "requests that may write, sessions and transactions go to writers only"
        elif self.any_roles and self.settings.read_routing is ReadRouting.READERS_ONLY:
            what = "no reader (role reader or any) became healthy"
            why = "read_routing is readers_only, so reads do not go to writers"
        else:
            return BufferTimeoutError(
                f"no Gremlin Server became healthy within max_wait={max_wait}s; the request "
                "was not sent. Restore a backend or raise max_wait."
            )
        return BufferTimeoutError(
            f"{what} within max_wait={max_wait}s; the request was not sent ({why}). "
            "Restore such a backend or raise max_wait."
        )

    def _pick_kind(self, fits: Filter, now: float, *, write: bool) -> Host | None:
        # One pick's view of the peak-EWMA costs (only the policy that reads them needs one).
        costs = _Costs(now, self._healthy_ring) if isinstance(self._picker, LeastCost) else None
        kind = self.kind_for(write=write)
        if kind == "all":
            return self._pick_in_zone(fits, "all", now, costs)
        if kind == "writers":
            return self._pick_in_zone(_and(fits, _writes), "writers", now, costs)
        host = self._pick_in_zone(_and(fits, _reads), "readers", now, costs)
        if host is None and self.settings.read_routing is ReadRouting.PREFER_READERS:
            host = self._pick_in_zone(_and(fits, _writes), "writers", now, costs)
        return host

    def _pick_in_zone(
        self, fits: Filter, kind: str, now: float, costs: _Costs | None
    ) -> Host | None:
        """Among the candidates of one `kind`, the client's zone first by its plan."""
        if self.zone is not None and self.zoned and self.settings.zone_aware:
            plan = self._plan_for(kind)
            if plan.preferred:
                target = plan.zone_for(self._rng.random(), self._rng.random(), self.zone)
                if target is not None:
                    in_zone = _and(fits, lambda h: h.endpoint.zone == target)
                    host = self._choose(in_zone, now, (kind, target), costs)
                    if host is not None:
                        return host
        return self._choose(fits, now, (kind, None), costs)

    def _plan_for(self, kind: str) -> ZonePlan:
        """The plan of one candidate kind, cached until the hosts, their health, the
        settings or the client distribution change."""
        plan = self._plans.get(kind)
        if plan is None:
            assert self.zone is not None
            serves = _KINDS[kind]
            plan = self._plans[kind] = plan_zones(
                self.zone,
                (
                    (h.endpoint.zone, h.state is HostState.HEALTHY)
                    for h in self._ring
                    if h.state is not HostState.DRAINING and serves(h)
                ),
                self.clients,
                self.settings.zone_min_cluster_size,
            )
        return plan

    def _choose(
        self, fits: Filter, now: float, group: tuple[str, str | None], costs: _Costs | None
    ) -> Host | None:
        """The policy's pick among hosts that fit, in one candidate `group`, through slow
        start's gate."""
        picker = self._picker
        if isinstance(picker, RoundRobin) and group != ("all", None):
            picker = self._cursors.get(group) or self._cursors.setdefault(group, RoundRobin())
        elif costs is not None:
            picker = LeastCost(costs.of, self._rng)  # the same rng: picks stay repeatable
        return self._slow_start.pick(picker, self._healthy_ring, fits, now)

    def _make_picker(self, policy: Policy) -> Picker:
        if policy is Policy.ROUND_ROBIN:
            return RoundRobin()
        # Two choices draw from the balancer's rng: a seeded one makes every pick repeatable.
        if policy is Policy.LEAST_IN_FLIGHT:
            return LeastInFlight(self._rng)
        return LeastCost(_Costs(0.0, self._healthy_ring).of, self._rng)


class _Costs:
    """Peak-EWMA x (in flight + 1) at one instant; a host with no data costs its peers'
    median, computed once per pick."""

    def __init__(self, now: float, healthy: Sequence[Host]) -> None:
        self._now = now
        self._healthy = healthy
        self._default: float | None = None

    def of(self, host: Host) -> float:
        estimate = host.ewma.value(self._now)
        if estimate is None:
            if self._default is None:
                known = [v for h in self._healthy if (v := h.ewma.value(self._now)) is not None]
                peers = median(known)
                self._default = DEFAULT_RTT if peers is None else peers
            estimate = self._default
        return estimate * (host.in_flight + 1)


def _healthy(host: Host) -> bool:
    return host.state is HostState.HEALTHY


def _not_stuck(host: Host) -> bool:
    return not host.evidence.stuck


def _writes(host: Host) -> bool:
    return host.endpoint.role.writes


def _reads(host: Host) -> bool:
    return host.endpoint.role.reads


def _and(first: Filter, second: Filter) -> Filter:
    return lambda host: first(host) and second(host)


# Which hosts a candidate kind is drawn from.
_KINDS: dict[str, Filter] = {
    "writers": _writes,
    "readers": _reads,
    "all": lambda host: True,
}
