"""The balancing core: which hosts exist, which are healthy, who goes next, who waits.

Free of I/O on purpose: adapters (the in-process client, the sidecar) do the networking and
report what happened; this class decides. Every method is quick and non-blocking under one
lock, so it is safe from many threads and from an asyncio loop alike.

A facade: it holds the lock, reads the clock and emits host events, and composes the units
that decide (docs/architecture.md, "The core's units"): hoststates (the state machine),
routing (candidates and the pick), admission (first round, wait buffer), outliers, probing,
hedging and slowstart. Each owns its part of the per-host state (`hosts.Host`).

Every attempt is a `Lease` from `acquire` until the adapter ends it (`finish`, `release`), so
the core measures latency itself and knows what is in flight where. From that it ejects
outliers (a host that keeps failing, answers nothing while its peers answer, or is many times
slower than its peers), ramps returning hosts up slowly, sizes the hedge delay and keeps the
budget of extra requests. Adapters call `check_outliers()` about every `CHECK_INTERVAL`
seconds and probe what `probe_due()` names.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping

from gremlinlb.core.admission import Admission
from gremlinlb.core.budget import RetryBudget
from gremlinlb.core.buffer import Waiter
from gremlinlb.core.endpoints import Endpoint, HostState, parse_endpoint
from gremlinlb.core.errors import (
    BalancerClosedError,
    BufferTimeoutError,
    NoHealthyEndpointError,
    UnknownEndpointError,
)

# Re-exported: adapters import these from here (gremlinlb.core exports them too).
from gremlinlb.core.events import BalancerStats as BalancerStats
from gremlinlb.core.events import EventKind as EventKind
from gremlinlb.core.events import HostEvent as HostEvent
from gremlinlb.core.events import HostStatus as HostStatus
from gremlinlb.core.events import Listener as Listener
from gremlinlb.core.hedging import HedgeRule
from gremlinlb.core.hosts import Host, seq_of
from gremlinlb.core.hoststates import HostTable
from gremlinlb.core.lease import Lease
from gremlinlb.core.outcomes import Outcome
from gremlinlb.core.outliers import OutlierDetector
from gremlinlb.core.probing import ProbeSchedule
from gremlinlb.core.routing import PLAIN, Candidates, Router
from gremlinlb.core.settings import BalancerSettings
from gremlinlb.core.slowstart import SlowStart
from gremlinlb.core.topology import ZonePlan

log = logging.getLogger(__name__)

# How often adapters should call `check_outliers()` (their health loop's tick, seconds).
CHECK_INTERVAL = 0.1


Acquired = Lease | Waiter


class Balancer:
    def __init__(
        self,
        endpoints: Iterable[Endpoint | str] = (),
        settings: BalancerSettings | None = None,
        *,
        zone: str | None = None,
        clients: Mapping[str, int] | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        """`endpoints` join together as the first round (see `first_round`): requests wait
        for their first probe results, so round-robin holds from the first request. `zone` is
        the client's own zone (per process: a sidecar's node, an application's host), which
        zone-aware routing prefers; None when unknown. `clients` is how many clients of these
        hosts run in each zone (see :meth:`set_client_zones`)."""
        self._settings = settings or BalancerSettings()
        self._clock = clock
        self._lock = threading.Lock()
        self._ring: list[Host] = []  # every host, sorted by seq
        # The healthy hosts, sorted by seq: what picking looks at. Requests never scan the
        # whole ring, so a long list of dead hosts costs each pick nothing (issue 20).
        self._healthy_ring: list[Host] = []
        self._budget = RetryBudget(self._settings.budget)
        self._hedging = HedgeRule(self._settings)  # the hedge delay and rule
        self._slow_start = SlowStart(self._settings)
        self._probes = ProbeSchedule(self._settings)  # when each host is probed next
        self._outliers = OutlierDetector(self._settings)  # evidence and verdicts
        self._router = Router(
            self._settings,
            self._ring,
            self._healthy_ring,
            zone=zone or None,
            clients=clients,
            rng=rng or random.Random(),
            slow_start=self._slow_start,
            outliers=self._outliers,
            hedging=self._hedging,
        )
        self._table = HostTable(  # the hosts and their state machine
            self._settings,
            self._ring,
            self._healthy_ring,
            probes=self._probes,
            outliers=self._outliers,
            slow_start=self._slow_start,
            router=self._router,
        )
        self._hosts = self._table.hosts
        self._admission = Admission(  # the first round and the wait buffer
            self._settings,
            self._healthy_ring,
            budget=self._budget,
            router=self._router,
            clock=self._clock,
        )
        self._buffer = self._admission.buffer
        self._extra_spent = 0
        self._budget_exhausted = 0
        self._listeners: list[Listener] = []
        self._closed = False
        # which hosts lack which traversal source (fed by the adapters' health loops)
        self.sources = self._router.sources
        for endpoint in endpoints:  # they form the first round (see `first_round`)
            self.add(endpoint)
        self._admission.open_first_round(self._ring, self._clock())

    # -- configuration -------------------------------------------------------------------

    @property
    def settings(self) -> BalancerSettings:
        return self._settings

    @property
    def zone(self) -> str | None:
        """The client's own zone, or None."""
        return self._router.zone

    @property
    def client_zones(self) -> dict[str, int] | None:
        """How many clients run in each zone (zones with none left out), or None: unknown."""
        clients = self._router.clients
        return None if clients is None else dict(clients)

    def set_client_zones(self, clients: Mapping[str, int] | None) -> None:
        """How many clients of these hosts run in each zone (``{"a": 3, "b": 1}``; the
        operator counts the sidecars): a zone with more of the clients than of the healthy
        hosts keeps only its fair share of its requests and spills the rest (Envoy's
        originating cluster). None: assume the clients are spread like the hosts are listed.
        ValueError for a blank zone name or a count that is not an integer >= 0."""
        with self._lock:
            self._router.set_clients(clients)

    def zone_plans(self) -> dict[str, ZonePlan]:
        """The current plan per candidate kind in use (``all``, or ``writers``/``readers``);
        empty while the client's zone is unknown, no host has a zone or zone_aware is off."""
        with self._lock:
            return self._router.zone_plans()

    def subscribe(self, listener: Listener) -> None:
        """Listeners run after the change, outside the lock; they may call back in."""
        self._listeners.append(listener)

    def update_settings(self, settings: BalancerSettings) -> None:
        """Apply new settings; requests already waiting keep their deadline."""
        events: list[HostEvent] = []
        with self._lock:
            self._router.update(settings)
            self._settings = settings
            for host in self._ring:
                host.health.rise = settings.health.rise
                host.health.fall = settings.health.fall
            self._admission.update(settings)
            self._budget.settings = settings.budget
            for unit in (
                self._probes,
                self._outliers,
                self._hedging,
                self._slow_start,
                self._table,
            ):
                unit.settings = settings
            self._hedging.forget_delay()
            self._table.next_expiry = -math.inf  # recompute passive returns under the new rules
            self._slow_start.rescheduled(self._ring)
            if not settings.health.enabled:  # nobody will probe joining hosts any more
                self._admission.first_round.clear()
                now = self._clock()
                for host in self._ring:
                    if host.state is HostState.JOINING:
                        events.append(
                            self._table.enter_healthy(host, "health checks disabled", now)
                        )
            self._release_waiters()
        self._emit(events)

    # -- membership ----------------------------------------------------------------------

    def add(self, endpoint: Endpoint | str) -> bool:
        """Add a host; False if it was already present (its role and zone are then updated
        in place: a host that changes role keeps its connections and its state).

        It joins as JOINING and takes requests once its first probe passes (a listed host that
        accepts TCP and never answers gets no client request), or HEALTHY at once when health
        checks are disabled. Hosts given to the constructor join together instead: see
        `first_round`.
        """
        parsed = _as_endpoint(endpoint)
        with self._lock:
            self._check_open()
            existing = self._hosts.get(parsed)
            if existing is not None:
                self._table.retopology(existing, parsed)
            if existing is not None and existing.state is not HostState.DRAINING:
                return False
            if existing is not None:  # listed again while draining: back where it stood
                events = [self._table.relist(existing, self._clock())]
            else:
                events = [self._table.add(parsed, self._clock)]
            self._release_waiters()
        self._emit(events)
        return True

    def remove(self, endpoint: Endpoint | str, *, drain: bool = False) -> None:
        """Remove a host now, or with `drain` once its in-flight requests are done."""
        parsed = _as_endpoint(endpoint)
        with self._lock:
            host = self._hosts.get(parsed)
            if host is None:
                known = ", ".join(h.endpoint.address for h in self._ring) or "none"
                raise UnknownEndpointError(
                    f"cannot remove {parsed.address}: it is not one of the hosts ({known}); "
                    "hosts are matched by their full address, ws://host:port/path"
                )
            awaited = parsed in self._admission.first_round
            self._admission.first_round.discard(parsed)  # the first round no longer waits for it
            if drain and host.in_flight > 0:
                events = [self._table.drain(host, self._clock())]
            else:
                events = [self._drop(host)]
            if awaited:
                self._release_waiters()
        self._emit(events)

    def replace(self, endpoints: Iterable[Endpoint | str]) -> tuple[list[Endpoint], list[Endpoint]]:
        """Make the host list exactly `endpoints`; removed hosts drain, kept ones take their
        new role and zone in place. Returns (added, removed)."""
        wanted = [_as_endpoint(e) for e in endpoints]
        keep = set(wanted)  # a set: applying a list stays linear in its size
        with self._lock:
            current = [h.endpoint for h in self._ring if h.state is not HostState.DRAINING]
        removed = [e for e in current if e not in keep]
        added = [e for e in wanted if self.add(e)]
        for endpoint in removed:
            self.remove(endpoint, drain=True)
        return added, removed

    def hosts(self) -> list[HostStatus]:
        with self._lock:
            now = self._clock()
            wall = time.time()
            return [h.status(now, wall) for h in self._ring]

    def endpoints(self) -> list[Endpoint]:
        with self._lock:
            return [h.endpoint for h in self._ring]

    def state_of(self, endpoint: Endpoint | str) -> HostState:
        parsed = _as_endpoint(endpoint)
        with self._lock:
            host = self._hosts.get(parsed)
            if host is None:
                raise UnknownEndpointError(f"{parsed.address} is not one of the hosts")
            return host.state

    def in_flight(self, endpoint: Endpoint | str) -> list[Lease]:
        """The leases in flight on a host, oldest first (sessions included, flagged);
        empty for a host that is gone. An adapter re-dispatches reads from here on ejection."""
        parsed = _as_endpoint(endpoint)
        with self._lock:
            host = self._hosts.get(parsed)
            return list(host.leases) if host is not None else []

    def stats(self) -> BalancerStats:
        with self._lock:
            return BalancerStats(
                ejections=dict(self._outliers.ejections),
                hedges_sent=self._hedging.sent,
                hedges_won=self._hedging.won,
                extra_spent=self._extra_spent,
                budget_exhausted=self._budget_exhausted,
                attempts_by_role={r.value: n for r, n in self._router.by_role.items()},
                same_zone=self._router.same_zone,
                cross_zone=self._router.cross_zone,
                deprioritised=self._outliers.deprioritised,
            )

    @property
    def buffered(self) -> int:
        with self._lock:
            return len(self._buffer)

    @property
    def buffered_bytes(self) -> int:
        with self._lock:
            return self._buffer.bytes

    # -- requests ------------------------------------------------------------------------

    def acquire(
        self,
        size: int | Callable[[], int],
        exclude: Collection[Endpoint] = (),
        *,
        hedge: bool = False,
        session: bool = False,
        source: str | None = None,
        write: bool = True,
    ) -> Acquired:
        """Pick a healthy host for a request of `size` bytes, or queue it.

        `size` may be a callable, called only when the request has to wait (adapters measure
        a request only on that rare path). `exclude`: the hosts this request already failed
        on (a retry). `hedge`: a second attempt of a slow read; it never waits
        (NoHealthyEndpointError when no other host can take it). `session`: a lease in flight
        for a session's life. `write` (the default, the safe side): the request may write,
        so it goes to writers, as sessions do; a read goes to readers, or to writers by
        `read_routing` (see routing.Candidates). `source`: the traversal source it names
        (None: the default); hosts `self.sources` knows lack it are skipped while a healthy
        host that serves it is left.

        Returns a `Lease` (in flight on `lease.endpoint` until `finish` or `release`), or a
        `Waiter` woken with `waiter.lease` when a host can take it. Raises `BufferFullError`
        when a bound is hit, and `AllHostsTriedError` when the healthy hosts all failed this
        request already, unless one is only suspect (see Admission.admit). Every first
        attempt (no `exclude`, no `hedge`) adds to the extra-request budget.
        """
        events: list[HostEvent] = []
        try:
            with self._lock:
                self._check_open()
                now = self._clock()
                if now >= self._table.next_expiry:
                    events += self._expire(now)
                write = write or session
                if self._admission.first_round and not exclude and not hedge:
                    held = self._admission.hold(size, now, session=session, write=write)
                    if held is not None:
                        return held
                skip = self._router.skip_for_source(source, exclude)
                if skip or hedge:
                    candidates = Candidates(write=write, exclude=skip, answering=hedge)
                else:
                    candidates = PLAIN[write]
                host = self._router.pick(candidates, now)
                if host is None and hedge:
                    raise NoHealthyEndpointError(
                        "no other healthy host can take a hedged request; the first attempt goes on"
                    )
                if host is None:
                    return self._admission.admit(size, exclude, now, session=session, write=write)
                if hedge:
                    self._hedging.sent += 1
                elif not exclude:
                    self._budget.deposit(now)
                return self._router.lease(host, now, hedge=hedge, session=session, write=write)
        finally:
            self._emit(events)

    def serves_elsewhere(self, source: str | None, exclude: Collection[Endpoint]) -> bool:
        """Whether a healthy host outside `exclude` is not known to lack `source`: a request a
        host refused for lacking its source (nothing ran) may then go there instead."""
        missing = self.sources.missing_on(source)
        with self._lock:
            return self._router.serves_elsewhere(missing, exclude)

    def time_out(self, waiter: Waiter) -> None:
        """A waiter's deadline passed: raise BufferTimeoutError if it is still waiting.

        Returns quietly if it was released meanwhile: its lease (or error) is then set.
        """
        if self.withdraw(waiter):
            raise self._timeout_error(waiter)

    def withdraw(self, waiter: Waiter) -> bool:
        """A waiter gave up (deadline or cancel). False if it was released meanwhile; the
        caller then owns `waiter.lease` and must `release` it if it will not use it."""
        with self._lock:
            if self._admission.first_round:  # past its bound, it hands out what it held first
                self._release_waiters()
            return self._buffer.remove(waiter)

    def sent(self, lease: Lease) -> None:
        """The adapter wrote the request only now, after waiting for a connection (opening one
        to a cold host, or room on a busy one): that wait is not the server's latency, and
        counting it would make a host warming up in a burst look slow."""
        with self._lock:
            lease.started = max(lease.started, self._clock())

    def finish(self, lease: Lease, outcome: Outcome, error: BaseException | None = None) -> None:
        """How an attempt ended; the core measures its latency (clock - lease.started).

        Finishing a lease twice, or one of a host removed meanwhile, changes nothing.
        """
        self._end(lease, outcome, error)

    def release(self, lease: Lease) -> None:
        """Give back a lease on which nothing was attempted (e.g. the caller gave up)."""
        self._end(lease, None, None)

    def observe(self, lease: Lease, outcome: Outcome, error: BaseException | None = None) -> None:
        """Report an outcome on a long-lived lease (a session) that stays in flight."""
        events: list[HostEvent] = []
        with self._lock:
            host = self._hosts.get(lease.endpoint)
            if host is None or lease not in host.leases:
                return
            now = self._clock()
            events += self._learn(host, lease, outcome, error, now, sample=False)
            self._release_waiters()
        self._emit(events)

    def hedge_won(self, lease: Lease) -> None:
        """The adapter's report that a hedge answered first (for the hedges-won counter)."""
        if lease.hedge:
            with self._lock:
                self._hedging.won += 1

    # -- hedging and the extra-request budget ----------------------------------------------

    def hedge_delay(self) -> float:
        """How long a read waits for its first answer before a hedge is considered.

        The configured percentile of recent latencies, within [delay_floor, max_delay];
        max_delay until enough answers were seen.
        """
        with self._lock:
            return self._hedging.delay_at(self._clock())

    def should_hedge(self, lease: Lease, *, pings: bool = False) -> bool:
        """Whether an unanswered read on `lease` (its hedge delay passed) deserves a hedge
        (see HedgeRule.should_hedge): never once the lease ended, for hedges, sessions,
        requests that may write, or with hedging disabled. The caller still spends the budgets
        (the request's `AttemptLimit`, `try_spend_extra`) before sending one."""
        with self._lock:
            if not self._hedging.hedgeable(lease):
                return False
            host = self._hosts.get(lease.endpoint)
            if host is None or lease not in host.leases:
                return False
            return self._hedging.should_hedge(host, lease, self._clock(), pings=pings)

    def is_quiet(self, lease: Lease) -> bool:
        """Whether `lease`'s host, healthy, answered nothing since this request started
        although it was given newer ones, and answered no ping since either: hung, or its
        workers busy. An adapter that can ask the server a ping (answered by its I/O threads)
        does, and reports it to `record_ping`."""
        with self._lock:
            host = self._hosts.get(lease.endpoint)
            if host is None or lease not in host.leases or host.state is not HostState.HEALTHY:
                return False
            return host.evidence.alive_at < lease.started and self._hedging.quiet(host, lease)

    def record_ping(self, endpoint: Endpoint, answered: bool) -> None:
        """A quiet host's answer to a ping (see `is_quiet`). Answered: the server is alive,
        its workers busy: what it runs now ran normally (not re-sent) and its timeouts do not
        count against it. Not answered: it is hung: it goes down at once, and reads waiting
        there are re-sent by the adapter."""
        with self._lock:
            host = self._hosts.get(endpoint)
            if host is None or host.state is not HostState.HEALTHY:
                return
            if answered:
                host.evidence.alive_at = self._clock()
                return
            host.evidence.suspect = True  # a failed probe of a suspect host takes it down
        self.record_probe(endpoint, ok=False, error="no answer to a ping: the server is hung")

    def is_deprioritised(self, endpoint: Endpoint) -> bool:
        """Whether `endpoint` is healthy but found stuck: a health loop then asks the server
        a ping along with its probe, to tell a busy server from a hung one at once."""
        with self._lock:
            host = self._hosts.get(endpoint)
            return host is not None and host.evidence.stuck

    def may_resend(self, lease: Lease) -> bool:
        """Whether a read in flight on `lease` may be re-sent elsewhere now that its host left
        rotation (or is deprioritised as stuck): not a write or a session, and not a request
        that ran normally there (see HedgeRule.ran_normally). The caller spends the budgets."""
        with self._lock:
            if lease.hedge or lease.session or lease.write:
                return False
            host = self._hosts.get(lease.endpoint)
            if host is None:
                return True
            return not self._hedging.ran_normally(host, lease, self._clock())

    def try_spend_extra(self) -> bool:
        """Spend one extra request (a hedge, or a retry after CONNECTION_LOST, TIMEOUT or
        OVERLOADED: see `Outcome.retry_costs_extra`); False when the budget is exhausted."""
        with self._lock:
            if self._budget.try_spend(self._clock()):
                self._extra_spent += 1
                return True
            self._budget_exhausted += 1
            return False

    # -- outlier detection -----------------------------------------------------------------

    def check_outliers(self) -> list[Endpoint]:
        """Eject hosts that are stuck or slow (see OutlierDetector.sweep); returns those
        ejected by this call. Adapters call this about every CHECK_INTERVAL seconds; with
        health checks disabled it also lets hosts whose time out of rotation is over back in.
        """
        events: list[HostEvent] = []
        ejected: list[Endpoint] = []
        with self._lock:
            if self._closed:
                return []
            now = self._clock()
            events += self._expire(now)
            if self._admission.first_round and now >= self._admission.first_round_until:
                self._release_waiters()  # its bound passed: hand out what it held
                self._admission.first_round.clear()
            # From the hosts in rotation, not the whole ring: a long list of dead hosts costs
            # this tick nothing.
            healthy = sorted(
                (h for h in self._probes.serving if h.state is HostState.HEALTHY), key=seq_of
            )

            def eject(host: Host, kind: str, detail: str) -> None:
                events.append(self._table.eject(host, kind, detail, now))
                ejected.append(host.endpoint)

            self._outliers.sweep(healthy, now, self._ring, self._slow_start.warming, eject)
        self._emit(events)
        return ejected

    # -- active health checks ------------------------------------------------------------

    def probe_due(self, now: float | None = None, limit: int | None = None) -> list[Endpoint]:
        """Hosts whose next probe is due now, at most `limit` (what the caller can run at
        once: a push of thousands of new hosts must not open thousands of sockets at once);
        each is then counted as being probed until its `record_probe` (or until a probe could
        not still be running: timeouts + 1 s). Hosts left out are due on the next call.

        Healthy hosts every `interval` (with probe_healthy); down and joining ones every
        `unhealthy_interval`, `outage_interval` while no host is healthy; joining and suspect
        hosts at once; ejected ones when their ejection time is up.
        """
        with self._lock:
            if not self._settings.health.enabled or self._closed:
                return []
            now = self._clock() if now is None else now
            return [h.endpoint for h in self._probes.due(now, limit, self._table.any_healthy())]

    def next_probe_in(self) -> float:
        """Seconds until `probe_due` names a host (0 if one is due now); a health loop sleeps
        on it, capped at CHECK_INTERVAL so `check_outliers` runs too."""
        with self._lock:
            health = self._settings.health
            if not health.enabled:
                return health.interval
            return self._probes.next_in(self._clock(), self._table.any_healthy())

    def probe_targets(self) -> list[Endpoint]:
        """Every host a full probe round covers now (an on-demand round, e.g. an operator's
        "check now"): joining, down, ejected ones whose time is up, healthy ones if
        configured. The health loop itself follows `probe_due`."""
        with self._lock:
            if not self._settings.health.enabled:
                return []
            return [h.endpoint for h in self._probes.targets(self._ring, self._clock())]

    def record_probe(
        self, endpoint: Endpoint, ok: bool, error: str | None = None, *, alive: bool = False
    ) -> None:
        """A probe's result. Joining hosts serve after one pass; down ones after `rise`
        passes; ejected ones after their time is up and one pass (a failure then means down);
        healthy ones go down after `fall` failures, or after one if a connection loss or
        timeout made them suspect already.

        `alive` (with ok False): the probe's traversal got no answer in time, but the server
        answered a WebSocket ping on the probe's own connection: the JVM is up, its workers
        are taken by slow work. A healthy host is then neither passed nor failed (it stays in
        rotation; deprioritised while it answers nothing: see check_outliers); any other host
        counts it as a failure, as before."""
        events: list[HostEvent] = []
        with self._lock:
            host = self._hosts.get(endpoint)
            now = self._clock()
            first = (
                endpoint in self._admission.first_round and now < self._admission.first_round_until
            )
            self._admission.first_round.discard(endpoint)
            if host is None or host.state is HostState.DRAINING:
                if host is not None:
                    # The verdict is dropped, but the probe is over: listed again, the host is
                    # probed when due, not after a probe that could still be running would be lost.
                    host.probe.probing_since = None
                if first:
                    self._release_waiters()
                return
            # The first round's hosts ramp up from the same instant, its opening: all ramp
            # alike, so none is gated against another and the rotation stays exact.
            since = self._admission.first_round_opened if first else now
            changes = self._table.probed(host, ok, error, alive=alive, now=now, ramp_from=since)
            if changes is None:
                return  # busy, not down: no verdict either way
            events += changes
            self._release_waiters()
        self._emit(events)

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Refuse new requests and fail everything still waiting."""
        with self._lock:
            self._closed = True
            self._admission.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def first_round(self) -> list[Endpoint]:
        """The hosts given to the constructor whose first probe result requests still wait
        for (see Admission): empty once the round is over, with health checks disabled, or
        with the buffer disabled (max_wait 0)."""
        with self._lock:
            if self._clock() >= self._admission.first_round_until:
                return []
            return [h.endpoint for h in self._ring if h.endpoint in self._admission.first_round]

    # -- internals (lock held) -----------------------------------------------------------

    def _end(self, lease: Lease, outcome: Outcome | None, error: BaseException | None) -> None:
        events: list[HostEvent] = []
        with self._lock:
            host = self._hosts.get(lease.endpoint)
            if host is None or lease not in host.leases:
                return
            del host.leases[lease]
            host.from_buffer.discard(lease)
            if outcome is not None:
                now = self._clock()
                events += self._learn(host, lease, outcome, error, now, sample=not lease.session)
            if host.state is HostState.DRAINING and host.in_flight == 0:
                events.append(self._drop(host))
            self._release_waiters()
        self._emit(events)

    def _learn(
        self,
        host: Host,
        lease: Lease,
        outcome: Outcome,
        error: BaseException | None,
        now: float,
        *,
        sample: bool,
    ) -> list[HostEvent]:
        """One outcome as evidence (see OutlierDetector.learn); returns state changes."""
        verdict, success = self._outliers.learn(
            host, lease, outcome, error, now, sample=sample, ring=self._ring
        )
        if success is not None:
            self._hedging.answered(success)
        if verdict is None:
            return []
        if verdict[0] == "down":
            return [self._table.go_down(host, verdict[1], now)]
        return [self._table.eject(host, verdict[0], verdict[1], now)]

    def _release_waiters(self) -> None:
        self._admission.release()

    def _expire(self, now: float) -> list[HostEvent]:
        """Without health checks, ejected and down hosts return when their time is up."""
        events = self._table.expire(now)
        if events:
            self._release_waiters()
        return events

    def _drop(self, host: Host) -> HostEvent:
        self._admission.first_round.discard(host.endpoint)
        event = self._table.drop(host)
        self.sources.forget_host(host.endpoint)
        return event

    def _timeout_error(self, waiter: Waiter) -> BufferTimeoutError:
        return self._router.wait_timeout_error(waiter, self._buffer.settings.max_wait)

    def _check_open(self) -> None:
        if self._closed:
            raise BalancerClosedError("the balancer is closed; create a new one")

    def _emit(self, events: list[HostEvent]) -> None:
        for event in events:
            for listener in self._listeners:
                try:
                    listener(event)
                except Exception:
                    log.exception("host event listener failed for %s", event)


def _as_endpoint(endpoint: Endpoint | str) -> Endpoint:
    return endpoint if isinstance(endpoint, Endpoint) else parse_endpoint(endpoint)
