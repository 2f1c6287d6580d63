"""Bounded under stress (issue 20): several bad hosts, slow queries running normally, probes
as evidence, and one attempt budget per request. Pure core, fake clock."""

from gremlinlb.core import (
    Balancer,
    BalancerSettings,
    Endpoint,
    HealthCheckSettings,
    HostState,
    Lease,
    Outcome,
    OutlierSettings,
)
from tests.unit.core_support import Clock, lease_on, serving

A, B, C = (Endpoint("ws", name, 1) for name in "abc")


def fleet(clock: Clock, *, health: bool = True) -> Balancer:
    """Three serving hosts past their slow start; at most one may be ejected (the cap)."""
    settings = BalancerSettings(
        outlier=OutlierSettings(max_ejected_share=0.34),
        health=HealthCheckSettings(enabled=health),
    )
    lb = serving([A, B, C], settings, clock)
    clock.advance(lb.settings.slow_start)
    return lb


def answer(lb: Balancer, clock: Clock, endpoint: Endpoint, latency: float) -> None:
    lease = lease_on(lb, endpoint, write=False)
    clock.advance(latency)
    lb.finish(lease, Outcome.SUCCESS)


def hang(lb: Balancer, endpoint: Endpoint, requests: int = 2) -> list[Lease]:
    return [lease_on(lb, endpoint, write=False) for _ in range(requests)]


def picks(lb: Balancer, count: int) -> set[Endpoint]:
    picked = set()
    for _ in range(count):
        lease = lb.acquire(0, write=False)
        assert isinstance(lease, Lease)
        picked.add(lease.endpoint)
        lb.finish(lease, Outcome.SUCCESS)
    return picked


def two_hung_hosts(clock: Clock, *, health: bool = True) -> Balancer:
    """A and B answer nothing while C answers."""
    lb = fleet(clock, health=health)
    hang(lb, A)
    hang(lb, B)
    answer(lb, clock, C, 1.2)
    lb.check_outliers()
    return lb


def states(lb: Balancer) -> list[HostState]:
    return [lb.state_of(e) for e in (A, B, C)]


def hedges_from_a(lb: Balancer) -> set[Endpoint]:
    picked = set()
    for _ in range(6):
        hedge = lb.acquire(0, exclude=[A], hedge=True, write=False)
        assert isinstance(hedge, Lease)
        picked.add(hedge.endpoint)
        lb.release(hedge)
    return picked


def test_stuck_hosts_get_no_new_request_while_another_host_answers() -> None:
    lb = two_hung_hosts(Clock())
    assert picks(lb, 6) == {C}


def test_stuck_hosts_are_probed_at_once_not_ejected() -> None:
    lb = two_hung_hosts(Clock())
    assert set(lb.probe_due()) == {A, B}
    assert states(lb) == [HostState.HEALTHY] * 3
    assert lb.stats().ejections == {}
    assert lb.stats().deprioritised == 2


def test_a_stuck_host_whose_probe_fails_goes_down() -> None:
    lb = two_hung_hosts(Clock())
    lb.record_probe(A, ok=False, error="no answer within 5s")
    assert lb.state_of(A) is HostState.DOWN


def test_a_stuck_host_whose_server_answers_a_ping_stays_in_rotation_deprioritised() -> None:
    clock = Clock()
    lb = two_hung_hosts(clock)
    lb.record_probe(A, ok=False, error="no answer within 5s", alive=True)
    clock.advance(1.0)
    answer(lb, clock, C, 0.1)
    assert lb.check_outliers() == []
    assert lb.state_of(A) is HostState.HEALTHY
    assert A not in picks(lb, 6)


def test_without_health_checks_a_stuck_host_past_the_share_cap_is_deprioritised() -> None:
    lb = two_hung_hosts(Clock(), health=False)
    assert states(lb) == [HostState.EJECTED, HostState.HEALTHY, HostState.HEALTHY]
    assert picks(lb, 6) == {C}
    assert lb.stats().ejections == {"stuck": 1}


def test_a_deprioritised_host_serves_again_after_its_next_answer() -> None:
    clock = Clock()
    lb = two_hung_hosts(clock)
    stranded = lb.in_flight(B)[0]
    lb.finish(stranded, Outcome.SUCCESS)
    assert picks(lb, 6) == {B, C}


def test_a_deprioritised_host_still_serves_when_it_is_the_only_candidate() -> None:
    lb = two_hung_hosts(Clock())
    lease = lb.acquire(0, exclude=[C], write=False)
    assert isinstance(lease, Lease)
    assert lease.endpoint in (A, B)


def test_a_hedge_goes_to_a_host_that_answers_not_to_another_silent_one() -> None:
    clock = Clock()
    lb = fleet(clock)
    hang(lb, B)  # silent past the hedge delay, not yet judged stuck
    clock.advance(lb.hedge_delay() + 0.1)
    first = lease_on(lb, A, write=False)
    answer(lb, clock, C, 0.05)
    hedges = hedges_from_a(lb)
    assert hedges == {C}
    lb.release(first)


