"""Outlier detection: which hosts that still pass probes are taken out, for how long, and
the limits that keep it from ever emptying the fleet."""

import itertools
import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gremlinlb.core import (
    Balancer,
    BalancerSettings,
    Endpoint,
    EventKind,
    HealthCheckSettings,
    HostEvent,
    HostState,
    Lease,
    Outcome,
    OutlierSettings,
)
from gremlinlb.core.health import HealthCounter
from gremlinlb.core.hosts import Host
from gremlinlb.core.outliers import OutlierDetector
from tests.unit.core_support import Clock, attempt_on, lease_on, serving

A, B, C = (Endpoint("ws", name, 1) for name in "abc")


def fleet(clock: Clock, outlier: OutlierSettings | None = None, **extra: object) -> Balancer:
    """Three serving hosts, past their slow start (warm)."""
    options: dict[str, object] = {"outlier": outlier or OutlierSettings(), **extra}
    lb = serving([A, B, C], BalancerSettings(**options), clock)  # type: ignore[arg-type]
    clock.advance(lb.settings.slow_start)
    return lb


def answer(lb: Balancer, clock: Clock, endpoint: Endpoint, latency: float) -> None:
    """One request on `endpoint` answered after `latency` seconds."""
    lease = lease_on(lb, endpoint)
    clock.advance(latency)
    lb.finish(lease, Outcome.SUCCESS)


def fail_in_a_row(lb: Balancer, endpoint: Endpoint, count: int, outcome: Outcome) -> None:
    for _ in range(count):
        attempt_on(lb, endpoint, outcome)


@pytest.mark.parametrize("outcome", [Outcome.CONNECTION_LOST, Outcome.TIMEOUT])
def test_five_failures_in_a_row_eject_a_host_four_do_not(outcome: Outcome) -> None:
    lb = fleet(Clock())
    fail_in_a_row(lb, A, 4, outcome)
    assert lb.state_of(A) is HostState.HEALTHY
    fail_in_a_row(lb, A, 1, outcome)
    assert lb.state_of(A) is HostState.EJECTED


def test_an_answer_between_failures_starts_the_count_again() -> None:
    lb = fleet(Clock())
    fail_in_a_row(lb, A, 4, Outcome.TIMEOUT)
    attempt_on(lb, A, Outcome.SERVER_ERROR)
    fail_in_a_row(lb, A, 4, Outcome.TIMEOUT)
    assert lb.state_of(A) is HostState.HEALTHY


def test_client_errors_never_count_against_a_host() -> None:
    lb = fleet(Clock())
    fail_in_a_row(lb, A, 20, Outcome.CLIENT_ERROR)
    assert lb.state_of(A) is HostState.HEALTHY


def test_an_ejection_is_announced_with_an_outlier_reason() -> None:
    lb = fleet(Clock())
    events: list[HostEvent] = []
    lb.subscribe(events.append)
    fail_in_a_row(lb, A, 5, Outcome.TIMEOUT)
    (event,) = events
    assert (event.kind, event.endpoint, event.state) == (
        EventKind.STATE_CHANGED,
        A,
        HostState.EJECTED,
    )
    assert event.reason.startswith("outlier: 5 failures in a row")


def test_an_ejected_host_takes_no_new_request() -> None:
    lb = fleet(Clock())
    fail_in_a_row(lb, A, 5, Outcome.TIMEOUT)
    picked = set()
    for _ in range(6):
        lease = lb.acquire(0)
        assert isinstance(lease, Lease)
        picked.add(lease.endpoint)
        lb.finish(lease, Outcome.SUCCESS)
    assert picked == {B, C}


def test_without_health_checks_a_host_silent_while_its_peers_answer_is_ejected_as_stuck() -> None:
    clock = Clock()
    lb = fleet(clock, health=HealthCheckSettings(enabled=False))
    lease_on(lb, A)
    lease_on(lb, A)
    answer(lb, clock, B, 0.9)
    assert lb.check_outliers() == []  # within stuck_floor (1 s)
    answer(lb, clock, B, 0.2)
    assert lb.check_outliers() == [A]
    assert lb.stats().ejections == {"stuck": 1}


def test_a_host_answering_nothing_while_its_peers_answer_is_probed_at_once() -> None:
    clock = Clock()
    lb = fleet(clock)
    lease_on(lb, A)
    lease_on(lb, A)
    answer(lb, clock, B, 0.9)
    lb.check_outliers()
    assert lb.probe_due() == []  # within stuck_floor (1 s)
    answer(lb, clock, B, 0.2)
    lb.check_outliers()
    assert lb.probe_due() == [A]


