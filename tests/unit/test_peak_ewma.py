"""Policy.PEAK_EWMA: Linkerd's cost, peak-EWMA latency x (in flight + 1), by two choices."""

import math

import pytest

from gremlinlb.core import Balancer, BalancerSettings, Endpoint, Lease, Outcome, Policy
from tests.unit.core_support import Clock, lease_on, serving

A = Endpoint("ws", "a", 1)
B = Endpoint("ws", "b", 1)
EWMA = BalancerSettings(policy=Policy.PEAK_EWMA, slow_start=0)


def answer(lb: Balancer, clock: Clock, endpoint: Endpoint, latency: float) -> None:
    lease = lease_on(lb, endpoint)
    clock.advance(latency)
    lb.finish(lease, Outcome.SUCCESS)


def picks(lb: Balancer, count: int) -> set[Endpoint]:
    """Where `count` requests go; each is released unused (no latency sample)."""
    chosen = set()
    for _ in range(count):
        lease = lb.acquire(0)
        assert isinstance(lease, Lease)
        chosen.add(lease.endpoint)
        lb.release(lease)
    return chosen


def test_the_faster_host_gets_the_requests() -> None:
    clock = Clock()
    lb = serving([A, B], EWMA, clock)
    for _ in range(5):
        answer(lb, clock, A, 0.01)
        answer(lb, clock, B, 0.1)
    assert picks(lb, 20) == {A}


def test_requests_in_flight_multiply_the_cost() -> None:
    clock = Clock()
    lb = serving([A, B], EWMA, clock)
    answer(lb, clock, A, 0.01)
    answer(lb, clock, B, 0.01)
    for _ in range(3):
        lease_on(lb, A)
    assert picks(lb, 20) == {B}


def test_one_slow_answer_raises_the_estimate_to_it_at_once() -> None:
    clock = Clock()
    lb = serving([A], EWMA, clock)
    for _ in range(7):
        answer(lb, clock, A, 0.01)
    answer(lb, clock, A, 0.5)
    assert lb.hosts()[0].ewma_latency == pytest.approx(0.5)


def test_faster_answers_bring_the_estimate_down_by_elapsed_time() -> None:
    clock = Clock()
    lb = serving([A], EWMA, clock)
    answer(lb, clock, A, 0.5)
    clock.advance(9.99)  # tau = 10 s: the next answer weighs 1 - 1/e
    answer(lb, clock, A, 0.01)
    expected = 0.5 * math.exp(-1) + 0.01 * (1 - math.exp(-1))
    assert lb.hosts()[0].ewma_latency == pytest.approx(expected, rel=1e-3)


def test_a_slow_answer_is_forgotten_over_a_silence_of_a_few_decay_times() -> None:
    clock = Clock()
    lb = serving([A], EWMA, clock)
    answer(lb, clock, A, 0.5)
    clock.advance(30)
    estimate = lb.hosts()[0].ewma_latency
    assert estimate is not None
    assert estimate < 0.5 * math.exp(-2.9)
