"""Round-robin order, and its fairness while hosts join, leave, fail and recover."""

from hypothesis import given, settings
from hypothesis import strategies as st

from gremlinlb.core import Balancer, BalancerSettings, Endpoint, HostState, Lease, Outcome, Policy
from tests.unit.core_support import attempt_on, serving

HOSTS = [f"h{i}:8182" for i in range(6)]
# The ring's own mechanics, without slow start (its gating has specs of its own).
RING = BalancerSettings(slow_start=0)


def ring(hosts: list[str]) -> Balancer:
    return serving(hosts, RING)


def pick(balancer: Balancer) -> Endpoint:
    lease = balancer.acquire(0)
    assert isinstance(lease, Lease)
    balancer.finish(lease, Outcome.SUCCESS)
    return lease.endpoint


def test_three_hosts_are_picked_in_exact_rotation() -> None:
    balancer = ring(HOSTS[:3])
    picked = [pick(balancer).host for _ in range(7)]
    assert picked == ["h0", "h1", "h2", "h0", "h1", "h2", "h0"]


def test_a_down_host_is_skipped_and_the_rotation_continues() -> None:
    balancer = ring(HOSTS[:3])
    assert pick(balancer).host == "h0"
    attempt_on(balancer, Endpoint("ws", "h1", 8182), Outcome.NOT_SENT)  # h1 down
    assert [pick(balancer).host for _ in range(4)] == ["h2", "h0", "h2", "h0"]


def test_a_host_added_at_runtime_gets_the_next_turn_after_the_current_ring() -> None:
    balancer = ring(HOSTS[:2])
    assert pick(balancer).host == "h0"
    balancer.add(HOSTS[2])
    balancer.record_probe(Endpoint("ws", "h2", 8182), ok=True)
    assert [pick(balancer).host for _ in range(4)] == ["h1", "h2", "h0", "h1"]


def test_removing_the_next_host_does_not_give_anyone_two_turns() -> None:
    balancer = ring(HOSTS[:3])
    assert pick(balancer).host == "h0"
    balancer.remove(HOSTS[1])
    assert [pick(balancer).host for _ in range(3)] == ["h2", "h0", "h2"]


operations = st.lists(
    st.one_of(
        st.tuples(st.just("pick"), st.just(0)),
        st.tuples(st.sampled_from(["add", "remove", "fail", "recover"]), st.integers(0, 5)),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_no_host_takes_two_turns_in_a_row_while_another_is_eligible(
    ops: list[tuple[str, int]],
) -> None:
    balancer = ring(HOSTS[:3])
    last: Endpoint | None = None
    for action, index in ops:
        endpoint = Endpoint("ws", f"h{index}", 8182)
        if action == "pick":
            healthy = [h.endpoint for h in balancer.hosts() if h.state is HostState.HEALTHY]
            if not healthy:
                continue
            chosen = pick(balancer)
            if chosen == last:
                assert healthy == [chosen], "picked twice in a row while another host was healthy"
            last = chosen
        elif action == "add":
            balancer.add(endpoint)
        elif endpoint in balancer.endpoints():
            if action == "remove":
                balancer.remove(endpoint)
            elif action == "fail" and balancer.state_of(endpoint) is HostState.HEALTHY:
                attempt_on(balancer, endpoint, Outcome.NOT_SENT)
                last = endpoint
            elif action == "recover":
                balancer.record_probe(endpoint, ok=True)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 6), st.integers(1, 60))
def test_with_a_stable_set_every_host_gets_an_equal_share(host_count: int, rounds: int) -> None:
    balancer = ring(HOSTS[:host_count])
    counts: dict[str, int] = {}
    for _ in range(host_count * rounds):
        host = pick(balancer).host
        counts[host] = counts.get(host, 0) + 1
    assert set(counts.values()) == {rounds}


def test_least_in_flight_prefers_the_idle_host() -> None:
    balancer = serving(HOSTS[:2], BalancerSettings(policy=Policy.LEAST_IN_FLIGHT))
    busy = balancer.acquire(0)  # now one host has a request in flight
    assert isinstance(busy, Lease)
    picks = {pick(balancer) for _ in range(20)}
    assert picks == {e for e in balancer.endpoints() if e != busy.endpoint}
