"""Zones: the client's zone first, and Envoy's spill-over rule to keep the load per host even."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from gremlinlb.core import Balancer, BalancerSettings, Lease, Outcome, plan_zones
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
