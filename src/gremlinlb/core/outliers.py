"""Outlier detection: evidence per host apart from verdicts over the fleet.

As Envoy's DetectorHostMonitorImpl (per host) apart from DetectorImpl (fleet), each host
keeps its own `Evidence` (answers, failures in a row, latency window, ejection history), and
the verdicts compare a host with its peers (`OutlierDetector`). The detector decides and
keeps the evidence; the balancer applies an ejection to the host's state and tells listeners.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gremlinlb.core.endpoints import Endpoint, HostState
from gremlinlb.core.lease import Lease
from gremlinlb.core.outcomes import Outcome
from gremlinlb.core.samples import Samples, median
from gremlinlb.core.settings import BalancerSettings

if TYPE_CHECKING:
    from gremlinlb.core.hosts import Host

# The balancer's logger: host news under one name (the demo quiets it as a whole).
log = logging.getLogger("gremlinlb.core.balancer")

# A host's typical latency is the median of its last RECENT answers, and counts only with at
# least MIN_SAMPLES of them: one slow query can never make a host look slow. It is ejected as
# slow only when found slow again after RECENT more answers (two successive windows): on a
# CPU-starved machine servers take turns being descheduled for a fraction of a second, and one
# window of it made every client eject a healthy server for base_ejection seconds (measured in
# `make bench`: 8 of 8 client processes, every 64-worker cell, 10-15 points of throughput).
RECENT = 16
MIN_SAMPLES = 8
# Outcomes that are an answer from the host: it is alive and serving.
_ANSWERS = (Outcome.SUCCESS, Outcome.SERVER_ERROR, Outcome.OVERLOADED, Outcome.CLIENT_ERROR)
# Outcomes whose elapsed time is a latency sample of the host.
_SAMPLES = (Outcome.SUCCESS, Outcome.SERVER_ERROR, Outcome.TIMEOUT)


@dataclass(slots=True)
class Evidence:
    """One host's outlier evidence."""

    recent: Samples = field(default_factory=lambda: Samples(RECENT))
    samples: int = 0  # latency samples ever taken: how far `recent` moved on
    slow_mark: int | None = None  # `samples` when first found slow, until found not slow
    last_answer: float = -math.inf
    failures_in_row: int = 0
    # A connection loss or timeout made us doubt it: probe it now, hand it no buffered request.
    suspect: bool = False
    # Stuck (requests in flight, no answer while its peers answer) when the share cap left no
    # room to eject it: it gets new requests only when no other candidate is left, and is not
    # counted as ejected. Cleared by its next answer or passing probe.
    stuck: bool = False
    probe_passed_at: float = -math.inf  # the last probe it answered
    # The last probe whose traversal got no answer in time while the server itself answered
    # (a WebSocket ping on the probe's own connection): alive, its workers busy with slow work.
    alive_at: float = -math.inf
    ejections: int = 0
    ejection_level: int = 0  # the multiplier of base_ejection; decays while healthy
    ejected_until: float | None = None
    returned_at: float | None = None

    def sample(self, latency: float) -> None:
        self.recent.append(latency)
        self.samples += 1

    def typical(self) -> float | None:
        return self.recent.quantile(0.5) if len(self.recent) >= MIN_SAMPLES else None


# A verdict: its kind (stuck, slow, consecutive_failures) and what was found, for the log.
Verdict = tuple[str, str]