def test_a_host_in_slow_start_is_not_judged_stuck() -> None:
    clock = Clock()
    lb = serving([A, B, C], BalancerSettings(slow_start=5.0), clock)  # all just joined
    lease_on(lb, A)
    lease_on(lb, A)
    answer(lb, clock, B, 3.0)  # a cold JVM's first answers can take seconds
    assert lb.check_outliers() == []


def test_one_slow_query_on_a_host_that_answers_others_is_not_stuck() -> None:
    clock = Clock()
    lb = fleet(clock)
    lease_on(lb, A)  # the slow query, never answered in this test
    for _ in range(20):
        lease_on(lb, A)  # another request there...
        answer(lb, clock, A, 0.05)  # ...while the host keeps answering others
        answer(lb, clock, B, 0.05)
        assert lb.check_outliers() == []
    assert lb.state_of(A) is HostState.HEALTHY


def test_a_single_slow_request_alone_on_its_host_is_not_stuck() -> None:
    clock = Clock()
    lb = fleet(clock)
    lease_on(lb, A)
    for _ in range(10):
        answer(lb, clock, B, 1.0)
    assert lb.check_outliers() == []


def test_no_host_is_stuck_while_no_host_answers() -> None:
    clock = Clock()
    lb = fleet(clock)
    for endpoint in (A, A, B, B, C, C):
        lease_on(lb, endpoint)
    clock.advance(30)
    assert lb.check_outliers() == []


def test_the_stuck_limit_grows_with_the_peers_typical_latency() -> None:
    clock = Clock()
    lb = fleet(clock)
    for _ in range(8):
        answer(lb, clock, B, 0.2)
        answer(lb, clock, C, 0.2)
    lease_on(lb, A)
    lease_on(lb, A)
    clock.advance(1.5)  # more than stuck_floor, less than 10 x 0.2 s
    answer(lb, clock, B, 0.2)
    lb.check_outliers()
    assert A not in lb.probe_due()
    clock.advance(0.5)
    answer(lb, clock, B, 0.2)
    lb.check_outliers()
    assert A in lb.probe_due()


def answer_round(lb: Balancer, clock: Clock, slow: float, rounds: int) -> None:
    """`rounds` answers from each host: A's take `slow` seconds, B's and C's 10 ms."""
    for _ in range(rounds):
        answer(lb, clock, A, slow)
        answer(lb, clock, B, 0.01)
        answer(lb, clock, C, 0.01)


def test_a_host_many_times_slower_than_its_peers_is_ejected_as_slow() -> None:
    clock = Clock()
    lb = fleet(clock)
    answer_round(lb, clock, 0.5, 8)
    assert lb.check_outliers() == []  # slow in one window: not yet
    answer_round(lb, clock, 0.5, 16)
    assert lb.check_outliers() == [A]
    assert lb.stats().ejections == {"slow": 1}


def test_a_host_slow_for_one_window_only_is_not_ejected() -> None:
    """A server descheduled for a moment on a busy machine, then as fast as its peers."""
    clock = Clock()
    lb = fleet(clock)
    answer_round(lb, clock, 0.5, 16)
    assert lb.check_outliers() == []
    answer_round(lb, clock, 0.01, 16)
    assert lb.check_outliers() == []
    answer_round(lb, clock, 0.5, 8)  # slow again: a new first window, not the second
    assert lb.check_outliers() == []
    assert lb.stats().ejections == {}


def test_a_slow_host_is_ejected_only_after_a_whole_new_window_of_answers() -> None:
    clock = Clock()
    lb = fleet(clock)
    answer_round(lb, clock, 0.5, 8)
    assert lb.check_outliers() == []
    answer_round(lb, clock, 0.5, 15)
    assert lb.check_outliers() == []  # 15 answers since: the window is not new yet
    answer_round(lb, clock, 0.5, 1)
    assert lb.check_outliers() == [A]


def test_a_host_five_times_slower_than_its_peers_is_not_an_outlier() -> None:
    clock = Clock()
    lb = fleet(clock)
    for _ in range(8):
        answer(lb, clock, A, 0.25)  # a cold JVM on a busy machine, next to warm peers
        answer(lb, clock, B, 0.05)
        answer(lb, clock, C, 0.05)
    assert lb.check_outliers() == []


