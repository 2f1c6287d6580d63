"""Passive and active health: what takes a host down, and what brings it back."""

import pytest

from gremlinlb.core import (
    AllHostsTriedError,
    AttemptLimit,
    Balancer,
    BalancerSettings,
    Endpoint,
    HealthCheckSettings,
    HostState,
    InvalidSettingError,
    Lease,
    Outcome,
    UnknownEndpointError,
    may_retry,
)
from tests.unit.core_support import attempt_on, lease_on, serving

A = Endpoint("ws", "a", 1)
B = Endpoint("ws", "b", 1)


def balancer(rise: int = 1, fall: int = 2) -> Balancer:
    return serving([A, B], BalancerSettings(health=HealthCheckSettings(rise=rise, fall=fall)))


def test_a_refused_connection_takes_the_host_down_at_once() -> None:
    lb = balancer()
    attempt_on(lb, A, Outcome.NOT_SENT)
    assert lb.state_of(A) is HostState.DOWN


@pytest.mark.parametrize("outcome", [Outcome.CONNECTION_LOST, Outcome.TIMEOUT])
def test_one_lost_connection_or_timeout_is_evidence_not_a_verdict(outcome: Outcome) -> None:
    lb = balancer()
    attempt_on(lb, A, outcome)
    assert lb.state_of(A) is HostState.HEALTHY


@pytest.mark.parametrize(
    "outcome", [Outcome.SERVER_ERROR, Outcome.OVERLOADED, Outcome.SUCCESS, Outcome.CLIENT_ERROR]
)
def test_an_answer_from_the_server_keeps_the_host_up(outcome: Outcome) -> None:
    lb = balancer()
    attempt_on(lb, A, outcome)
    assert lb.state_of(A) is HostState.HEALTHY


def test_down_host_needs_rise_passing_probes_to_come_back() -> None:
    lb = balancer(rise=2)
    attempt_on(lb, A, Outcome.NOT_SENT)
    lb.record_probe(A, ok=True)
    assert lb.state_of(A) is HostState.DOWN
    lb.record_probe(A, ok=True)
    assert lb.state_of(A) is HostState.HEALTHY


def test_a_failed_probe_resets_the_rise_count() -> None:
    lb = balancer(rise=2)
    attempt_on(lb, A, Outcome.NOT_SENT)
    lb.record_probe(A, ok=True)
    lb.record_probe(A, ok=False, error="refused")
    lb.record_probe(A, ok=True)
    assert lb.state_of(A) is HostState.DOWN


def test_healthy_host_goes_down_after_fall_failed_probes_not_before() -> None:
    lb = balancer(fall=2)
    lb.record_probe(A, ok=False, error="timeout")
    assert lb.state_of(A) is HostState.HEALTHY
    lb.record_probe(A, ok=False, error="timeout")
    assert lb.state_of(A) is HostState.DOWN


def test_probe_targets_are_down_hosts_and_healthy_ones_when_configured() -> None:
    lb = serving([A, B], BalancerSettings(health=HealthCheckSettings(probe_healthy=False)))
    attempt_on(lb, A, Outcome.NOT_SENT)
    assert lb.probe_targets() == [A]


def test_draining_host_takes_no_new_requests_and_leaves_when_idle() -> None:
    lb = balancer()
    on_a = lease_on(lb, A)
    lb.remove(A, drain=True)
    assert lb.state_of(A) is HostState.DRAINING
    on_b = lb.acquire(0)
    assert isinstance(on_b, Lease)
    assert on_b.endpoint == B
    lb.finish(on_b, Outcome.SUCCESS)
    lb.finish(on_a, Outcome.SUCCESS)
    assert lb.endpoints() == [B]


def test_removing_an_unknown_host_names_it_and_lists_the_known_ones() -> None:
    lb = balancer()
    with pytest.raises(UnknownEndpointError, match=r"cannot remove c:1.*a:1, b:1"):
        lb.remove("c:1")


def test_adding_a_present_host_changes_nothing() -> None:
    lb = balancer()
    assert not lb.add("a:1")
    assert lb.endpoints() == [A, B]