class OutlierDetector:
    """Fleet verdicts over the hosts' evidence: stuck, slow, the share cap, ejection times,
    and the hosts deprioritised as stuck (which picking avoids while others can serve)."""

    def __init__(self, settings: BalancerSettings) -> None:
        self.settings = settings
        self.ejections: Counter[str] = Counter()  # by reason
        self.stuck_hosts = 0  # hosts deprioritised as stuck now (see Evidence.stuck)
        self.deprioritised = 0  # times a host was deprioritised

    def answered(self, host: Host, now: float) -> None:
        """An answer from `host`: it is alive and serving, whatever it said."""
        evidence = host.evidence
        evidence.last_answer = now
        evidence.suspect = False
        if evidence.stuck:
            self.set_stuck(host, False)

    def set_stuck(self, host: Host, stuck: bool) -> None:
        if host.evidence.stuck is not stuck:
            host.evidence.stuck = stuck
            self.stuck_hosts += 1 if stuck else -1

    def deprioritise(self, host: Host, reason: str) -> None:
        self.set_stuck(host, True)
        self.deprioritised += 1
        log.warning(
            "host %s deprioritised: answers nothing while its peers answer (%s)",
            host.endpoint.address,
            reason,
        )

    def sweep(
        self,
        healthy: list[Host],
        now: float,
        ring: list[Host],
        warming: Callable[[Host, float], bool],
        eject: Callable[[Host, str, str], None],
    ) -> None:
        """Judge each healthy host against its peers; `eject` (the balancer's callback, as
        Envoy's detector tells its cluster) takes out those found stuck or slow.

        Stuck: it has requests in flight (two or more: a single slow query is not evidence),
        answered nothing for max(stuck_floor, stuck_factor x its peers' typical latency), and
        its peers answered meanwhile; not while in slow start (warming up), nor once a probe
        passed since it went quiet (it answers: its requests are slow, not the host). A stuck
        host is deprioritised (new requests only while no other candidate is left; not
        counted as ejected) and, with health checks on, probed at once: a failed probe takes
        it down, a busy server (see Balancer.record_probe's `alive`) stays in rotation,
        deprioritised; ejected as stuck only without health checks, or when a probe since it
        went quiet neither passed nor found it alive. When the share cap leaves no room to
        eject a host, it is deprioritised instead.
        Slow: its typical latency (median of recent answers) is over slow_factor x its
        peers' and over slow_floor, found again after a whole new window of answers.
        """
        if len(healthy) < 2:
            return
        typical = {h.endpoint: h.evidence.typical() for h in healthy}
        for host in healthy:
            # Peers still healthy: an ejection earlier in this sweep takes one out.
            peers = [p for p in healthy if p is not host and p.state is HostState.HEALTHY]
            found = self.judge(host, peers, typical, now, warming=warming(host, now))
            if found is None:
                continue
            if found[0] == "stuck" and self.busy_or_unjudged(host, now):
                continue  # deprioritised until its probe (or an answer) says more
            if self.may_eject(host, ring):
                eject(host, found[0], found[1])
            elif found[0] == "stuck" and not host.evidence.stuck:
                self.deprioritise(host, found[1] + "; max_ejected_share leaves no room")

    def judge(
        self,
        host: Host,
        peers: list[Host],
        typical: dict[Endpoint, float | None],
        now: float,
        *,
        warming: bool,
    ) -> Verdict | None:
        """Stuck (not while `warming`: a cold JVM's first answers are late) or slow again."""
        found = None if warming else self.stuck(host, peers, typical, now)
        return found or self.slow_again(host, peers, typical)

    def stuck(
        self,
        host: Host,
        peers: list[Host],
        typical: dict[Endpoint, float | None],
        now: float,
    ) -> Verdict | None:
        oldest = host.oldest_requests(2)
        if len(oldest) < 2:
            return None
        evidence = host.evidence
        quiet_since = max(evidence.last_answer, oldest[1].started)
        if evidence.probe_passed_at > quiet_since:
            return None  # it answers its probes: slow requests, not a stuck host
        quiet = now - quiet_since
        outlier = self.settings.outlier
        reference = median(t for p in peers if (t := typical[p.endpoint]) is not None)
        limit = max(outlier.stuck_floor, outlier.stuck_factor * (reference or 0.0))
        if quiet <= limit or not any(p.evidence.last_answer > quiet_since for p in peers):
            return None
        waiting = len(host.oldest_requests(host.in_flight))
        return "stuck", f"stuck: {waiting} requests in flight, no answer for {quiet:.2f}s"

    def slow(
        self, host: Host, peers: list[Host], typical: dict[Endpoint, float | None]
    ) -> Verdict | None:
        mine = typical[host.endpoint]
        reference = median(t for p in peers if (t := typical[p.endpoint]) is not None)
        if mine is None or reference is None:
            return None
        outlier = self.settings.outlier
        if mine <= outlier.slow_factor * reference or mine <= outlier.slow_floor:
            return None
        return "slow", (
            f"slow: typical latency {mine * 1000:.0f} ms against its peers' "
            f"{reference * 1000:.0f} ms"
        )

    def slow_again(
        self, host: Host, peers: list[Host], typical: dict[Endpoint, float | None]
    ) -> Verdict | None:
        """The slow verdict, once it holds over two successive windows of answers (see
        RECENT): a host slow for a moment is left to hedging and the picking policy."""
        found = self.slow(host, peers, typical)
        evidence = host.evidence
        if found is None:
            evidence.slow_mark = None
            return None
        if evidence.slow_mark is None:
            evidence.slow_mark = evidence.samples
            return None
        return found if evidence.samples - evidence.slow_mark >= RECENT else None

    def busy_or_unjudged(self, host: Host, now: float) -> bool:
        """A stuck host is deprioritised at once (no new requests while others can take
        them) and, with health checks on, judged by its own probe rather than ejected: a
        probe that passes clears it, one whose traversal waits behind slow work while the
        server answers a ping leaves it deprioritised but in rotation (busy: a few slow
        queries must not take a host out, issue 20), one that fails takes it down. True while
        it is busy or its probe is still to come."""
        if not self.settings.health.enabled:
            return False
        evidence = host.evidence
        quiet_since = max(evidence.last_answer, host.oldest_requests(2)[1].started)
        if evidence.alive_at > quiet_since:
            reason = "its probe found the server alive, its workers busy"
        elif host.probe.probed_at <= quiet_since:
            reason = "probing it now"
            if not evidence.suspect:
                evidence.suspect = True  # probed at once; a failure then takes it down
        else:
            return False  # probed since it went quiet, neither passed nor busy: judged stuck
        if not evidence.stuck:
            self.deprioritise(host, reason)
        return True

    def may_eject(self, host: Host, ring: list[Host]) -> bool:
        """Within the share cap (at least one of 2+ hosts), and never the last healthy one."""
        active = [h for h in ring if h.state is not HostState.DRAINING]
        if len(active) < 2 or not self.within_cap(host, ring):
            return False
        return any(h is not host and h.state is HostState.HEALTHY for h in active)

    def within_cap(self, host: Host, ring: list[Host]) -> bool:
        """Whether `host` may be ejected, or stay ejected, within max_ejected_share of the
        hosts not draining (`host` counted among them, draining or not)."""
        active = [h for h in ring if h.state is not HostState.DRAINING or h is host]
        ejected = sum(1 for h in active if h is not host and h.state is HostState.EJECTED)
        cap = max(1, math.floor(self.settings.outlier.max_ejected_share * len(active)))
        return ejected + 1 <= cap

    def eject(self, host: Host, reason: str, now: float) -> float:
        """Record an ejection of `host` for `reason`; returns how long it lasts: base_ejection
        times its repeat level, which forgives one level every max_ejection healthy seconds."""
        outlier = self.settings.outlier
        evidence = host.evidence
        if evidence.returned_at is not None:
            healthy_for = now - evidence.returned_at
            evidence.ejection_level = max(
                0, evidence.ejection_level - int(healthy_for // outlier.max_ejection)
            )
        evidence.ejection_level += 1
        duration = min(outlier.base_ejection * evidence.ejection_level, outlier.max_ejection)
        evidence.ejected_until = now + duration
        evidence.ejections += 1
        evidence.failures_in_row = 0
        evidence.suspect = False
        self.ejections[reason] += 1
        return duration

    def returned(self, host: Host, now: float) -> None:
        """Back in rotation: judged by what it does from now on."""
        evidence = host.evidence
        evidence.failures_in_row = 0
        evidence.suspect = False
        evidence.recent.clear()
        evidence.slow_mark = None
        evidence.ejected_until = None
        evidence.returned_at = now

    def learn(
        self,
        host: Host,
        lease: Lease,
        outcome: Outcome,
        error: BaseException | None,
        now: float,
        *,
        sample: bool,
        ring: list[Host],
    ) -> tuple[Verdict | None, float | None]:
        """One attempt's outcome as evidence: counted, its latency sampled (with `sample`),
        answers and failures in a row tracked. Returns a verdict on a healthy host (("down",
        reason) for an outcome that marks it down, ("consecutive_failures", detail) for an
        ejection within the share cap of `ring`) and a success's latency, for the hedge delay."""
        evidence = host.evidence
        host.outcomes[outcome] += 1
        if outcome is Outcome.SUCCESS and error is None:  # the hot path: an answer, no news
            self.answered(host, now)
            evidence.failures_in_row = 0
            if not sample:
                return None, None
            latency = now - lease.started
            host.sample(latency, now)
            return None, latency
        if error is not None:
            host.last_error = f"{type(error).__name__}: {error}"
        if outcome in _ANSWERS:
            self.answered(host, now)
            if outcome is not Outcome.CLIENT_ERROR:
                evidence.failures_in_row = 0
        success: float | None = None
        if sample and outcome in _SAMPLES:
            latency = max(0.0, now - lease.started)
            host.sample(latency, now)
            if outcome is Outcome.SUCCESS:
                success = latency
        if host.state is not HostState.HEALTHY:
            return None, success
        if outcome is Outcome.TIMEOUT and max(evidence.alive_at, evidence.probe_passed_at) > (
            lease.started
        ):
            return None, success  # its probe found it alive meanwhile: a slow request
        if outcome.marks_host_down:
            return ("down", f"passive: {outcome.value}"), success
        if outcome.counts_against_host:
            evidence.failures_in_row += 1
            evidence.suspect = self.settings.health.enabled
            limit = self.settings.outlier.consecutive_failures
            if evidence.failures_in_row >= limit and self.may_eject(host, ring):
                detail = f"{evidence.failures_in_row} failures in a row, the last {outcome.value}"
                return ("consecutive_failures", detail), success
        return None, success