def test_one_slow_answer_does_not_make_a_host_slow() -> None:
    clock = Clock()
    lb = fleet(clock)
    for latency in [0.01] * 7 + [20.0]:
        answer(lb, clock, A, latency)
        answer(lb, clock, B, 0.01)
        answer(lb, clock, C, 0.01)
    assert lb.check_outliers() == []


def test_a_host_under_the_slow_floor_is_not_slow_however_it_compares() -> None:
    clock = Clock()
    lb = fleet(clock)
    for _ in range(8):
        answer(lb, clock, A, 0.05)  # 50 x its peers, but under slow_floor = 0.1 s
        answer(lb, clock, B, 0.001)
        answer(lb, clock, C, 0.001)
    assert lb.check_outliers() == []


def test_an_ejected_host_stays_out_until_its_time_is_up_even_if_probes_pass() -> None:
    clock = Clock()
    lb = fleet(clock)
    fail_in_a_row(lb, A, 5, Outcome.TIMEOUT)
    clock.advance(4.9)
    assert A not in lb.probe_due()
    lb.record_probe(A, ok=True)
    assert lb.state_of(A) is HostState.EJECTED


def test_an_ejected_host_returns_after_its_time_and_a_passing_probe() -> None:
    clock = Clock()
    lb = fleet(clock)
    fail_in_a_row(lb, A, 5, Outcome.TIMEOUT)
    clock.advance(5.0)
    assert A in lb.probe_due()
    lb.record_probe(A, ok=True)
    assert lb.state_of(A) is HostState.HEALTHY


def test_an_ejected_host_failing_its_return_probe_goes_down() -> None:
    clock = Clock()
    lb = fleet(clock)
    fail_in_a_row(lb, A, 5, Outcome.TIMEOUT)
    clock.advance(5.0)
    lb.record_probe(A, ok=False, error="refused")
    assert lb.state_of(A) is HostState.DOWN


def test_without_health_checks_an_ejected_host_returns_when_its_time_is_up() -> None:
    clock = Clock()
    lb = fleet(clock, health=HealthCheckSettings(enabled=False))
    fail_in_a_row(lb, A, 5, Outcome.TIMEOUT)
    clock.advance(5.0)
    lb.check_outliers()
    assert lb.state_of(A) is HostState.HEALTHY


def test_the_last_healthy_host_is_never_ejected() -> None:
    lb = serving([A, B], BalancerSettings(outlier=OutlierSettings(max_ejected_share=0.9)))
    attempt_on(lb, B, Outcome.NOT_SENT)  # B is down: A is all that serves
    fail_in_a_row(lb, A, 50, Outcome.TIMEOUT)
    assert lb.state_of(A) is HostState.HEALTHY


def test_the_share_cap_keeps_a_second_host_in() -> None:
    lb = fleet(Clock())  # max_ejected_share 0.5 of 3 hosts: one at a time
    fail_in_a_row(lb, A, 5, Outcome.TIMEOUT)
    fail_in_a_row(lb, B, 5, Outcome.TIMEOUT)
    assert [lb.state_of(e) for e in (A, B)] == [HostState.EJECTED, HostState.HEALTHY]


def test_host_status_shows_ejections_and_until_when() -> None:
    lb = fleet(Clock())
    fail_in_a_row(lb, A, 5, Outcome.TIMEOUT)
    status = lb.hosts()[0]
    assert status.ejections == 1
    assert status.ejected_until == pytest.approx(time.time() + 5.0, abs=1.0)
    assert lb.hosts()[1].ejected_until is None


def eject_and_return(lb: Balancer, clock: Clock) -> float:
    """Eject A by failures, return the ejection's length, then let it back in."""
    fail_in_a_row(lb, A, lb.settings.outlier.consecutive_failures, Outcome.TIMEOUT)
    status = lb.hosts()[0]
    assert status.state is HostState.EJECTED
    assert status.ejected_until is not None
    length = status.ejected_until - status.state_since
    clock.advance(length)
    lb.record_probe(A, ok=True)
    assert lb.state_of(A) is HostState.HEALTHY
    return length


@settings(max_examples=100, deadline=None)
@given(
    st.floats(0.5, 20.0),
    st.floats(1.0, 10.0),
    st.integers(1, 12),
)
def test_ejection_time_grows_with_each_ejection_and_is_capped(
    base: float, cap_factor: float, count: int
) -> None:
    outlier = OutlierSettings(base_ejection=base, max_ejection=base * cap_factor)
    clock = Clock()
    lb = fleet(clock, outlier)
    lengths = [eject_and_return(lb, clock) for _ in range(count)]
    for index, length in enumerate(lengths):
        expected = min(base * (index + 1), outlier.max_ejection)
        assert length == pytest.approx(expected, abs=0.05)
    assert all(later >= earlier - 0.05 for earlier, later in itertools.pairwise(lengths))


