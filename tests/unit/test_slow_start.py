"""Slow start: a host back in rotation earns its share over `slow_start` seconds."""

import pytest

from gremlinlb.core import Balancer, BalancerSettings, Endpoint, Lease, Outcome, Policy
from gremlinlb.core.endpoints import HostState
from gremlinlb.core.health import HealthCounter
from gremlinlb.core.hosts import Host
from gremlinlb.core.picking import RoundRobin
from gremlinlb.core.slowstart import SlowStart
from tests.unit.core_support import Clock, attempt_on, lease_on, serving

A, B, C = (Endpoint("ws", name, 1) for name in "abc")


def share_of(lb: Balancer, endpoint: Endpoint, count: int) -> float:
    hits = 0
    for _ in range(count):
        lease = lb.acquire(0)
        assert isinstance(lease, Lease)
        hits += lease.endpoint == endpoint
        lb.finish(lease, Outcome.SUCCESS)
    return hits / count


def returned(policy: Policy, clock: Clock) -> Balancer:
    """Three hosts at full weight; A just came back from down."""
    lb = serving([A, B, C], BalancerSettings(policy=policy, slow_start=5.0), clock)
    clock.advance(10)
    attempt_on(lb, A, Outcome.NOT_SENT)
    lb.record_probe(A, ok=True)
    return lb


def test_a_returning_host_ramps_from_a_small_share_to_an_exact_one_in_round_robin() -> None:
    clock = Clock()
    lb = returned(Policy.ROUND_ROBIN, clock)
    clock.advance(0.5)
    early = share_of(lb, A, 300)
    clock.advance(2.0)
    middle = share_of(lb, A, 300)
    clock.advance(2.5)
    full = share_of(lb, A, 300)
    assert early < 0.1 < middle < 0.3
    assert full == pytest.approx(1 / 3)


@pytest.mark.parametrize("policy", [Policy.LEAST_IN_FLIGHT, Policy.PEAK_EWMA])
def test_every_policy_ramps_a_returning_host(policy: Policy) -> None:
    clock = Clock()
    lb = returned(policy, clock)
    clock.advance(0.5)
    assert share_of(lb, A, 300) < 0.15
    clock.advance(5.0)
    assert share_of(lb, A, 300) > 0.2


def test_hosts_that_join_together_rotate_exactly_from_the_first_request() -> None:
    lb = serving([A, B, C], BalancerSettings(slow_start=5.0))
    assert [share_of(lb, e, 1) for e in (A, B, C, A, B, C)] == [1.0] * 6


def test_without_slow_start_a_returning_host_gets_its_turn_every_round() -> None:
    clock = Clock()
    lb = serving([A, B, C], BalancerSettings(slow_start=0), clock)
    attempt_on(lb, A, Outcome.NOT_SENT)
    lb.record_probe(A, ok=True)
    assert share_of(lb, A, 300) == pytest.approx(1 / 3)


@pytest.mark.parametrize("policy", [Policy.LEAST_IN_FLIGHT, Policy.PEAK_EWMA])
def test_a_ramping_host_passed_over_by_two_choices_keeps_its_turn(policy: Policy) -> None:
    """Its credit is spent when it is picked, not when it is merely a candidate: a ramping
    host that two choices passed over (it was busier) takes the next request it is best for."""
    clock = Clock()
    lb = serving([A, B], BalancerSettings(policy=policy, slow_start=5.0), clock)
    clock.advance(10)
    attempt_on(lb, A, Outcome.NOT_SENT)
    lb.record_probe(A, ok=True)  # A ramps from here, at its smallest weight throughout
    busy_a = lease_on(lb, A)
    for _ in range(3):  # A is a candidate, but busier than B: B takes each
        lease = lb.acquire(0)
        assert isinstance(lease, Lease)
        assert lease.endpoint == B
        clock.advance(0.01)  # a latency for peak-EWMA; A's weight stays its floor
        lb.finish(lease, Outcome.SUCCESS)
    lb.release(busy_a)
    busy_b = lease_on(lb, B)
    lease = lb.acquire(0)
    assert isinstance(lease, Lease)
    assert lease.endpoint == A
    lb.finish(lease, Outcome.SUCCESS)
    lb.finish(busy_b, Outcome.SUCCESS)


# -- slow start on its own (core.slowstart) ------------------------------------------------


def _hosts(count: int) -> list[Host]:
    return [
        Host(Endpoint("ws", f"h{i}", 1), i, HealthCounter(1, 1), HostState.HEALTHY)
        for i in range(count)
    ]


def test_a_ramp_starts_only_with_slow_start_on_and_ends_after_its_window() -> None:
    off = SlowStart(BalancerSettings(slow_start=0.0))
    host = _hosts(1)[0]
    off.start(host, 5.0)
    assert host.ramp.start is None
    assert not off.warming(host, 5.0)
    on = SlowStart(BalancerSettings(slow_start=10.0))
    on.start(host, 5.0)
    assert host.ramp.start == 5.0
    assert on.ends == 15.0
    assert on.warming(host, 14.9)
    assert not on.warming(host, 15.0)


def test_a_ramping_host_gets_its_weight_share_of_round_robin_picks() -> None:
    ramps = SlowStart(BalancerSettings(slow_start=10.0))
    ring = _hosts(2)
    ramps.start(ring[1], 0.0)  # its first turn is taken: credit 1
    picker = RoundRobin()
    picks = [ramps.pick(picker, ring, lambda h: True, 1.0) for _ in range(40)]
    ramped = sum(1 for host in picks if host is ring[1])
    assert 2 <= ramped <= 6  # about 10% of 40 picks (its weight at 1 s of 10), never 0
