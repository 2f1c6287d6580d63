"""Which hosts are probed when: new ones at once, sick ones often, and fastest in an outage."""

import pytest

from gremlinlb.core import (
    Balancer,
    BalancerSettings,
    Endpoint,
    HealthCheckSettings,
    HostState,
    Lease,
    Outcome,
    Waiter,
)
from gremlinlb.core.health import HealthCounter
from gremlinlb.core.probing import after_probe
from tests.unit.core_support import Clock, attempt_on, serving

A = Endpoint("ws", "a", 1)
B = Endpoint("ws", "b", 1)
HEALTH = HealthCheckSettings(interval=10.0, timeout=2.0, unhealthy_interval=1.0, fall=2)


def fleet(clock: Clock, health: HealthCheckSettings = HEALTH) -> Balancer:
    return serving([A, B], BalancerSettings(health=health, connect_timeout=2.0), clock)


def probe(lb: Balancer, ok: bool) -> list[Endpoint]:
    """Run every due probe with the given result; return who was probed."""
    due = lb.probe_due()
    for endpoint in due:
        lb.record_probe(endpoint, ok=ok, error=None if ok else "refused")
    return due


def test_a_new_host_is_probed_at_once_and_joins_only_when_it_passes() -> None:
    lb = Balancer([A], clock=Clock())
    assert lb.state_of(A) is HostState.JOINING
    assert lb.probe_due() == [A]
    lb.record_probe(A, ok=True)
    assert lb.state_of(A) is HostState.HEALTHY


def test_a_request_waits_while_the_only_host_is_joining_and_goes_once_it_passed() -> None:
    lb = Balancer([A], clock=Clock())
    waiter = lb.acquire(0)
    assert isinstance(waiter, Waiter)
    lb.record_probe(A, ok=True)
    assert waiter.lease is not None
    assert waiter.lease.endpoint == A


def test_a_new_host_failing_its_first_probe_is_down() -> None:
    lb = Balancer([A], clock=Clock())
    lb.record_probe(A, ok=False, error="refused")
    assert lb.state_of(A) is HostState.DOWN


def test_a_probe_under_way_is_not_due_again_until_its_result_comes() -> None:
    clock = Clock()
    lb = fleet(clock)
    attempt_on(lb, A, Outcome.NOT_SENT)
    clock.advance(1.0)
    assert lb.probe_due() == [A]
    clock.advance(3.0)
    assert lb.probe_due() == []
    lb.record_probe(A, ok=False, error="timeout")
    clock.advance(1.0)
    assert lb.probe_due() == [A]


def test_a_probe_whose_result_never_comes_is_given_up_after_the_timeouts() -> None:
    clock = Clock()
    lb = fleet(clock)
    attempt_on(lb, A, Outcome.NOT_SENT)
    clock.advance(1.0)
    assert lb.probe_due() == [A]
    clock.advance(2.0 + 2.0 + 1.0)  # probe timeout + connect timeout + 1 s
    assert lb.probe_due() == [A]


def test_down_hosts_are_probed_every_unhealthy_interval_healthy_ones_every_interval() -> None:
    clock = Clock()
    lb = fleet(clock)
    attempt_on(lb, A, Outcome.NOT_SENT)
    probed: list[Endpoint] = []
    for _ in range(10):
        clock.advance(1.0)
        probed += probe(lb, ok=False)
    assert probed.count(A) == 10
    assert probed.count(B) == 1


def test_while_no_host_is_healthy_down_hosts_are_probed_every_outage_interval() -> None:
    clock = Clock()
    lb = fleet(clock)
    attempt_on(lb, A, Outcome.NOT_SENT)
    attempt_on(lb, B, Outcome.NOT_SENT)
    probed: list[Endpoint] = []
    for _ in range(8):
        clock.advance(0.25)
        probed += probe(lb, ok=False)
    assert probed.count(A) == probed.count(B) == 8


def test_next_probe_in_says_when_the_next_probe_is_due() -> None:
    clock = Clock()
    lb = fleet(clock)
    attempt_on(lb, A, Outcome.NOT_SENT)
    assert lb.next_probe_in() == 1.0  # a second after its last probe
    clock.advance(1.0)
    assert lb.next_probe_in() == 0.0
    probe(lb, ok=False)
    assert lb.next_probe_in() == 1.0
    clock.advance(0.4)
    assert lb.next_probe_in() == pytest.approx(0.6)


def test_healthy_hosts_are_not_probed_when_probe_healthy_is_off() -> None:
    clock = Clock()
    lb = fleet(clock, HealthCheckSettings(probe_healthy=False))
    clock.advance(60)
    assert lb.probe_due() == []


def test_a_lost_connection_gets_its_host_probed_at_once_and_one_failure_takes_it_down() -> None:
    clock = Clock()
    lb = fleet(clock)
    attempt_on(lb, A, Outcome.CONNECTION_LOST)
    assert lb.probe_due() == [A]
    lb.record_probe(A, ok=False, error="refused")  # fall is 2, but the lost connection counts
    assert lb.state_of(A) is HostState.DOWN