def test_a_host_whose_probe_passed_since_it_went_quiet_is_not_ejected_as_stuck() -> None:
    clock = Clock()
    lb = fleet(clock)
    hang(lb, A)  # two slow queries: the server answers nothing else on its pool meanwhile
    clock.advance(0.5)
    lb.record_probe(A, ok=True)  # ... but its probes pass
    answer(lb, clock, C, 1.0)
    assert lb.check_outliers() == []
    assert lb.state_of(A) is HostState.HEALTHY


def test_a_read_its_host_answered_others_around_is_not_re_sent_when_the_host_is_ejected() -> None:
    clock = Clock()
    lb = fleet(clock, health=False)
    slow = lease_on(lb, A, write=False)
    for _ in range(3):
        answer(lb, clock, A, 0.5)  # A kept answering others while `slow` ran
    stuck = hang(lb, A)
    answer(lb, clock, B, 1.5)
    assert lb.check_outliers() == [A]
    assert not lb.may_resend(slow)
    assert not lb.should_hedge(slow)
    assert all(lb.may_resend(lease) for lease in stuck)


def test_reads_on_a_host_that_went_down_are_re_sent() -> None:
    clock = Clock()
    lb = fleet(clock)
    slow = lease_on(lb, A, write=False)
    answer(lb, clock, A, 2.0)
    lb.finish(lease_on(lb, A), Outcome.NOT_SENT)  # its connections refused: down
    assert lb.state_of(A) is HostState.DOWN
    assert lb.may_resend(slow)


def test_writes_are_never_re_sent() -> None:
    lb = fleet(Clock())
    write = lease_on(lb, A)
    lb.finish(lease_on(lb, A), Outcome.NOT_SENT)
    assert not lb.may_resend(write)


def test_reads_started_before_a_stuck_hosts_last_answer_are_not_hedged() -> None:
    clock = Clock()
    lb = fleet(clock)
    slow = hang(lb, A)  # two slow queries fill the server's workers together
    answer(lb, clock, A, 0.01)  # what it was already running is answered
    clock.advance(0.01)
    queued = lease_on(lb, A, write=False)  # waits behind them
    lease_on(lb, A, write=False)
    answer(lb, clock, C, 1.5)
    lb.check_outliers()
    assert [lb.should_hedge(lease) for lease in slow] == [False, False]
    assert lb.should_hedge(queued)


def test_a_suspect_host_in_rotation_is_probed_before_a_long_list_of_down_hosts() -> None:
    clock = Clock()
    dead = [Endpoint("ws", f"dead{i}", 1) for i in range(2000)]
    lb = fleet(clock)
    for endpoint in dead:
        lb.add(endpoint)
    for endpoint in lb.probe_due():
        lb.record_probe(endpoint, ok=endpoint in (A, B, C), error="refused")
    clock.advance(lb.settings.health.unhealthy_interval)
    for _ in range(3):  # waves of down hosts under way
        lb.probe_due(limit=10)
    lb.finish(lease_on(lb, A, write=False), Outcome.CONNECTION_LOST)  # A is suspect now
    assert A in lb.probe_due(limit=10)


def test_down_hosts_are_handed_out_for_probes_least_recently_probed_first() -> None:
    clock = Clock()
    dead = [Endpoint("ws", f"dead{i}", 1) for i in range(30)]
    lb = fleet(clock)
    for endpoint in dead:
        lb.add(endpoint)
    for endpoint in lb.probe_due():
        lb.record_probe(endpoint, ok=endpoint in (A, B, C), error="refused")
    clock.advance(lb.settings.health.unhealthy_interval)
    waves = []
    for _ in range(3):
        wave = lb.probe_due(limit=10)
        for endpoint in wave:
            lb.record_probe(endpoint, ok=False, error="refused")
        waves.append(wave)
    assert sorted(e.host for wave in waves for e in wave) == sorted(e.host for e in dead)


def test_a_host_idle_for_long_that_was_just_sent_a_request_still_takes_hedges() -> None:
    # Two servers hung: the reads re-sent away from the first found out all go to the idle
    # third, not one to the third and the rest to the other hung one.
    clock = Clock()
    lb = fleet(clock)
    first = lease_on(lb, A, write=False)
    hang(lb, B)
    clock.advance(lb.hedge_delay() + 0.1)  # C was given nothing meanwhile
    just_sent = lease_on(lb, C, write=False)
    assert hedges_from_a(lb) == {C}
    lb.release(just_sent)
    lb.release(first)


def test_a_host_whose_last_answer_came_just_before_it_went_silent_takes_no_hedge() -> None:
    clock = Clock()
    lb = fleet(clock)
    first = lease_on(lb, A, write=False)
    late = lease_on(lb, B, write=False)  # sent just before B hung ...
    answer(lb, clock, B, 0.001)  # ... as was this one, answered: B's last answer
    clock.advance(lb.settings.hedge.max_delay + 0.1)
    answer(lb, clock, C, 0.01)
    assert hedges_from_a(lb) == {C}
    lb.release(late)
    lb.release(first)
