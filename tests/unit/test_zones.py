"""Zones: the client's zone first, and Envoy's spill-over rule to keep the load per host even."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from gremlinlb.core import Balancer, BalancerSettings, Lease, Outcome, plan_zones
from gremlinlb.core.topology import NO_PREFERENCE, client_zones
from tests.unit.core_support import Clock

NO_RAMP = BalancerSettings(slow_start=0)
TWO_BY_TWO = ["a1:8182?zone=a", "a2:8182?zone=a", "b1:8182?zone=b", "b2:8182?zone=b"]


def zoned(
    hosts: list[str], zone: str | None, settings: BalancerSettings = NO_RAMP, seed: int = 7
) -> Balancer:
    balancer = Balancer(hosts, settings, zone=zone, clock=Clock(), rng=random.Random(seed))
    for endpoint in balancer.endpoints():
        balancer.record_probe(endpoint, ok=True)
    return balancer


def picks(balancer: Balancer, count: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(count):
        lease = balancer.acquire(0)
        assert isinstance(lease, Lease)
        balancer.finish(lease, Outcome.SUCCESS)
        seen[lease.endpoint.host] += 1
    return seen


def take_down(balancer: Balancer, host: str) -> None:
    endpoint = next(e for e in balancer.endpoints() if e.host == host)
    balancer.record_probe(endpoint, ok=False)
    balancer.record_probe(endpoint, ok=False)


# -- the plan (pure) -----------------------------------------------------------------------


def test_a_healthy_local_zone_keeps_every_request() -> None:
    plan = plan_zones("a", [("a", True), ("a", True), ("b", True), ("b", True)])
    assert (plan.local, plan.spill) == (1.0, ())


def test_a_local_zone_with_fewer_healthy_hosts_than_its_share_spills_the_excess() -> None:
    # a has half of the hosts but a third of the healthy ones: it keeps (1/3)/(1/2) = 2/3.
    plan = plan_zones("a", [("a", True), ("a", False), ("b", True), ("b", True)])
    assert plan.local == pytest.approx(2 / 3)
    assert plan.spill == (("b", 1.0),)


def test_a_local_zone_with_no_healthy_host_sends_everything_elsewhere() -> None:
    plan = plan_zones("a", [("a", False), ("b", True), ("c", True)])
    assert plan.local == 0.0
    assert plan.spill == (("b", 0.5), ("c", 0.5))


def test_the_excess_goes_to_zones_by_their_surplus_of_healthy_hosts() -> None:
    # Listed: a 2, b 2, c 2; healthy: a 1, b 2, c 1. Only b has more than its share.
    hosts = [("a", True), ("a", False), ("b", True), ("b", True), ("c", True), ("c", False)]
    plan = plan_zones("a", hosts)
    assert plan.local == pytest.approx((1 / 4) / (2 / 6))
    assert plan.spill == (("b", 1.0),)


def test_a_client_in_a_zone_with_no_host_has_no_preference() -> None:
    plan = plan_zones("c", [("a", True), ("b", True)])
    assert (plan.local, plan.spill) == (0.0, ())


def test_with_no_healthy_host_there_is_no_preference() -> None:
    plan = plan_zones("a", [("a", False), ("b", False)])
    assert (plan.local, plan.spill) == (0.0, ())


def test_the_spill_over_keeps_the_load_per_host_even_across_zones() -> None:
    # Clients spread like the hosts: half in a, half in b; one host of a is down.
    hosts = [("a", True), ("a", False), ("b", True), ("b", True)]
    from_a, from_b = plan_zones("a", hosts), plan_zones("b", hosts)
    load_a1 = 0.5 * from_a.local + 0.5 * (1 - from_b.local) * dict(from_b.spill).get("a", 0)
    load_b = (0.5 * from_b.local + 0.5 * (1 - from_a.local) * dict(from_a.spill)["b"]) / 2
    assert load_a1 == pytest.approx(1 / 3)
    assert load_b == pytest.approx(1 / 3)


# -- the plan with the clients' distribution (Envoy's originating cluster) ----------------------

FOUR_BY_ZONE = [("a", True), ("a", True), ("b", True), ("b", True)]


def test_clients_spread_like_the_healthy_hosts_keep_every_request_local() -> None:
    plan = plan_zones("a", FOUR_BY_ZONE, clients={"a": 2, "b": 2})
    assert (plan.local, plan.spill) == (1.0, ())


def test_a_zone_with_fewer_clients_than_its_share_of_hosts_keeps_every_request() -> None:
    plan = plan_zones("b", [("a", True), ("b", True), ("b", True), ("b", True)], {"a": 3, "b": 1})
    assert (plan.local, plan.spill) == (1.0, ())


def test_an_overloaded_zone_keeps_its_fair_share_and_spills_the_rest() -> None:
    # 3 of 4 clients in a, 1 of 4 healthy hosts: a keeps (1/4)/(3/4) = 1/3 and spills 2/3.
    hosts = [("a", True), ("b", True), ("b", True), ("b", True)]
    plan = plan_zones("a", hosts, clients={"a": 3, "b": 1})
    assert plan.local == pytest.approx(1 / 3)
    assert plan.spill == (("b", 1.0),)


def test_the_overload_spill_keeps_the_load_per_host_even() -> None:
    hosts = [("a", True), ("b", True), ("b", True), ("b", True)]
    clients = {"a": 3, "b": 1}
    from_a, from_b = plan_zones("a", hosts, clients), plan_zones("b", hosts, clients)
    load_a = 0.75 * from_a.local
    load_b_each = (0.75 * (1 - from_a.local) + 0.25 * from_b.local) / 3
    assert load_a == pytest.approx(0.25)
    assert load_b_each == pytest.approx(0.25)


def test_the_spill_of_an_overloaded_zone_splits_over_other_zones_by_residual_capacity() -> None:
    # Healthy hosts a 1, b 2, c 1 (shares 1/4, 1/2, 1/4); clients a 4, b 4, c 2 (2/5, 2/5, 1/5).
    # a keeps (1/4)/(2/5) = 5/8; residual b 1/2 - 2/5 = 1/10, c 1/4 - 1/5 = 1/20: 2 to 1.
    hosts = [("a", True), ("b", True), ("b", True), ("c", True)]
    plan = plan_zones("a", hosts, clients={"a": 4, "b": 4, "c": 2})
    assert plan.local == pytest.approx(5 / 8)
    assert dict(plan.spill) == pytest.approx({"b": 2 / 3, "c": 1 / 3})


def test_a_zone_with_no_residual_capacity_takes_none_of_the_spill() -> None:
    # Clients a 2, b 1, c 1 over hosts a 1, b 1, c 2: b is exactly at its share, c has room.
    hosts = [("a", True), ("b", True), ("c", True), ("c", True)]
    plan = plan_zones("a", hosts, clients={"a": 2, "b": 1, "c": 1})
    assert plan.local == pytest.approx(1 / 2)
    assert plan.spill == (("c", 1.0),)


def test_clients_in_a_zone_without_hosts_send_their_requests_where_there_is_room() -> None:
    plan = plan_zones("c", FOUR_BY_ZONE, clients={"a": 1, "b": 1, "c": 2})
    assert plan.local == 0.0
    assert dict(plan.spill) == pytest.approx({"a": 0.5, "b": 0.5})


def test_a_distribution_without_the_clients_own_zone_is_ignored() -> None:
    hosts = [("a", True), ("a", False), ("b", True), ("b", True)]
    assert plan_zones("a", hosts, clients={"b": 5}) == plan_zones("a", hosts)


def test_health_still_counts_with_a_client_distribution() -> None:
    # Balanced clients, but one host of a is down: a keeps (1/3)/(1/2) = 2/3.
    hosts = [("a", True), ("a", False), ("b", True), ("b", True)]
    plan = plan_zones("a", hosts, clients={"a": 1, "b": 1})
    assert plan.local == pytest.approx(2 / 3)
    assert plan.spill == (("b", 1.0),)


def test_below_the_min_cluster_size_there_is_no_zone_preference() -> None:
    plan = plan_zones("a", FOUR_BY_ZONE, clients={"a": 3, "b": 1}, min_hosts=6)
    assert plan == NO_PREFERENCE
    assert plan_zones("a", FOUR_BY_ZONE, min_hosts=5) == NO_PREFERENCE


def test_the_min_cluster_size_counts_healthy_hosts_only() -> None:
    hosts = [("a", True), ("a", False), ("b", True), ("b", True)]
    assert plan_zones("a", hosts, min_hosts=4) == NO_PREFERENCE
    assert plan_zones("a", hosts, min_hosts=3).local == pytest.approx(2 / 3)


def test_a_client_distribution_drops_empty_zones_and_refuses_bad_counts() -> None:
    assert client_zones({"b": 1, "a": 2, "c": 0}) == {"a": 2, "b": 1}
    assert client_zones({"a": 0}) is None
    with pytest.raises(ValueError, match="zone 'a' must be an integer >= 0, got -1"):
        client_zones({"a": -1})
    with pytest.raises(ValueError, match="non-empty strings"):
        client_zones({" ": 1})


# -- the balancer --------------------------------------------------------------------------


def test_a_client_sends_everything_to_its_zone_while_it_is_healthy() -> None:
    seen = picks(zoned(TWO_BY_TWO, "a"), 200)
    assert seen == {"a1": 100, "a2": 100}


def test_a_client_spills_its_zones_excess_when_a_local_host_is_down() -> None:
    balancer = zoned(TWO_BY_TWO, "a")
    take_down(balancer, "a1")
    seen = picks(balancer, 3000)
    assert seen["a1"] == 0
    assert seen["a2"] / 3000 == pytest.approx(2 / 3, abs=0.03)
    assert seen["b1"] == pytest.approx(seen["b2"], abs=60)


def test_a_client_sends_everything_elsewhere_when_its_zone_is_down() -> None:
    balancer = zoned(TWO_BY_TWO, "a")
    take_down(balancer, "a1")
    take_down(balancer, "a2")
    assert set(picks(balancer, 50)) == {"b1", "b2"}


def test_zone_awareness_can_be_turned_off() -> None:
    balancer = zoned(TWO_BY_TWO, "a", BalancerSettings(slow_start=0, zone_aware=False))
    assert set(picks(balancer, 8)) == {"a1", "a2", "b1", "b2"}


def test_a_client_without_a_zone_uses_every_host() -> None:
    assert set(picks(zoned(TWO_BY_TWO, None), 8)) == {"a1", "a2", "b1", "b2"}


def test_a_zone_change_of_a_kept_host_applies_at_once() -> None:
    balancer = zoned(TWO_BY_TWO, "a")
    balancer.replace(["a1:8182?zone=a", "a2:8182?zone=b", "b1:8182?zone=b", "b2:8182?zone=a"])
    assert set(picks(balancer, 20)) == {"a1", "b2"}


def test_roles_come_before_zones() -> None:
    hosts = [
        "w:8182?role=writer&zone=b",
        "ra:8182?role=reader&zone=a",
        "rb:8182?role=reader&zone=b",
    ]
    balancer = zoned(hosts, "a")
    lease = balancer.acquire(0, write=True)
    assert isinstance(lease, Lease)
    assert lease.endpoint.host == "w"
    read = balancer.acquire(0, write=False)
    assert isinstance(read, Lease)
    assert read.endpoint.host == "ra"


def test_same_and_cross_zone_attempts_are_counted() -> None:
    balancer = zoned(TWO_BY_TWO, "a")
    take_down(balancer, "a1")
    take_down(balancer, "a2")
    picks(balancer, 3)
    stats = balancer.stats()
    assert (stats.same_zone, stats.cross_zone) == (0, 3)


ONE_IN_A = ["a1:8182?zone=a", "b1:8182?zone=b", "b2:8182?zone=b", "b3:8182?zone=b"]


def test_a_client_in_an_overloaded_zone_spills_by_the_client_distribution() -> None:
    balancer = zoned(ONE_IN_A, "a")
    assert set(picks(balancer, 30)) == {"a1"}
    balancer.set_client_zones({"a": 3, "b": 1})
    seen = picks(balancer, 3000)
    assert seen["a1"] / 3000 == pytest.approx(1 / 3, abs=0.03)
    assert balancer.zone_plans()["all"].local == pytest.approx(1 / 3)


def test_the_client_distribution_can_be_given_at_construction_and_cleared() -> None:
    balancer = Balancer(ONE_IN_A, NO_RAMP, zone="a", clients={"a": 3, "b": 1}, clock=Clock())
    for endpoint in balancer.endpoints():
        balancer.record_probe(endpoint, ok=True)
    assert balancer.client_zones == {"a": 3, "b": 1}
    assert balancer.zone_plans()["all"].local == pytest.approx(1 / 3)
    balancer.set_client_zones(None)
    assert balancer.zone_plans()["all"].local == 1.0


def test_the_min_cluster_size_setting_turns_the_zone_preference_off_for_small_fleets() -> None:
    balancer = zoned(TWO_BY_TWO, "a", BalancerSettings(slow_start=0, zone_min_cluster_size=5))
    assert set(picks(balancer, 8)) == {"a1", "a2", "b1", "b2"}


def test_zone_plans_are_given_per_kind_when_hosts_have_roles() -> None:
    hosts = [
        "w:8182?role=writer&zone=b",
        "ra:8182?role=reader&zone=a",
        "rb:8182?role=reader&zone=b",
    ]
    plans = zoned(hosts, "a").zone_plans()
    assert set(plans) == {"writers", "readers"}
    assert plans["readers"].local == 1.0
    assert plans["writers"].local == 0.0