def test_a_retry_that_finds_only_suspect_hosts_waits_for_their_probes() -> None:
    clock = Clock()
    lb = fleet(clock)
    attempt_on(lb, A, Outcome.CONNECTION_LOST)
    attempt_on(lb, B, Outcome.CONNECTION_LOST)
    waiter = lb.acquire(0, exclude=[A, B])
    assert isinstance(waiter, Waiter)
    lb.record_probe(A, ok=False, error="refused")
    assert not waiter.released
    lb.record_probe(B, ok=True)
    assert waiter.lease is not None
    assert waiter.lease.endpoint == B


def test_without_health_checks_hosts_serve_at_once_and_are_never_probed() -> None:
    lb = Balancer([A, B], BalancerSettings(health=HealthCheckSettings(enabled=False)))
    assert lb.probe_due() == []
    assert {h.state for h in lb.hosts()} == {HostState.HEALTHY}
    assert isinstance(lb.acquire(0), Lease)


def test_without_health_checks_a_refused_host_returns_after_the_unhealthy_interval() -> None:
    clock = Clock()
    lb = fleet(clock, HealthCheckSettings(enabled=False, unhealthy_interval=2.0))
    attempt_on(lb, A, Outcome.NOT_SENT)
    clock.advance(1.9)
    lb.check_outliers()
    assert lb.state_of(A) is HostState.DOWN
    clock.advance(0.1)
    lb.check_outliers()
    assert lb.state_of(A) is HostState.HEALTHY


def test_a_long_list_of_new_hosts_is_probed_in_waves_of_the_callers_limit() -> None:
    hosts = [Endpoint("ws", f"h{i}", 1) for i in range(10)]
    lb = Balancer(hosts, clock=Clock())
    first = lb.probe_due(limit=4)
    assert first == hosts[:4]
    assert lb.probe_due(limit=4) == hosts[4:8]  # the first wave is still under way
    for endpoint in first:
        lb.record_probe(endpoint, ok=True)
    assert lb.probe_due(limit=4) == hosts[8:]


def test_probe_waves_go_round_the_list_so_no_due_host_starves() -> None:
    clock = Clock()
    hosts = [Endpoint("ws", f"h{i}", 1) for i in range(6)]
    lb = Balancer(hosts, BalancerSettings(connect_timeout=1.0), clock=clock)
    for endpoint in hosts:
        lb.record_probe(endpoint, ok=False, error="refused")  # all down: due every 0.25 s
    probed: list[Endpoint] = []
    for _ in range(3):
        clock.advance(0.25)
        wave = lb.probe_due(limit=4)
        probed += wave
        for endpoint in wave:
            lb.record_probe(endpoint, ok=False, error="refused")
    assert set(probed) == set(hosts)


# -- the after-probe state table on its own (core.probing) ---------------------------------


@pytest.mark.parametrize(
    ("state", "ok", "suspect", "over", "expected"),
    [
        (HostState.JOINING, True, False, True, HostState.HEALTHY),
        (HostState.JOINING, False, False, True, HostState.DOWN),
        (HostState.EJECTED, True, False, False, HostState.EJECTED),  # its time is not up
        (HostState.EJECTED, False, False, False, HostState.EJECTED),
        (HostState.EJECTED, True, False, True, HostState.HEALTHY),
        (HostState.EJECTED, False, False, True, HostState.DOWN),
        (HostState.HEALTHY, False, True, True, HostState.DOWN),  # suspect: one failure
        (HostState.HEALTHY, False, False, True, HostState.HEALTHY),  # fall=2: not yet
        (HostState.HEALTHY, True, True, True, HostState.HEALTHY),
        (HostState.DOWN, True, False, True, HostState.DOWN),  # rise=2: not yet
    ],
)
def test_after_probe_is_a_table_from_state_and_result_to_the_next_state(
    state: HostState, ok: bool, suspect: bool, over: bool, expected: HostState
) -> None:
    counter = HealthCounter(rise=2, fall=2)
    assert after_probe(state, ok, suspect=suspect, ejection_over=over, health=counter) is expected


def test_after_probe_counts_rise_and_fall_for_healthy_and_down_hosts() -> None:
    counter = HealthCounter(rise=2, fall=2)
    down = HostState.DOWN
    assert after_probe(down, True, suspect=False, ejection_over=True, health=counter) is down
    assert after_probe(down, True, suspect=False, ejection_over=True, health=counter) is (
        HostState.HEALTHY
    )
    healthy = HostState.HEALTHY
    assert after_probe(healthy, False, suspect=False, ejection_over=True, health=counter) is healthy
    assert after_probe(healthy, False, suspect=False, ejection_over=True, health=counter) is down