def test_each_max_ejection_seconds_of_health_forgive_one_past_ejection() -> None:
    clock = Clock()
    lb = fleet(clock)
    assert [eject_and_return(lb, clock) for _ in range(3)] == pytest.approx([5, 10, 15], abs=0.05)
    clock.advance(2 * lb.settings.outlier.max_ejection)
    assert eject_and_return(lb, clock) == pytest.approx(10, abs=0.05)


outlier_ops = st.lists(
    st.tuples(
        st.sampled_from(["fail", "stuck", "slow", "fast", "wait", "probe"]),
        st.integers(0, 5),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 6), st.floats(0.0, 0.95), outlier_ops)
def test_outlier_detection_never_ejects_beyond_the_share_cap_or_the_last_healthy_host(
    host_count: int, share: float, ops: list[tuple[str, int]]
) -> None:
    clock = Clock()
    hosts = [Endpoint("ws", f"h{i}", 1) for i in range(host_count)]
    outlier = OutlierSettings(max_ejected_share=share, consecutive_failures=2)
    lb = serving(hosts, BalancerSettings(outlier=outlier), clock)
    cap = max(1, math.floor(share * host_count))

    def healthy(endpoint: Endpoint) -> bool:
        return lb.state_of(endpoint) is HostState.HEALTHY

    for action, index in ops:
        host = hosts[index % host_count]
        if action == "fail" and healthy(host):
            attempt_on(lb, host, Outcome.CONNECTION_LOST)
        elif action == "stuck" and healthy(host):
            lease_on(lb, host)
            lease_on(lb, host)
        elif action == "slow" and healthy(host):
            answer(lb, clock, host, 2.0)
        elif action == "fast" and healthy(host):
            answer(lb, clock, host, 0.01)
        elif action == "wait":
            clock.advance(index)
        elif action == "probe":
            for due in lb.probe_due():
                lb.record_probe(due, ok=True)
        lb.check_outliers()
        states = [lb.state_of(e) for e in hosts]
        assert states.count(HostState.EJECTED) <= cap
        assert HostState.HEALTHY in states


# -- the detector on its own (core.outliers): fleet verdicts over per-host evidence --------


def _host(seq: int, state: HostState = HostState.HEALTHY) -> Host:
    return Host(Endpoint("ws", f"h{seq}", 1), seq, HealthCounter(1, 1), state)


def test_the_detector_lengthens_repeat_ejections_up_to_max_ejection() -> None:
    outlier = OutlierSettings(base_ejection=10.0, max_ejection=25.0)
    detector = OutlierDetector(BalancerSettings(outlier=outlier))
    host = _host(0)
    assert detector.eject(host, "slow", now=0.0) == 10.0
    assert detector.eject(host, "slow", now=0.0) == 20.0  # no healthy time in between
    assert detector.eject(host, "stuck", now=0.0) == 25.0
    assert host.evidence.ejections == 3
    assert detector.ejections == {"slow": 2, "stuck": 1}


def test_the_detector_forgives_one_level_per_max_ejection_healthy_seconds() -> None:
    outlier = OutlierSettings(base_ejection=10.0, max_ejection=30.0)
    detector = OutlierDetector(BalancerSettings(outlier=outlier))
    host = _host(0)
    detector.eject(host, "slow", now=0.0)
    detector.eject(host, "slow", now=0.0)  # level 2
    detector.returned(host, now=100.0)
    assert detector.eject(host, "slow", now=130.0) == 20.0  # 30 healthy s: back to 1, then 2


def test_the_share_cap_counts_hosts_not_draining_and_keeps_the_last_healthy() -> None:
    detector = OutlierDetector(BalancerSettings(outlier=OutlierSettings(max_ejected_share=0.5)))
    ring = [_host(0, HostState.EJECTED), _host(1), _host(2), _host(3, HostState.DRAINING)]
    assert not detector.within_cap(ring[1], ring)  # one of three already out: cap 1
    assert detector.may_eject(ring[0], ring)  # the ejected one itself fits
    pair = [_host(0), _host(1, HostState.DOWN)]
    assert not detector.may_eject(pair[0], pair)  # never the last healthy host
