"""The first round: hosts given to the constructor join together, so round-robin holds from the
first request instead of starting on whichever host passed its first probe first."""

from gremlinlb.core import (
    Balancer,
    BalancerSettings,
    BufferSettings,
    Endpoint,
    HealthCheckSettings,
    HostState,
    Lease,
    Outcome,
    Waiter,
)
from tests.unit.core_support import Clock

A, B, C = (Endpoint("ws", name, 8182) for name in ("a", "b", "c"))
# connect_timeout bounds the first round; slow start has specs of its own below.
SETTINGS = BalancerSettings(connect_timeout=2.0, slow_start=0)


def fresh(settings: BalancerSettings = SETTINGS, clock: Clock | None = None) -> Balancer:
    return Balancer([A, B, C], settings, clock=clock or Clock())


def waiting(balancer: Balancer) -> Waiter:
    acquired = balancer.acquire(0)
    assert isinstance(acquired, Waiter), f"expected the request to wait, it got {acquired}"
    return acquired


def host_of(waiter: Waiter) -> Endpoint:
    assert waiter.lease is not None, "the waiting request was not handed a host"
    return waiter.lease.endpoint


def pick(balancer: Balancer) -> Endpoint:
    lease = balancer.acquire(0)
    assert isinstance(lease, Lease)
    balancer.finish(lease, Outcome.SUCCESS)
    return lease.endpoint


def test_a_request_waits_while_an_initial_host_has_no_first_probe_result() -> None:
    balancer = fresh()
    balancer.record_probe(B, ok=True)
    balancer.record_probe(C, ok=True)
    assert not waiting(balancer).released


def test_once_every_first_probe_passed_the_waiting_requests_rotate_in_the_given_order() -> None:
    balancer = fresh()
    waiters = [waiting(balancer) for _ in range(4)]
    for endpoint in (C, B, A):  # passing in the reverse order changes nothing
        balancer.record_probe(endpoint, ok=True)
    assert [host_of(w) for w in waiters] == [A, B, C, A]


def test_after_the_first_round_requests_continue_the_rotation_exactly() -> None:
    balancer = fresh()
    first = waiting(balancer)
    for endpoint in (B, C, A):
        balancer.record_probe(endpoint, ok=True)
    assert [host_of(first), *(pick(balancer) for _ in range(8))] == [A, B, C] * 3


def test_an_initial_host_whose_first_probe_failed_ends_the_wait_and_gets_nothing() -> None:
    balancer = fresh()
    first = waiting(balancer)
    balancer.record_probe(A, ok=True)
    balancer.record_probe(B, ok=False, error="connection refused")
    balancer.record_probe(C, ok=True)
    assert [host_of(first), *(pick(balancer) for _ in range(3))] == [A, C, A, C]


def test_the_wait_ends_after_connect_timeout_without_the_missing_first_probe() -> None:
    clock = Clock()
    balancer = fresh(clock=clock)
    balancer.record_probe(A, ok=True)
    balancer.record_probe(C, ok=True)
    first = waiting(balancer)
    clock.advance(2.0)
    balancer.check_outliers()  # the adapters' health tick
    assert (host_of(first), balancer.state_of(B)) == (A, HostState.JOINING)


def test_a_request_arriving_after_connect_timeout_is_not_held_for_the_missing_probe() -> None:
    clock = Clock()
    balancer = fresh(clock=clock)
    balancer.record_probe(A, ok=True)
    clock.advance(2.0)
    assert pick(balancer) == A


def test_a_request_whose_max_wait_ends_with_the_first_round_gets_a_host_not_a_timeout() -> None:
    clock = Clock()
    settings = BalancerSettings(
        connect_timeout=5.0, slow_start=0, buffer=BufferSettings(max_wait=1.0)
    )
    balancer = fresh(settings, clock)
    balancer.record_probe(A, ok=True)
    first = waiting(balancer)
    clock.advance(1.0)  # the adapter's timer for this waiter fires before any health tick
    balancer.time_out(first)
    assert host_of(first) == A


def test_removing_the_initial_host_the_round_waits_for_releases_the_waiting_requests() -> None:
    balancer = fresh()
    balancer.record_probe(A, ok=True)
    balancer.record_probe(B, ok=True)
    first = waiting(balancer)
    balancer.remove(C)
    assert host_of(first) == A


def test_a_host_added_later_joins_through_its_probe_and_holds_no_request() -> None:
    balancer = Balancer([A], SETTINGS, clock=Clock())
    balancer.record_probe(A, ok=True)
    balancer.add(B)
    assert [pick(balancer) for _ in range(2)] == [A, A]


def test_without_health_checks_nothing_waits_for_a_first_probe() -> None:
    settings = BalancerSettings(health=HealthCheckSettings(enabled=False), slow_start=0)
    balancer = fresh(settings)
    assert [pick(balancer) for _ in range(3)] == [A, B, C]


def test_with_the_buffer_disabled_requests_are_not_held_for_the_first_round() -> None:
    settings = BalancerSettings(slow_start=0, buffer=BufferSettings(max_wait=0))
    balancer = fresh(settings)
    balancer.record_probe(B, ok=True)
    assert pick(balancer) == B


def test_the_first_rounds_hosts_ramp_up_together_so_none_is_gated_against_another() -> None:
    """Each ramping from its own pass, A would be at full weight while B and C still ramp at
    two thirds of a share, and the rotation would skew; from the round's opening they all
    ramp alike, and end together."""
    clock = Clock()
    balancer = fresh(BalancerSettings(connect_timeout=2.0, slow_start=5.0), clock)
    clock.advance(0.1)
    balancer.record_probe(A, ok=True)
    clock.advance(1.8)
    balancer.record_probe(B, ok=True)
    balancer.record_probe(C, ok=True)
    clock.advance(5.2 - 1.9)  # past A's own window (5.1), within B's and C's (6.9)
    assert [pick(balancer) for _ in range(9)] == [A, B, C] * 3


def test_first_round_names_the_initial_hosts_still_waited_for() -> None:
    balancer = fresh()
    balancer.record_probe(B, ok=True)
    assert balancer.first_round == [A, C]
