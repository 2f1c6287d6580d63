"""The wait buffer: its three bounds, FIFO release, and that nothing admitted is lost."""

import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gremlinlb.core import (
    Balancer,
    BalancerSettings,
    BufferFullError,
    BufferSettings,
    BufferTimeoutError,
    Endpoint,
    HostState,
    Outcome,
    Waiter,
)
from tests.unit.core_support import Clock, attempt_on, serving

A = Endpoint("ws", "a", 1)
B = Endpoint("ws", "b", 1)


def all_down(bounds: BufferSettings, clock: Clock | None = None) -> Balancer:
    balancer = serving([A, B], BalancerSettings(buffer=bounds), clock)
    for endpoint in (A, B):
        attempt_on(balancer, endpoint, Outcome.NOT_SENT)
    return balancer


def wait(balancer: Balancer, size: int = 10) -> Waiter:
    waiter = balancer.acquire(size)
    assert isinstance(waiter, Waiter)
    return waiter


def test_request_waits_when_no_host_is_healthy() -> None:
    balancer = all_down(BufferSettings())
    waiter = wait(balancer)
    assert not waiter.released
    assert balancer.buffered == 1


def test_count_bound_refuses_the_next_request_and_names_max_elements() -> None:
    balancer = all_down(BufferSettings(max_elements=2))
    wait(balancer)
    wait(balancer)
    with pytest.raises(BufferFullError, match="max_elements=2") as refused:
        balancer.acquire(10)
    assert refused.value.bound == "max_elements"
    assert balancer.buffered == 2


def test_byte_bound_refuses_the_request_that_would_overflow_and_names_max_bytes() -> None:
    balancer = all_down(BufferSettings(max_bytes=100))
    wait(balancer, size=60)
    with pytest.raises(BufferFullError, match="max_bytes=100") as refused:
        balancer.acquire(41)
    assert refused.value.bound == "max_bytes"
    wait(balancer, size=40)  # exactly at the bound still fits
    assert balancer.buffered_bytes == 100


def test_disabled_buffer_refuses_at_once() -> None:
    balancer = all_down(BufferSettings(max_wait=0))
    with pytest.raises(BufferFullError, match="disabled"):
        balancer.acquire(1)


def test_waiters_are_released_oldest_first_round_robin_when_a_host_recovers() -> None:
    balancer = all_down(BufferSettings())
    waiters = [wait(balancer) for _ in range(4)]
    released: list[int] = []
    for index, waiter in enumerate(waiters):
        waiter.notify = functools.partial(released.append, index)
    balancer.record_probe(A, ok=True)
    balancer.record_probe(B, ok=True)
    assert released == [0, 1, 2, 3]
    assert all(w.lease is not None and w.lease.endpoint == A for w in waiters)
    assert balancer.buffered == 0


def test_a_new_host_takes_buffered_requests_once_its_first_probe_passed() -> None:
    balancer = all_down(BufferSettings())
    waiters = [wait(balancer) for _ in range(4)]
    balancer.add("c:1")
    assert balancer.buffered == 4  # joining: not trusted before a probe
    balancer.record_probe(Endpoint("ws", "c", 1), ok=True)
    assert {w.lease.endpoint for w in waiters if w.lease} == {Endpoint("ws", "c", 1)}
    assert balancer.buffered == 0


def test_request_older_than_max_wait_fails_with_the_bound_named() -> None:
    clock = Clock()
    balancer = all_down(BufferSettings(max_wait=5), clock)
    stale = wait(balancer)
    clock.now += 6
    balancer.record_probe(A, ok=True)
    assert isinstance(stale.error, BufferTimeoutError)
    assert "max_wait=5" in str(stale.error)


def test_withdrawn_waiter_frees_its_place_and_bytes() -> None:
    balancer = all_down(BufferSettings(max_elements=1))
    waiter = wait(balancer, size=7)
    assert balancer.withdraw(waiter)
    assert (balancer.buffered, balancer.buffered_bytes) == (0, 0)
    wait(balancer)


