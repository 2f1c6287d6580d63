"""Leases: the core knows every attempt in flight, measures it, and counts it once."""

from gremlinlb.core import Balancer, BalancerSettings, Endpoint, Lease, Outcome, Waiter
from tests.unit.core_support import Clock, lease_on, serving

A = Endpoint("ws", "a", 1)
B = Endpoint("ws", "b", 1)


def test_a_lease_names_its_host_and_its_start_on_the_balancers_clock() -> None:
    clock = Clock(50.0)
    lb = serving([A], clock=clock)
    lease = lb.acquire(0)
    assert isinstance(lease, Lease)
    assert (lease.endpoint, lease.started, lease.hedge, lease.session) == (A, 50.0, False, False)


def test_finishing_a_lease_twice_counts_it_once() -> None:
    lb = serving([A])
    lease = lease_on(lb, A)
    lb.finish(lease, Outcome.SUCCESS)
    lb.finish(lease, Outcome.CONNECTION_LOST)
    (status,) = lb.hosts()
    assert status.outcomes == {Outcome.SUCCESS: 1}
    assert status.in_flight == 0


def test_in_flight_lists_a_hosts_leases_oldest_first() -> None:
    clock = Clock()
    lb = serving([A, B], clock=clock)
    leases = []
    for _ in range(3):
        leases.append(lease_on(lb, A))
        clock.advance(1)
    lb.finish(leases[1], Outcome.SUCCESS)
    assert lb.in_flight(A) == [leases[0], leases[2]]
    assert lb.in_flight(B) == []


def test_the_core_measures_latency_from_the_lease_start() -> None:
    clock = Clock()
    lb = serving([A], clock=clock)
    lease = lease_on(lb, A)
    clock.advance(0.25)
    lb.finish(lease, Outcome.SUCCESS)
    (status,) = lb.hosts()
    assert status.ewma_latency == 0.25


def test_a_released_lease_counts_no_outcome_and_no_latency() -> None:
    lb = serving([A])
    lb.release(lease_on(lb, A))
    (status,) = lb.hosts()
    assert (status.outcomes, status.in_flight, status.ewma_latency) == ({}, 0, None)


def test_a_lease_from_before_a_host_was_removed_and_added_again_changes_nothing() -> None:
    lb = serving([A, B])
    old = lease_on(lb, A)
    lb.remove(A)
    lb.add(A)
    lb.record_probe(A, ok=True)
    lb.finish(old, Outcome.NOT_SENT)
    assert lb.hosts()[1].outcomes == {}
    assert lb.in_flight(A) == []


def test_a_session_lease_stays_in_flight_through_its_observed_outcomes() -> None:
    lb = serving([A])
    session = lb.acquire(0, session=True)
    assert isinstance(session, Lease)
    assert session.session
    lb.observe(session, Outcome.SERVER_ERROR)
    assert lb.in_flight(A) == [session]
    lb.finish(session, Outcome.SUCCESS)
    assert lb.in_flight(A) == []


def test_a_sessions_lifetime_is_not_a_latency_sample() -> None:
    clock = Clock()
    lb = serving([A], BalancerSettings(), clock)
    session = lb.acquire(0, session=True)
    assert isinstance(session, Lease)
    clock.advance(600)
    lb.finish(session, Outcome.SUCCESS)
    assert lb.hosts()[0].ewma_latency is None


def test_a_session_that_had_to_wait_gets_a_session_lease() -> None:
    lb = Balancer([A], clock=Clock())  # joining: the session waits for the first probe
    waiter = lb.acquire(0, session=True)
    assert isinstance(waiter, Waiter)
    lb.record_probe(A, ok=True)
    assert waiter.lease is not None
    assert waiter.lease.session


def test_a_wait_for_a_connection_before_sending_is_not_counted_as_the_hosts_latency() -> None:
    clock = Clock()
    lb = serving([A], clock=clock)
    lease = lease_on(lb, A)
    clock.advance(0.9)  # opening a connection to a cold host
    lb.sent(lease)
    clock.advance(0.01)
    lb.finish(lease, Outcome.SUCCESS)
    (status,) = lb.hosts()
    assert status.ewma_latency is not None
    assert status.ewma_latency < 0.05
