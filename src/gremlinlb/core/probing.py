"""Probe scheduling: when each host is probed next, and what a probe's result makes of it.

Two parts, as Envoy keeps its health checker apart from the host set: `after_probe`, a pure
table from a host's state and one probe result to its next state, and `ProbeSchedule`, the
per-class probe queues that hand out due probes fairly and cheaply. The balancer applies the
verdicts (entering rotation, going down); nothing here changes a host's state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gremlinlb.core.endpoints import HostState
from gremlinlb.core.health import HealthCounter
from gremlinlb.core.settings import BalancerSettings

if TYPE_CHECKING:
    from gremlinlb.core.hosts import Host


@dataclass(slots=True)
class ProbeRecord:
    """One host's part of probe scheduling."""

    probed_at: float = -math.inf  # when its last probe result came in
    probing_since: float | None = None  # handed out for a probe, result not in yet


def after_probe(
    state: HostState,
    ok: bool,
    *,
    suspect: bool,
    ejection_over: bool,
    health: HealthCounter,
) -> HostState:
    """The state one probe result leads to (only `health`'s rise/fall counts change).

    Joining hosts serve after one pass and are down after one failure; ejected ones stay out
    until their time is up, then one pass brings them back (a failure: down); a healthy host
    a connection loss or timeout made suspect goes down at its first failure; otherwise
    rise/fall decide. A busy host (its probe found alive) gets no verdict: the caller skips it.
    """
    if state is HostState.JOINING:
        return HostState.HEALTHY if ok else HostState.DOWN
    if state is HostState.EJECTED:
        if not ejection_over:
            return state
        return HostState.HEALTHY if ok else HostState.DOWN
    if state is HostState.HEALTHY and suspect and not ok:
        return HostState.DOWN
    return health.record(state, ok)


# Which probe queue a state's hosts wait in; draining hosts are never probed.
_QUEUE_OF = {
    HostState.HEALTHY: "serving",
    HostState.EJECTED: "serving",
    HostState.JOINING: "joining",
    HostState.DOWN: "down",
}


class ProbeSchedule:
    """Probe queues by class, each in the order its hosts were last handed out for a probe
    (a host handed out goes to the back): hosts in rotation (healthy, ejected), joining ones,
    down ones. `due` serves them in that order, and stops in a joining or down queue at its
    first host not due (all after it were probed later, at one interval): a list of 20,000
    dead hosts costs a probe round what is due, not 20,000 checks a tick. The balancer keeps
    a host in the queue of its state (`enqueue`/`dequeue` around every state change)."""

    def __init__(self, settings: BalancerSettings) -> None:
        self.settings = settings
        self._queues: dict[str, dict[Host, None]] = {"serving": {}, "joining": {}, "down": {}}

    @property
    def serving(self) -> list[Host]:
        """The hosts in rotation (healthy or ejected), in probe order."""
        return list(self._queues["serving"])

    def enqueue(self, host: Host) -> None:
        name = _QUEUE_OF.get(host.state)
        if name is not None:
            self._queues[name][host] = None

    def dequeue(self, host: Host) -> None:
        name = _QUEUE_OF.get(host.state)
        if name is not None:
            self._queues[name].pop(host, None)

    def targets(self, ring: list[Host], now: float) -> list[Host]:
        """Every host a full probe round covers now (an on-demand round, e.g. an operator's
        "check now"): joining, down, ejected ones whose time is up, healthy ones if
        configured."""
        wanted = {HostState.DOWN, HostState.JOINING}
        if self.settings.health.probe_healthy:
            wanted.add(HostState.HEALTHY)
        return [
            h
            for h in ring
            if h.state in wanted
            or (h.state is HostState.EJECTED and (h.evidence.ejected_until or 0.0) <= now)
        ]

    def due(self, now: float, limit: int | None, any_healthy: bool) -> list[Host]:
        """The hosts whose probe is due now, at most `limit`; each is marked as being probed
        (see `probing`) and goes to the back of its queue: nobody starves."""
        due: list[Host] = []
        for name, queue in self._queues.items():
            ordered = name != "serving"  # one interval for all: due in queue order
            picked: list[Host] = []
            for host in queue:
                if limit is not None and len(due) >= limit:
                    break
                if self.probing(host, now):
                    continue
                if self.due_at(host, any_healthy) <= now:
                    host.probe.probing_since = now
                    due.append(host)
                    picked.append(host)
                elif ordered and not host.evidence.suspect:
                    break
            for host in picked:
                del queue[host]
                queue[host] = None
        return due

    def next_in(self, now: float, any_healthy: bool) -> float:
        """Seconds until `due` names a host (0 if one is due now); the interval if none."""
        soonest = math.inf
        lost_after = self.lost_after()
        for name, queue in self._queues.items():
            ordered = name != "serving"
            for host in queue:  # every host in rotation; of the others, the front ones
                since = host.probe.probing_since
                if since is not None and self.probing(host, now):
                    soonest = min(soonest, since + lost_after)
                    continue
                soonest = min(soonest, self.due_at(host, any_healthy))
                if ordered and not host.evidence.suspect:
                    break
            if ordered and queue:  # probes handed out last are at the back
                for host in reversed(queue):
                    since = host.probe.probing_since
                    if since is None:
                        break
                    soonest = min(soonest, since + lost_after)
        interval = self.settings.health.interval
        return interval if soonest == math.inf else max(0.0, soonest - now)

    def due_at(self, host: Host, any_healthy: bool) -> float:
        """When `host`'s next probe is due: suspect ones at once, healthy ones every
        interval (with probe_healthy), ejected ones when their time is up, joining and down
        ones every unhealthy_interval (outage_interval while no host is healthy)."""
        health = self.settings.health
        state = host.state
        if state is HostState.DRAINING:
            return math.inf
        if host.evidence.suspect:
            return -math.inf
        if state is HostState.HEALTHY:
            return host.probe.probed_at + health.interval if health.probe_healthy else math.inf
        if state is HostState.EJECTED:
            until = host.evidence.ejected_until
            return until if until is not None else -math.inf
        interval = health.unhealthy_interval if any_healthy else health.outage_interval
        return host.probe.probed_at + interval

    def probing(self, host: Host, now: float) -> bool:
        """Whether a probe handed out for `host` could still be running."""
        since = host.probe.probing_since
        return since is not None and now - since < self.lost_after()

    def lost_after(self) -> float:
        return probe_lost_after(self.settings)


def probe_lost_after(settings: BalancerSettings) -> float:
    """A probe not reported by then is lost: its timeouts passed (the status probe's too, when
    on), plus a second."""
    health = settings.health
    status = health.status_timeout if health.status_probe else 0.0
    return health.timeout + settings.connect_timeout + status + 1.0