def test_closing_fails_every_waiter() -> None:
    balancer = all_down(BufferSettings())
    waiters = [wait(balancer) for _ in range(3)]
    balancer.close()
    assert all(w.error is not None for w in waiters)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(st.integers(1, 300), st.just("recover"), st.just("fail")),
        max_size=60,
    ),
    st.integers(1, 8),
    st.integers(50, 1500),
)
def test_nothing_admitted_is_lost_or_reordered(
    ops: list[int | str], max_elements: int, max_bytes: int
) -> None:
    balancer = all_down(BufferSettings(max_elements=max_elements, max_bytes=max_bytes))
    host = A
    admitted: list[Waiter] = []
    release_order: list[int] = []
    for op in ops:
        if op == "recover":
            balancer.record_probe(host, ok=True)
        elif op == "fail":
            if balancer.state_of(host) is HostState.HEALTHY:
                attempt_on(balancer, host, Outcome.NOT_SENT)
        else:
            assert isinstance(op, int)
            depth, used = balancer.buffered, balancer.buffered_bytes
            try:
                acquired = balancer.acquire(op)
            except BufferFullError as refused:
                bound = refused.bound
                assert bound == "max_elements" if depth >= max_elements else used + op > max_bytes
                continue
            if isinstance(acquired, Waiter):
                acquired.notify = functools.partial(release_order.append, acquired.seq)
                admitted.append(acquired)
            else:
                balancer.finish(acquired, Outcome.SUCCESS)
        assert balancer.buffered <= max_elements
        assert balancer.buffered_bytes <= max_bytes
        for waiter in admitted:  # released requests run and finish (twice is a no-op)
            if waiter.lease is not None:
                balancer.finish(waiter.lease, Outcome.SUCCESS)
    balancer.record_probe(host, ok=True)
    assert release_order == [w.seq for w in admitted]
    assert all(w.lease is not None and w.lease.endpoint == host for w in admitted)


def test_timing_out_a_waiter_still_queued_fails_it_naming_max_wait() -> None:
    balancer = all_down(BufferSettings(max_wait=5))
    waiter = wait(balancer)
    with pytest.raises(BufferTimeoutError, match="max_wait=5"):
        balancer.time_out(waiter)
    assert balancer.buffered == 0


def test_timing_out_a_waiter_released_meanwhile_keeps_its_host() -> None:
    balancer = all_down(BufferSettings())
    waiter = wait(balancer)
    balancer.record_probe(A, ok=True)
    balancer.time_out(waiter)
    assert waiter.lease is not None
    assert waiter.lease.endpoint == A


def test_a_returning_host_gets_release_per_host_buffered_requests_then_one_per_finish() -> None:
    balancer = all_down(BufferSettings(release_per_host=2))
    waiters = [wait(balancer) for _ in range(5)]
    balancer.record_probe(A, ok=True)
    assert [w.released for w in waiters] == [True, True, False, False, False]
    assert waiters[0].lease is not None
    balancer.finish(waiters[0].lease, Outcome.SUCCESS)
    assert [w.released for w in waiters] == [True, True, True, False, False]


def test_buffered_requests_spread_over_every_host_that_returns() -> None:
    balancer = all_down(BufferSettings(release_per_host=2))
    waiters = [wait(balancer) for _ in range(4)]
    balancer.record_probe(A, ok=True)
    balancer.record_probe(B, ok=True)
    assert [w.lease.endpoint for w in waiters if w.lease] == [A, A, B, B]


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 4),
    st.lists(
        st.sampled_from(["request", "finish", "recover a", "recover b", "fail a", "fail b"]),
        max_size=80,
    ),
)
def test_release_in_bounded_batches_loses_and_reorders_nothing(
    per_host: int, ops: list[str]
) -> None:
    balancer = all_down(BufferSettings(release_per_host=per_host, max_elements=1000))
    hosts = {"a": A, "b": B}
    admitted: list[Waiter] = []
    release_order: list[int] = []
    finished: set[int] = set()

    def running() -> list[Waiter]:
        """Buffered requests released to a host and not finished yet, oldest first."""
        return [w for w in admitted if w.lease is not None and w.seq not in finished]

    def finish_oldest() -> None:
        waiter = running()[0]
        assert waiter.lease is not None
        balancer.finish(waiter.lease, Outcome.SUCCESS)
        finished.add(waiter.seq)

    for op in ops:
        if op == "request":
            acquired = balancer.acquire(1)
            if isinstance(acquired, Waiter):
                acquired.notify = functools.partial(release_order.append, acquired.seq)
                admitted.append(acquired)
            else:
                balancer.finish(acquired, Outcome.SUCCESS)
        elif op == "finish" and running():
            finish_oldest()
        elif op.startswith("recover"):
            balancer.record_probe(hosts[op[-1]], ok=True)
        elif op.startswith("fail") and balancer.state_of(hosts[op[-1]]) is HostState.HEALTHY:
            attempt_on(balancer, hosts[op[-1]], Outcome.NOT_SENT)
        for endpoint in (A, B):
            assert sum(1 for w in running() if w.lease and w.lease.endpoint == endpoint) <= per_host
    balancer.record_probe(A, ok=True)
    for _ in range(len(admitted)):  # each finish lets the next one go
        if running():
            finish_oldest()
    assert release_order == [w.seq for w in admitted]
    assert all(w.lease is not None for w in admitted)
