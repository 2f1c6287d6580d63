"""Hedging support and the extra-request budget shared by hedges and costly retries."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gremlinlb.core import (
    Balancer,
    BalancerSettings,
    BudgetSettings,
    Endpoint,
    HedgeSettings,
    HostState,
    Lease,
    NoHealthyEndpointError,
    Outcome,
    hedging,
)
from gremlinlb.core.hedging import HedgeRule
from tests.unit.core_support import Clock, attempt_on, lease_on, serving

A = Endpoint("ws", "a", 1)
B = Endpoint("ws", "b", 1)


def answer(lb: Balancer, clock: Clock, endpoint: Endpoint, latency: float) -> None:
    lease = lease_on(lb, endpoint)
    clock.advance(latency)
    lb.finish(lease, Outcome.SUCCESS)


def test_without_answers_yet_the_hedge_delay_is_max_delay() -> None:
    lb = serving([A, B], BalancerSettings(hedge=HedgeSettings(max_delay=0.4)))
    assert lb.hedge_delay() == 0.4


def test_the_hedge_delay_is_the_configured_percentile_of_recent_latencies() -> None:
    clock = Clock()
    lb = serving([A, B], BalancerSettings(hedge=HedgeSettings(percentile=0.9)), clock)
    for millis in range(1, 101):
        answer(lb, clock, A, millis / 1000)
    clock.advance(1)  # past the delay's refresh
    assert lb.hedge_delay() == pytest.approx(0.090)


@pytest.mark.parametrize(("latency", "delay"), [(0.001, 0.01), (3.0, 0.5)])
def test_the_hedge_delay_stays_within_its_floor_and_its_cap(latency: float, delay: float) -> None:
    clock = Clock()
    hedge = HedgeSettings(delay_floor=0.01, max_delay=0.5)
    lb = serving([A, B], BalancerSettings(hedge=hedge), clock)
    for _ in range(50):
        answer(lb, clock, A, latency)
    clock.advance(1)
    assert lb.hedge_delay() == pytest.approx(delay)


def test_a_hedge_goes_to_another_host_and_is_counted() -> None:
    lb = serving([A, B])
    first = lease_on(lb, A)
    hedge = lb.acquire(0, exclude=[first.endpoint], hedge=True)
    assert isinstance(hedge, Lease)
    assert (hedge.endpoint, hedge.hedge) == (B, True)
    assert lb.stats().hedges_sent == 1


def test_a_hedge_never_waits_for_a_host() -> None:
    lb = serving([A, B])
    attempt_on(lb, B, Outcome.NOT_SENT)
    with pytest.raises(NoHealthyEndpointError, match="hedged request"):
        lb.acquire(0, exclude=[A], hedge=True)
    assert lb.buffered == 0


def test_only_a_hedge_lease_counts_as_a_hedge_won() -> None:
    lb = serving([A, B])
    first = lease_on(lb, A)
    hedge = lb.acquire(0, exclude=[A], hedge=True)
    assert isinstance(hedge, Lease)
    lb.hedge_won(first)
    lb.hedge_won(hedge)
    assert lb.stats().hedges_won == 1


def test_a_read_on_a_host_that_answers_nothing_while_given_more_deserves_a_hedge() -> None:
    clock = Clock()
    lb = serving([A, B], clock=clock)
    slow = lease_on(lb, A, write=False)
    clock.advance(0.05)
    lease_on(lb, A)
    assert lb.should_hedge(slow)


def test_with_pings_a_read_on_a_quiet_host_waits_for_the_pings_verdict() -> None:
    # Several slow queries sent at once fill a server's workers together: from here this
    # read may be one of them. A ping tells a hung server from a busy one.
    clock = Clock()
    lb = serving([A, B], clock=clock)
    slow = lease_on(lb, A, write=False)
    clock.advance(0.05)
    lease_on(lb, A)
    assert not lb.should_hedge(slow, pings=True)
    assert lb.is_quiet(slow)


def test_a_quiet_host_that_answers_a_ping_keeps_its_reads() -> None:
    clock = Clock()
    lb = serving([A, B], clock=clock)
    slow = lease_on(lb, A, write=False)
    clock.advance(0.05)
    lease_on(lb, A)
    lb.record_ping(A, answered=True)
    assert not lb.is_quiet(slow)
    assert not lb.should_hedge(slow, pings=True)


def test_a_quiet_host_that_answers_no_ping_goes_down_and_its_reads_deserve_a_hedge() -> None:
    clock = Clock()
    lb = serving([A, B], clock=clock)
    slow = lease_on(lb, A, write=False)
    clock.advance(0.05)
    lease_on(lb, A)
    lb.record_ping(A, answered=False)
    assert lb.state_of(A) is HostState.DOWN
    assert lb.should_hedge(slow, pings=True)


def test_a_read_queued_on_a_host_found_stuck_deserves_a_hedge() -> None:
    clock = Clock()
    lb = serving([A, B, Endpoint("ws", "c", 1)], clock=clock)
    clock.advance(lb.settings.slow_start)
    lease_on(lb, A, write=False)
    lease_on(lb, A, write=False)
    queued = lease_on(lb, A, write=False)
    clock.advance(1.5)
    answered = lease_on(lb, B, write=False)
    lb.finish(answered, Outcome.SUCCESS)
    lb.check_outliers()
    assert lb.should_hedge(queued)


def test_a_slow_read_on_a_host_that_answers_others_gets_no_hedge() -> None:
    clock = Clock()
    lb = serving([A, B], clock=clock)
    slow = lease_on(lb, A, write=False)
    answer(lb, clock, A, 0.05)
    lease_on(lb, A)
    assert not lb.should_hedge(slow)


def test_a_read_alone_on_its_host_gets_no_hedge() -> None:
    clock = Clock()
    lb = serving([A, B], clock=clock)
    alone = lease_on(lb, A, write=False)
    clock.advance(1.0)
    assert not lb.should_hedge(alone)


def test_a_read_on_an_ejected_host_deserves_a_hedge() -> None:
    lb = serving([A, B])
    stranded = lease_on(lb, A, write=False)
    for _ in range(5):
        attempt_on(lb, A, Outcome.TIMEOUT)
    assert lb.should_hedge(stranded)


def test_a_write_gets_no_hedge_even_on_an_ejected_host() -> None:
    """A hedge is a second copy of the request: a write sent twice may be applied twice."""
    lb = serving([A, B])
    stranded = lease_on(lb, A, write=True)
    for _ in range(5):
        attempt_on(lb, A, Outcome.TIMEOUT)
    assert not lb.should_hedge(stranded)


def test_no_hedge_once_the_read_ended_or_when_hedging_is_off() -> None:
    clock = Clock()
    lb = serving([A, B], BalancerSettings(hedge=HedgeSettings(enabled=False)), clock)
    slow = lease_on(lb, A, write=False)
    lease_on(lb, A)
    assert not lb.should_hedge(slow)
    lb.update_settings(BalancerSettings())
    lb.finish(slow, Outcome.SUCCESS)
    assert not lb.should_hedge(slow)


def test_a_quiet_client_may_spend_the_minimum_and_no_more() -> None:
    budget = BudgetSettings(ratio=0.2, min_per_second=0.5, window=10.0)
    lb = serving([A, B], BalancerSettings(budget=budget))
    assert [lb.try_spend_extra() for _ in range(6)] == [True] * 5 + [False]
    assert lb.stats().budget_exhausted == 1
    assert lb.stats().extra_spent == 5


def test_first_attempts_earn_extra_requests_and_retries_and_hedges_do_not() -> None:
    budget = BudgetSettings(ratio=0.5, min_per_second=0.0, window=10.0)
    lb = serving([A, B], BalancerSettings(budget=budget))
    for _ in range(4):
        lb.finish(lease_on(lb, A), Outcome.SUCCESS)  # retries: nothing earned
        first = lb.acquire(0)  # first attempts: half a request each
        assert isinstance(first, Lease)
        lb.acquire(0, exclude=[first.endpoint], hedge=True)
    assert [lb.try_spend_extra() for _ in range(3)] == [True, True, False]


def test_earned_extra_requests_expire_with_the_window() -> None:
    clock = Clock()
    budget = BudgetSettings(ratio=1.0, min_per_second=0.0, window=10.0)
    lb = serving([A, B], BalancerSettings(budget=budget), clock)
    lb.acquire(0)
    clock.advance(11)
    assert not lb.try_spend_extra()


@settings(max_examples=200, deadline=None)
@given(
    st.floats(0.0, 1.0),
    st.floats(0.0, 2.0),
    st.lists(
        st.tuples(st.sampled_from(["request", "extra"]), st.floats(0.0, 3.0)),
        max_size=150,
    ),
)
def test_extra_requests_never_exceed_ratio_times_requests_plus_the_minimum_in_any_window(
    ratio: float, minimum: float, timeline: list[tuple[str, float]]
) -> None:
    window = 10.0
    clock = Clock()
    budget = BudgetSettings(ratio=ratio, min_per_second=minimum, window=window)
    lb = serving([A, B], BalancerSettings(budget=budget), clock)
    requests: list[float] = []
    extras: list[float] = []
    for kind, pause in timeline:
        clock.advance(pause)
        if kind == "request":
            lease = lb.acquire(0)
            assert isinstance(lease, Lease)
            lb.finish(lease, Outcome.SUCCESS)
            requests.append(clock.now)
        elif lb.try_spend_extra():
            extras.append(clock.now)
            now = clock.now
            spent = sum(1 for t in extras if t > now - window)
            earned = sum(1 for t in requests if t > now - window)
            assert spent <= ratio * earned + minimum * window + 1e-9


# -- the hedge rule on its own (core.hedging) ----------------------------------------------


def test_the_hedge_delay_is_max_delay_until_enough_answers_then_their_percentile() -> None:
    hedge = HedgeSettings(percentile=0.5, delay_floor=0.01, max_delay=0.5)
    rule = HedgeRule(BalancerSettings(hedge=hedge))
    for _ in range(hedging.MIN_SAMPLES - 1):
        rule.answered(0.1)
    assert rule.delay_at(0.0) == 0.5
    rule.answered(0.1)
    assert rule.delay_at(0.0) == 0.5  # cached for REFRESH seconds
    assert rule.delay_at(hedging.REFRESH) == pytest.approx(0.1)
    rule.forget_delay()
    for _ in range(100):
        rule.answered(0.001)
    assert rule.delay_at(hedging.REFRESH) == 0.01  # never under delay_floor


def test_only_reads_are_hedgeable() -> None:
    rule = HedgeRule(BalancerSettings())
    read = Lease(Endpoint("ws", "a", 1), 0.0, write=False)
    assert rule.hedgeable(read)
    assert not rule.hedgeable(Lease(Endpoint("ws", "a", 1), 0.0, write=True))
    assert not rule.hedgeable(Lease(Endpoint("ws", "a", 1), 0.0, hedge=True, write=False))
    assert not rule.hedgeable(Lease(Endpoint("ws", "a", 1), 0.0, session=True, write=False))
    off = HedgeRule(BalancerSettings(hedge=HedgeSettings(enabled=False)))
    assert not off.hedgeable(read)
