"""A stateful property test of the core: hosts come, go, fail, are probed and ejected, while
requests (reads and writes) are acquired, buffered, withdrawn, retried and hedged.

The example-based specs each check one path; the promises below must hold on every path,
including ones nobody thought to write down (the old outlier property never added or removed
a host, so it could not find a draining host coming back healthy unprobed). The driver follows
the adapters' rules (`may_retry`, `AttemptLimit`, `should_hedge`, `withdraw`); the model checks
what the core hands out:

- never more than the share cap of the hosts not draining ejected, and never the last healthy
  host (checked at each ejection, as the cap is defined then);
- no host healthy without a passed probe since it last went down, was ejected or joined;
- no request handed to a backend after its client withdrew it from the buffer, and no lease in
  the core that the driver was not handed;
- no write handed out twice: a write gets another attempt only while every earlier one
  certainly did not run (not sent, or refused as overloaded), and never a hedge.
"""

from __future__ import annotations

import contextlib
import math
import random
from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from gremlinlb.core import (
    Acquired,
    AllHostsTriedError,
    AttemptLimit,
    Balancer,
    BalancerSettings,
    BufferFullError,
    BufferSettings,
    Endpoint,
    EventKind,
    HealthCheckSettings,
    HostEvent,
    HostState,
    Lease,
    NoHealthyEndpointError,
    Outcome,
    OutlierSettings,
    Policy,
    UnknownEndpointError,
    Waiter,
    may_retry,
)
from tests.unit.core_support import Clock

HOSTS = [Endpoint("ws", f"h{i}", 1) for i in range(4)]
host_index = st.integers(0, len(HOSTS) - 1)
# Outcomes after which the request certainly did not run on the server.
NOT_RUN = (Outcome.NOT_SENT, Outcome.OVERLOADED)
# States from which a host serves again only after a passing probe.
NEED_PROBE = (HostState.DOWN, HostState.EJECTED, HostState.JOINING)


@dataclass(eq=False)
class Request:
    """One client request as the driver sees it: its attempts, and whether it may have run."""

    write: bool
    budget: AttemptLimit
    live: list[Lease] = field(default_factory=list)  # attempts in flight
    tried: list[Endpoint] = field(default_factory=list)  # hosts an attempt failed on
    waiter: Waiter | None = None  # waiting in the buffer
    ran: bool = False  # some attempt reached a server and may have run there
    received: int = 0  # attempts a server received (every one but NOT_SENT)


class CoreLifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.lb = Balancer()  # replaced by `start`
        self.share = 0.5
        self.requests: list[Request] = []
        self.withdrawn: list[Waiter] = []
        self.needs_probe: dict[Endpoint, bool] = {}
        self.violations: list[str] = []

    # -- setup and the event-time checks --------------------------------------------------

    @initialize(
        policy=st.sampled_from(list(Policy)),
        share=st.sampled_from([0.0, 0.34, 0.5, 0.9]),
        rise=st.integers(1, 2),
        slow_start=st.sampled_from([0.0, 5.0]),
        listed=st.integers(1, len(HOSTS)),
        seed=st.integers(0, 2**16),
    )
    def start(
        self, policy: Policy, share: float, rise: int, slow_start: float, listed: int, seed: int
    ) -> None:
        self.share = share
        config = BalancerSettings(
            policy=policy,
            slow_start=slow_start,
            health=HealthCheckSettings(rise=rise, fall=2),
            outlier=OutlierSettings(max_ejected_share=share, consecutive_failures=2),
            buffer=BufferSettings(max_elements=4, max_wait=10.0, release_per_host=2),
        )
        self.lb = Balancer((), config, clock=self.clock, rng=random.Random(seed))
        self.lb.subscribe(self.on_event)
        for endpoint in HOSTS[:listed]:
            self.lb.add(endpoint)

    def on_event(self, event: HostEvent) -> None:
        """Checked when a host changes state, as the core saw it then (the balancer logs and
        swallows a listener's exception, so violations are collected and asserted later)."""
        endpoint = event.endpoint
        if event.kind is EventKind.ADDED:
            self.needs_probe[endpoint] = event.state is not HostState.HEALTHY
            return
        if event.kind is not EventKind.STATE_CHANGED:
            return
        if event.state in NEED_PROBE:
            self.needs_probe[endpoint] = True
        if event.state is HostState.HEALTHY and self.needs_probe.get(endpoint):
            self.violations.append(f"{endpoint.address} healthy without a passed probe: {event}")
        if event.state is HostState.EJECTED:
            states = [h.state for h in self.lb.hosts()]
            active = [s for s in states if s is not HostState.DRAINING]
            cap = max(1, math.floor(self.share * len(active)))
            if active.count(HostState.EJECTED) > cap:
                self.violations.append(f"{active.count(HostState.EJECTED)} ejected > cap {cap}")
            if event.previous is HostState.HEALTHY and HostState.HEALTHY not in states:
                self.violations.append(f"the last healthy host ejected: {event}")

    # -- the driver: how an adapter uses what the core hands out ----------------------------

    def hand(self, request: Request, acquired: Acquired) -> None:
        if isinstance(acquired, Waiter):
            request.waiter = acquired
            return
        if request.write and (request.ran or request.live):
            self.violations.append(f"a write handed out again: {acquired.endpoint.address}")
        request.live.append(acquired)

    def collect(self) -> None:
        """Buffered requests the core released meanwhile become attempts (or fail)."""
        for request in self.requests:
            waiter = request.waiter
            if waiter is None or not waiter.released:
                continue
            request.waiter = None
            if waiter.lease is not None:
                self.hand(request, waiter.lease)
        for waiter in self.withdrawn:
            if waiter.lease is not None:
                self.violations.append(f"a withdrawn request was sent to {waiter.lease.endpoint}")

    def send(self, request: Request, exclude: list[Endpoint], *, hedge: bool = False) -> None:
        if request not in self.requests:
            self.requests.append(request)
        try:
            acquired = self.lb.acquire(0, exclude, hedge=hedge, write=request.write)
        except (BufferFullError, AllHostsTriedError, NoHealthyEndpointError):
            return
        self.hand(request, acquired)

    def live(self) -> list[tuple[Request, Lease]]:
        return [(r, lease) for r in self.requests for lease in r.live]

    def end(self, pick: int, outcome: Outcome) -> None:
        """An attempt ended with `outcome`; the driver retries where the rules allow."""
        request, lease = self.live()[pick % len(self.live())]
        request.live.remove(lease)
        self.lb.finish(lease, outcome)
        if outcome not in NOT_RUN:
            request.ran = True
        if outcome is not Outcome.NOT_SENT:
            request.received += 1
        if outcome is Outcome.SUCCESS or request.live:
            return  # answered, or another attempt (a hedge) carries it
        request.tried.append(lease.endpoint)
        if not may_retry(outcome, read_only=not request.write):
            return
        if not request.budget.allows_another(outcome, request.received):
            return
        if outcome.retry_costs_extra and not self.lb.try_spend_extra():
            return
        self.send(request, request.tried)

    # -- rules -----------------------------------------------------------------------------

    @rule(index=host_index)
    def add(self, index: int) -> None:
        self.lb.add(HOSTS[index])
        self.collect()

    @rule(index=host_index)
    def remove(self, index: int) -> None:
        with contextlib.suppress(UnknownEndpointError):
            self.lb.remove(HOSTS[index], drain=True)
        self.collect()

    @rule(listed=st.sets(host_index))
    def replace(self, listed: set[int]) -> None:
        self.lb.replace([HOSTS[i] for i in sorted(listed)])
        self.collect()

    @rule(write=st.booleans())
    def acquire(self, write: bool) -> None:
        self.send(Request(write, AttemptLimit(self.lb.settings.max_attempts)), [])
        self.collect()

    @precondition(lambda self: self.live())
    @rule(pick=st.integers(0, 99), outcome=st.sampled_from([Outcome.SUCCESS, Outcome.SERVER_ERROR]))
    def succeed(self, pick: int, outcome: Outcome) -> None:
        self.end(pick, outcome)
        self.collect()

    @precondition(lambda self: self.live())
    @rule(
        pick=st.integers(0, 99),
        outcome=st.sampled_from([Outcome.NOT_SENT, Outcome.CONNECTION_LOST, Outcome.OVERLOADED]),
    )
    def fail(self, pick: int, outcome: Outcome) -> None:
        self.end(pick, outcome)
        self.collect()

    @precondition(lambda self: self.live())
    @rule(pick=st.integers(0, 99))
    def time_out(self, pick: int) -> None:
        self.end(pick, Outcome.TIMEOUT)
        self.collect()

    @precondition(lambda self: self.live())
    @rule(pick=st.integers(0, 99))
    def release(self, pick: int) -> None:
        """The client gave up before anything was written: the lease goes back unused."""
        request, lease = self.live()[pick % len(self.live())]
        request.live.remove(lease)
        self.lb.release(lease)
        self.collect()

    @precondition(lambda self: self.live())
    @rule(pick=st.integers(0, 99))
    def hedge(self, pick: int) -> None:
        """Ask the core whether an unanswered attempt deserves a second one, and send it."""
        request, lease = self.live()[pick % len(self.live())]
        if self.lb.should_hedge(lease) and self.lb.try_spend_extra():
            self.send(request, [*request.tried, lease.endpoint], hedge=True)
        self.collect()

    @precondition(lambda self: any(r.waiter is not None for r in self.requests))
    @rule(pick=st.integers(0, 99))
    def withdraw(self, pick: int) -> None:
        """The client left while its request waited in the buffer."""
        waiting = [r for r in self.requests if r.waiter is not None]
        request = waiting[pick % len(waiting)]
        waiter = request.waiter
        assert waiter is not None
        request.waiter = None
        if self.lb.withdraw(waiter):
            self.withdrawn.append(waiter)
        elif waiter.lease is not None:  # released just before: handed back unused
            self.lb.release(waiter.lease)
        self.collect()

    @rule(oks=st.lists(st.booleans(), min_size=1, max_size=len(HOSTS)))
    def probe(self, oks: list[bool]) -> None:
        """Probe the hosts the core says are due; a pass counts for the model unless the core
        drops it (a draining host's)."""
        for endpoint, ok in zip(self.lb.probe_due(), oks * len(HOSTS), strict=False):
            if ok and self.lb.state_of(endpoint) is not HostState.DRAINING:
                self.needs_probe[endpoint] = False
            self.lb.record_probe(endpoint, ok, error=None if ok else "refused")
        self.collect()

    @rule(index=host_index)
    def eject(self, index: int) -> None:
        """Outlier evidence: reads on one host lose their connection, in a row."""
        endpoint = HOSTS[index]
        others = [e for e in HOSTS if e != endpoint]
        for _ in range(self.lb.settings.outlier.consecutive_failures):
            try:
                if self.lb.state_of(endpoint) is not HostState.HEALTHY:
                    break
            except UnknownEndpointError:
                break
            request = Request(False, AttemptLimit(1))
            self.send(request, others)
            if request.live and request.live[0].endpoint == endpoint:
                self.end(self.live().index((request, request.live[0])), Outcome.CONNECTION_LOST)
        self.collect()

    @rule(seconds=st.sampled_from([0.1, 1.0, 3.0, 6.0, 15.0]))
    def advance(self, seconds: float) -> None:
        """Time passes; the adapter's health loop checks for outliers."""
        self.clock.advance(seconds)
        self.lb.check_outliers()
        self.collect()

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def no_violation(self) -> None:
        assert not self.violations, self.violations

    @invariant()
    def no_healthy_host_unprobed(self) -> None:
        for status in self.lb.hosts():
            if status.state is HostState.HEALTHY:
                assert not self.needs_probe.get(status.endpoint), status

    @invariant()
    def the_core_holds_only_leases_it_handed_out(self) -> None:
        handed = {id(lease) for _, lease in self.live()}
        for endpoint in self.lb.endpoints():
            for lease in self.lb.in_flight(endpoint):
                assert id(lease) in handed, f"a lease nobody holds on {endpoint.address}"


CoreLifecycle.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_core_lifecycle = CoreLifecycle.TestCase