def test_retry_is_refused_once_every_healthy_host_failed_the_request() -> None:
    lb = balancer()
    with pytest.raises(AllHostsTriedError, match="already failed"):
        lb.acquire(0, exclude=[A, B])


def test_replace_adds_new_hosts_and_drains_missing_ones() -> None:
    lb = balancer()
    lease_on(lb, A)
    added, removed = lb.replace(["b:1", "c:1"])
    assert added == [Endpoint("ws", "c", 1)]
    assert removed == [A]
    assert lb.state_of(A) is HostState.DRAINING


@pytest.mark.parametrize(
    ("outcome", "read_only", "expected"),
    [
        (Outcome.NOT_SENT, False, True),
        (Outcome.OVERLOADED, False, True),
        (Outcome.CONNECTION_LOST, True, True),
        (Outcome.CONNECTION_LOST, False, False),
        (Outcome.TIMEOUT, True, False),
        (Outcome.TIMEOUT, False, False),
        (Outcome.SERVER_ERROR, True, False),
        (Outcome.CLIENT_ERROR, True, False),
        (Outcome.SUCCESS, True, False),
    ],
)
def test_retry_rule(outcome: Outcome, read_only: bool, expected: bool) -> None:
    assert may_retry(outcome, read_only) is expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"interval": 0}, r"interval must be >= 0\.1 sec"),
        ({"rise": 0}, "rise must be >= 1"),
        ({"fall": 0}, "fall must be >= 1"),
        ({"timeout": -1}, r"timeout must be >= 0\.05 sec"),
    ],
)
def test_nonsense_health_settings_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(InvalidSettingError, match=message):
        HealthCheckSettings(**kwargs)  # type: ignore[arg-type]


def test_releasing_an_unused_slot_counts_no_outcome_and_lets_a_draining_host_leave() -> None:
    lb = balancer()
    taken = lease_on(lb, A)
    lb.remove(A, drain=True)
    lb.release(taken)
    assert lb.endpoints() == [B]


def test_overload_answers_use_up_max_attempts() -> None:
    budget = AttemptLimit(max_attempts=3)
    assert budget.allows_another(Outcome.OVERLOADED, received=1)
    assert budget.allows_another(Outcome.OVERLOADED, received=2)
    assert not budget.allows_another(Outcome.OVERLOADED, received=3)


def test_connections_lost_after_sending_use_up_max_attempts() -> None:
    budget = AttemptLimit(max_attempts=3)
    assert budget.allows_another(Outcome.CONNECTION_LOST, received=2)
    assert not budget.allows_another(Outcome.CONNECTION_LOST, received=3)


def test_attempts_never_sent_do_not_use_up_max_attempts_but_are_bounded() -> None:
    budget = AttemptLimit(max_attempts=1)
    failed = 1  # the first attempt
    while budget.allows_another(Outcome.NOT_SENT, received=0):
        failed += 1
    assert failed == 1 + 2  # max_attempts + 2 tries in all, however many hosts there are


def test_a_read_is_hedged_or_re_dispatched_once_within_its_attempts() -> None:
    budget = AttemptLimit(max_attempts=3)
    assert budget.allows_resend(received=1)
    budget.resend()
    assert not budget.allows_resend(received=2)
    assert not AttemptLimit(max_attempts=2).allows_resend(received=2)


def test_replace_that_removes_every_other_host_keeps_the_rest_in_order() -> None:
    hosts = [f"h{i}:1" for i in range(2000)]
    lb = Balancer(hosts, BalancerSettings(health=HealthCheckSettings(enabled=False)))
    kept = hosts[::2]
    added, removed = lb.replace(kept)
    assert added == []
    assert [e.address for e in removed] == hosts[1::2]
    assert [e.address for e in lb.endpoints()] == kept
    picked = [lb.acquire(0) for _ in range(len(kept))]
    assert sorted(p.endpoint.address for p in picked if isinstance(p, Lease)) == sorted(kept)
