"""Hedging: when a read still unanswered deserves a second attempt, and where it may go.

The rule apart from the picking: the adaptive hedge delay (a percentile of recent answers),
whether a read ran normally on its host (re-sent, it would run twice: Gremlin 3.x cannot
cancel it), whether a host is quiet (hung, or its workers busy), and which hosts answer (a
hedge to a silent one rescues nothing). The balancer asks under its lock and spends budgets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from gremlinlb.core.endpoints import HostState
from gremlinlb.core.lease import Lease
from gremlinlb.core.samples import Samples
from gremlinlb.core.settings import BalancerSettings

if TYPE_CHECKING:
    from gremlinlb.core.hosts import Host

# The hedge delay comes from the last WINDOW answers of all hosts, once there are
# MIN_SAMPLES; it is recomputed at most every REFRESH seconds.
WINDOW = 1000
MIN_SAMPLES = 20
REFRESH = 0.1


class HedgeRule:
    """The hedge rule and its counters (hedges sent, hedges that answered first)."""

    def __init__(self, settings: BalancerSettings) -> None:
        self.settings = settings
        self._latencies = Samples(WINDOW)  # successes of every host, newest last
        self._delay: tuple[float, float] | None = None  # (computed at, value)
        self.sent = 0
        self.won = 0

    def answered(self, latency: float) -> None:
        """A success's latency: the hedge delay is a percentile of these."""
        self._latencies.append(latency)

    def forget_delay(self) -> None:
        """New settings: compute the delay afresh at the next ask."""
        self._delay = None

    def delay_at(self, now: float) -> float:
        """The configured percentile of recent latencies, within [delay_floor, max_delay];
        max_delay until enough answers were seen."""
        cached = self._delay
        if cached is not None and now - cached[0] < REFRESH:
            return cached[1]
        settings = self.settings.hedge
        value = settings.max_delay
        if len(self._latencies) >= MIN_SAMPLES:
            recent = self._latencies.quantile(settings.percentile)
            assert recent is not None
            value = min(max(recent, settings.delay_floor), settings.max_delay)
        self._delay = (now, value)
        return value

    def hedgeable(self, lease: Lease) -> bool:
        """Only reads are ever hedged: no hedge of a hedge, no session, nothing that may write
        (sent twice, a write may be applied twice), and only with hedging enabled."""
        return self.settings.hedge.enabled and not (lease.hedge or lease.session or lease.write)

    def should_hedge(self, host: Host, lease: Lease, now: float, *, pings: bool) -> bool:
        """For a hedgeable `lease` in flight on `host` (see Balancer.should_hedge).

        Yes when its host is out of rotation or deprioritised as stuck, unless the request ran
        normally there (see `ran_normally`): what it was running when it last answered (or
        answered a ping) is a slow query, and a hedge would run it twice (Gremlin 3.x cannot
        cancel it). While its host is healthy and not found stuck: with `pings` (the adapter
        asks a quiet host a ping, see Balancer.is_quiet and record_ping), no: several slow
        queries sent at once fill a server's workers together and no timing tells them from a
        hang, the ping does, within about a second. Without: yes when the host answered
        nothing since this read started although it has been given newer requests (it is not
        serving), no when it answers others meanwhile (a slow query)."""
        if host.state in (HostState.DOWN, HostState.EJECTED) or host.evidence.stuck:
            return not self.ran_normally(host, lease, now)
        return not pings and self.quiet(host, lease)

    def quiet(self, host: Host, lease: Lease) -> bool:
        """`host` answered nothing since `lease` started although it was given newer ones."""
        if host.evidence.last_answer >= lease.started:
            return False
        newest = next((e for e in reversed(host.leases) if not e.session), lease)
        return newest.started > lease.started

    def ran_normally(self, host: Host, lease: Lease, now: float) -> bool:
        """Whether `lease` ran normally on its host, so re-sending it would run it twice: a
        read its host kept answering others around for longer than the hedge delay is a slow
        query being executed, not one caught by the host's trouble; re-sent, it would run once
        more on another server, and a few slow queries would take one host after another
        (issue 20). On a
        host still in rotation (deprioritised as stuck, maybe busy): it started before the
        host's last answer, so it was taken up while the host served (queries sent at the
        same instant fill a server's workers together). On an ejected host: it was in flight
        while the host answered others for longer than the hedge delay. On a host that is
        down: never (its connections are gone)."""
        if host.state is HostState.DOWN:
            return False
        evidence = host.evidence
        if host.state is HostState.HEALTHY:
            return max(evidence.last_answer, evidence.alive_at) >= lease.started
        return evidence.last_answer - lease.started > self.delay_at(now)

    def answering(self, now: float) -> Callable[[Host], bool]:
        """Hosts a hedge may go to: no request unanswered past the hedge delay, or one that
        answered since its oldest and within max_delay."""
        late = now - self.delay_at(now)
        recent = now - self.settings.hedge.max_delay

        def answers(host: Host) -> bool:
            first = host.oldest_requests(1)
            if not first or first[0].started >= late:
                return True
            return first[0].started <= host.evidence.last_answer >= recent

        return answers
