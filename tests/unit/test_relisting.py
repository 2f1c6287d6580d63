"""A host listed again while it drains returns to the state it had before draining.

On Kubernetes a pod flapping NotReady -> Ready is removed from the host list and listed again
while requests are still stuck on it: the second listing must not wipe out what the first
one knew (an ejection, a failed probe, a cold JVM).
"""

from gremlinlb.core import (
    Balancer,
    BalancerSettings,
    Endpoint,
    HealthCheckSettings,
    HostState,
    Lease,
    Outcome,
    Policy,
)
from tests.unit.core_support import Clock, attempt_on, lease_on, serving

A, B, C = (Endpoint("ws", name, 1) for name in "abc")


def warm_fleet(clock: Clock, settings: BalancerSettings | None = None) -> Balancer:
    """Three serving hosts, past their slow start."""
    lb = serving([A, B, C], settings or BalancerSettings(), clock)
    clock.advance(lb.settings.slow_start)
    return lb


def eject(lb: Balancer, endpoint: Endpoint) -> None:
    for _ in range(lb.settings.outlier.consecutive_failures):
        attempt_on(lb, endpoint, Outcome.CONNECTION_LOST)
    assert lb.state_of(endpoint) is HostState.EJECTED


def drain(lb: Balancer, endpoint: Endpoint) -> None:
    """Remove `endpoint` while a request is still stuck on it (it drains, it is not gone)."""
    lb.remove(endpoint, drain=True)
    assert lb.state_of(endpoint) is HostState.DRAINING


def picks(lb: Balancer, count: int) -> list[Endpoint]:
    """Where the next `count` requests go (each answered at once)."""
    chosen: list[Endpoint] = []
    for _ in range(count):
        lease = lb.acquire(0)
        assert isinstance(lease, Lease)
        chosen.append(lease.endpoint)
        lb.finish(lease, Outcome.SUCCESS)
    return chosen


def test_an_ejected_host_listed_again_while_draining_takes_no_request() -> None:
    clock = Clock()
    lb = warm_fleet(clock)
    stuck = lease_on(lb, A)
    eject(lb, A)
    drain(lb, A)
    lb.add(A)
    assert lb.state_of(A) is HostState.EJECTED
    assert A not in picks(lb, 6)
    lb.finish(stuck, Outcome.SUCCESS)


def test_an_ejected_host_listed_again_serves_only_after_its_time_and_a_passing_probe() -> None:
    clock = Clock()
    lb = warm_fleet(clock)
    lease_on(lb, A)
    eject(lb, A)
    drain(lb, A)
    lb.add(A)
    clock.advance(lb.settings.outlier.base_ejection)
    assert A not in picks(lb, 6)  # its time is over, its probe has not passed yet
    assert A in lb.probe_due()
    lb.record_probe(A, ok=True)
    assert lb.state_of(A) is HostState.HEALTHY


def test_a_down_host_listed_again_while_draining_waits_for_its_probes() -> None:
    lb = warm_fleet(Clock(), BalancerSettings(health=HealthCheckSettings(rise=2)))
    stuck = lease_on(lb, A)
    attempt_on(lb, A, Outcome.NOT_SENT)
    drain(lb, A)
    lb.add(A)
    assert lb.state_of(A) is HostState.DOWN
    lb.record_probe(A, ok=True)
    lb.record_probe(A, ok=True)
    assert lb.state_of(A) is HostState.HEALTHY
    lb.finish(stuck, Outcome.SUCCESS)


def test_a_joining_host_listed_again_still_needs_its_first_probe() -> None:
    """A joining host has no request in flight, so removing it drops it at once; listing it
    again is a fresh join, never a healthy host."""
    lb = serving([B, C])
    lb.add(A)
    lb.remove(A, drain=True)
    lb.add(A)
    assert lb.state_of(A) is HostState.JOINING


def test_a_healthy_host_listed_again_after_a_drain_as_long_as_slow_start_ramps_up_again() -> None:
    clock = Clock()
    lb = warm_fleet(clock, BalancerSettings(policy=Policy.ROUND_ROBIN, slow_start=5.0))
    stuck = lease_on(lb, A)
    drain(lb, A)
    clock.advance(lb.settings.slow_start)
    lb.add(A)
    assert lb.state_of(A) is HostState.HEALTHY
    assert picks(lb, 30).count(A) < 5  # a full share would be 10 of 30
    lb.finish(stuck, Outcome.SUCCESS)


def test_a_healthy_host_listed_again_after_a_short_drain_keeps_its_full_share() -> None:
    """Out for less than the slow-start window it is as warm as it was: no new ramp."""
    clock = Clock()
    lb = warm_fleet(clock, BalancerSettings(policy=Policy.ROUND_ROBIN, slow_start=5.0))
    stuck = lease_on(lb, A)
    drain(lb, A)
    clock.advance(lb.settings.slow_start / 2)
    lb.add(A)
    assert picks(lb, 30).count(A) == 10
    lb.finish(stuck, Outcome.SUCCESS)


def test_an_ejected_host_listed_again_beyond_the_ejection_cap_serves_only_after_a_probe() -> None:
    """While A drained, B was ejected in its place (A no longer counted): both ejected would
    break the share cap, so A's ejection ends, but it still has to pass a probe."""
    lb = warm_fleet(Clock())
    lease_on(lb, A)
    eject(lb, A)
    drain(lb, A)
    eject(lb, B)
    lb.add(A)
    assert [lb.state_of(e) for e in (A, B, C)].count(HostState.EJECTED) == 1
    assert lb.state_of(A) is not HostState.HEALTHY
    assert A in lb.probe_due()
    lb.record_probe(A, ok=True)
    assert lb.state_of(A) is HostState.HEALTHY
