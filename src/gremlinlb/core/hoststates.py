"""Host states and their transitions: the listed hosts, the rings picking reads, and the
state machine (joining, healthy, ejected, down, draining; relisting, passive returns).

Every transition goes through `set_state`, which keeps each unit's view in step (the healthy
ring, the probe queue of the state, the zone plans, the stuck flag) and returns the event the
balancer emits once its lock is released. The rules that decide a transition live with their
units (probing.after_probe, outliers.OutlierDetector); this table applies them.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import time
from collections.abc import Callable

from gremlinlb.core.endpoints import Endpoint, HostState
from gremlinlb.core.events import EventKind, HostEvent
from gremlinlb.core.health import HealthCounter
from gremlinlb.core.hosts import Host, seq_of
from gremlinlb.core.outliers import OutlierDetector
from gremlinlb.core.probing import ProbeSchedule, after_probe
from gremlinlb.core.routing import Router
from gremlinlb.core.settings import BalancerSettings
from gremlinlb.core.slowstart import SlowStart

# The balancer's logger: host news under one name (the demo quiets it as a whole).
log = logging.getLogger("gremlinlb.core.balancer")

# States a host comes back from through slow start.
_RAMPED = (HostState.DOWN, HostState.EJECTED, HostState.JOINING)


class HostTable:
    """The hosts by endpoint, the ring (every host, sorted by seq) and the healthy ring (the
    healthy ones, sorted by seq: what picking looks at, so a long list of dead hosts costs
    each pick nothing, issue 20). `ring` and `healthy_ring` are the lists the router reads."""

    def __init__(
        self,
        settings: BalancerSettings,
        ring: list[Host],
        healthy_ring: list[Host],
        *,
        probes: ProbeSchedule,
        outliers: OutlierDetector,
        slow_start: SlowStart,
        router: Router,
    ) -> None:
        self.settings = settings
        self.hosts: dict[Endpoint, Host] = {}
        self.ring = ring
        self.healthy_ring = healthy_ring
        self._seq = itertools.count()
        self._probes = probes
        self._outliers = outliers
        self._slow_start = slow_start
        self._router = router
        # Without health checks, when the next ejected or down host returns (see `expire`).
        self.next_expiry = math.inf

    def any_healthy(self) -> bool:
        return bool(self.healthy_ring)

    def add(self, endpoint: Endpoint, clock: Callable[[], float]) -> HostEvent:
        """A new host: JOINING until its first probe, or HEALTHY at once (slow start) when
        health checks are disabled."""
        health = self.settings.health
        host = Host(
            endpoint=endpoint,
            seq=next(self._seq),
            health=HealthCounter(health.rise, health.fall),
            state=HostState.JOINING if health.enabled else HostState.HEALTHY,
        )
        if not health.enabled:
            self._slow_start.start(host, clock())
        self.hosts[endpoint] = host
        self.ring.append(host)
        self._probes.enqueue(host)
        if host.state is HostState.HEALTHY:
            self.healthy_ring.append(host)  # the newest seq: sorted
        self._router.count(endpoint, 1)
        return HostEvent(EventKind.ADDED, endpoint, host.state)

    def retopology(self, host: Host, endpoint: Endpoint) -> None:
        """A kept host's new role or zone, in place."""
        if host.endpoint.same_topology(endpoint):
            return
        log.info(
            "host %s: role %s -> %s, zone %s -> %s",
            endpoint.address,
            host.endpoint.role.value,
            endpoint.role.value,
            host.endpoint.zone,
            endpoint.zone,
        )
        self._router.count(host.endpoint, -1)
        host.endpoint = endpoint
        del self.hosts[endpoint]  # the key keeps the old object otherwise
        self.hosts[endpoint] = host
        self._router.count(endpoint, 1)

    def drain(self, host: Host, now: float) -> HostEvent:
        """Removed with requests in flight: it drains, remembering the state it had."""
        if host.state is not HostState.DRAINING:
            host.drained_from = host.state
            host.drained_at = now
        return self.set_state(host, HostState.DRAINING, "removed, draining")

    def relist(self, host: Host, now: float) -> HostEvent:
        """A draining host listed again returns to the state it had before draining (a pod
        flapping NotReady -> Ready): what the first listing learnt still holds.

        Ejected, it stays out for the rest of its time and is probed then; unless others were
        ejected in its place meanwhile and the share cap no longer has room for it: its
        ejection ends, but it serves only once a probe passes (as a joining host). Down, it
        waits for its probes; joining, for its first. Healthy, it serves at once, through a
        new slow start if it was out for a slow-start window or longer (a shorter drain kept
        it serving its requests, as warm as it was; a ramp it was in goes on). Without health
        checks nothing probes: a joining host serves at once (slow start), ejected and down
        ones return when their time is up.
        """
        state = host.drained_from or HostState.HEALTHY
        host.drained_from = None
        reason = "listed again while draining"
        if state is HostState.EJECTED and not self._outliers.within_cap(host, self.ring):
            state = HostState.JOINING
            host.evidence.ejected_until = None
            host.probe.probed_at = -math.inf  # probed at once, like a host whose time is up
            reason += f"; its ejection ends (max_ejected_share), {state.value} until probed"
        if state is HostState.HEALTHY:
            if now - host.drained_at >= self.settings.slow_start:
                self._slow_start.start(host, now)
            return self.set_state(host, state, reason)
        if not self.settings.health.enabled:
            if state is HostState.JOINING:
                self._slow_start.start(host, now)
                return self.enter_healthy(host, f"{reason}; health checks disabled", now)
            self.next_expiry = -math.inf  # recompute when it returns
        return self.set_state(host, state, reason)

    def probed(
        self,
        host: Host,
        ok: bool,
        error: str | None,
        *,
        alive: bool,
        now: float,
        ramp_from: float,
    ) -> list[HostEvent] | None:
        """A probe's result applied by probing.after_probe's table; None when it gives no
        verdict (a healthy host found alive, its workers busy: see Balancer.record_probe)."""
        host.probe.probing_since = None
        host.probe.probed_at = now
        evidence = host.evidence
        if ok:
            evidence.probe_passed_at = now
            self._outliers.set_stuck(host, False)
        suspect, evidence.suspect = evidence.suspect, False
        if not ok and error:
            host.last_error = f"probe: {error}"
        state = host.state
        if not ok and alive and state is HostState.HEALTHY:
            evidence.alive_at = now
            return None
        until = evidence.ejected_until
        new_state = after_probe(
            state,
            ok,
            suspect=suspect,
            ejection_over=until is None or until <= now,
            health=host.health,
        )
        if new_state is HostState.HEALTHY and state is not HostState.HEALTHY:
            return [self.enter_healthy(host, "probe passed", now, ramp_from=ramp_from)]
        if new_state is HostState.DOWN and state is not HostState.DOWN:
            return [self.go_down(host, f"probe failed: {error or 'no answer'}", now)]
        return []

    def eject(self, host: Host, reason: str, detail: str, now: float) -> HostEvent:
        """Out of rotation for an outlier verdict, for a time the detector sets."""
        duration = self._outliers.eject(host, reason, now)
        host.ramp.start = None
        if not self.settings.health.enabled:
            assert host.evidence.ejected_until is not None
            self.next_expiry = min(self.next_expiry, host.evidence.ejected_until)
        return self.set_state(
            host, HostState.EJECTED, f"outlier: {detail}; ejected for {duration:g}s"
        )

    def go_down(self, host: Host, reason: str, now: float) -> HostEvent:
        host.health.reset()
        host.evidence.suspect = False
        host.ramp.start = None
        host.evidence.ejected_until = None
        if not self.settings.health.enabled:
            host.down_until = now + self.settings.health.unhealthy_interval
            self.next_expiry = min(self.next_expiry, host.down_until)
        return self.set_state(host, HostState.DOWN, reason)

    def enter_healthy(
        self, host: Host, reason: str, now: float, *, ramp_from: float | None = None
    ) -> HostEvent:
        """Back in rotation: fresh outlier state, and slow start if it comes back (from
        `ramp_from`, default now)."""
        if host.state in _RAMPED:
            self._slow_start.start(host, now if ramp_from is None else ramp_from)
        self._outliers.returned(host, now)  # judged by what it does from now on
        host.down_until = None
        return self.set_state(host, HostState.HEALTHY, reason)

    def expire(self, now: float) -> list[HostEvent]:
        """Without health checks, ejected and down hosts return when their time is up."""
        if now < self.next_expiry:
            return []
        self.next_expiry = math.inf
        if self.settings.health.enabled:
            return []
        events: list[HostEvent] = []
        for host in self.ring:
            if host.state is HostState.DOWN and host.down_until is None:
                host.down_until = now + self.settings.health.unhealthy_interval
            until = {
                HostState.EJECTED: host.evidence.ejected_until,
                HostState.DOWN: host.down_until,
            }.get(host.state)
            if until is None:
                continue
            if until <= now:
                events.append(self.enter_healthy(host, "its time out of rotation is over", now))
            else:
                self.next_expiry = min(self.next_expiry, until)
        return events

    def set_state(self, host: Host, state: HostState, reason: str) -> HostEvent:
        previous = host.state
        self._outliers.set_stuck(host, False)  # judged afresh in its new state
        self._probes.dequeue(host)
        if previous is HostState.HEALTHY and state is not HostState.HEALTHY:
            self._unlist_healthy(host)
        elif state is HostState.HEALTHY and previous is not HostState.HEALTHY:
            bisect.insort(self.healthy_ring, host, key=seq_of)
        host.state = state
        self._probes.enqueue(host)
        self._router.changed()
        host.state_since = time.time()
        # A joining host that fails its first probe is news only at INFO: a pushed list may
        # name thousands that are not up yet.
        loud = state in (HostState.DOWN, HostState.EJECTED) and previous is not HostState.JOINING
        log.log(
            logging.WARNING if loud else logging.INFO,
            "host %s: %s -> %s (%s)",
            host.endpoint.address,
            previous.value,
            state.value,
            reason,
        )
        return HostEvent(EventKind.STATE_CHANGED, host.endpoint, state, previous, reason)

    def drop(self, host: Host) -> HostEvent:
        """Gone from the list (removed, or drained)."""
        del self.hosts[host.endpoint]
        self._probes.dequeue(host)
        if host.state is HostState.HEALTHY:
            self._unlist_healthy(host)
        self._outliers.set_stuck(host, False)
        self._router.count(host.endpoint, -1)
        # The ring is sorted by seq: find the host by bisection, not by comparing every host.
        index = bisect.bisect_left(self.ring, host.seq, key=seq_of)
        assert self.ring[index] is host, "the ring must stay sorted by seq"
        del self.ring[index]
        log.info("host %s removed", host.endpoint.address)
        return HostEvent(EventKind.REMOVED, host.endpoint, host.state)

    def _unlist_healthy(self, host: Host) -> None:
        index = bisect.bisect_left(self.healthy_ring, host.seq, key=seq_of)
        assert self.healthy_ring[index] is host, "the healthy ring must stay sorted by seq"
        del self.healthy_ring[index]
