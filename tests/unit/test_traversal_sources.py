"""Per-traversal-source availability: a host missing a source is skipped for that source only."""

from __future__ import annotations

from collections import Counter

from gremlinlb.core import Balancer, Lease, parse_endpoint
from gremlinlb.core.sources import (
    FORGET_AFTER,
    MAX_LEARNED,
    TraversalSources,
    says_source_unknown,
)
from tests.unit.core_support import Clock, serving

A, B, C = (parse_endpoint(f"h{i}:8182") for i in range(3))


def picks(balancer: Balancer, source: str | None, count: int = 30) -> Counter[str]:
    hosts: Counter[str] = Counter()
    for _ in range(count):
        lease = balancer.acquire(0, source=source)
        assert isinstance(lease, Lease)
        hosts[lease.endpoint.address] += 1
        balancer.release(lease)
    return hosts


def test_gremlin_servers_unknown_source_answers_are_recognised() -> None:
    bytecode = "The traversal source [g2] for alias [g] is not configured on the server."
    script = (
        "Could not alias [g] to [g2] as [g2] not in the Graph or TraversalSource global bindings"
    )
    assert says_source_unknown(499, bytecode)
    assert says_source_unknown(499, script)
    assert not says_source_unknown(597, bytecode)  # an evaluation error is about the query
    assert not says_source_unknown(499, "A message with [bytecode] op code requires ...")


def test_a_host_missing_a_source_gets_no_request_for_it_and_all_others() -> None:
    balancer = serving([A, B, C])
    balancer.sources.configure("g", ["g2"])
    balancer.sources.record(B, "g2", served=False)
    assert set(picks(balancer, "g2")) == {A.address, C.address}
    assert picks(balancer, "g") == Counter({A.address: 10, B.address: 10, C.address: 10})
    assert picks(balancer, None) == Counter({A.address: 10, B.address: 10, C.address: 10})


def test_a_host_serving_the_source_again_is_picked_for_it_again() -> None:
    balancer = serving([A, B])
    balancer.sources.configure("g", ["g2"])
    balancer.sources.record(B, "g2", served=False)
    balancer.sources.record(B, "g2", served=True)
    assert set(picks(balancer, "g2")) == {A.address, B.address}


def test_a_source_no_healthy_host_serves_goes_to_hosts_as_usual_for_the_servers_error() -> None:
    balancer = serving([A, B])
    balancer.sources.seen("typo")
    balancer.sources.record(A, "typo", served=False)
    balancer.sources.record(B, "typo", served=False)
    assert set(picks(balancer, "typo")) == {A.address, B.address}


def test_the_only_host_serving_a_source_being_down_does_not_skip_the_others() -> None:
    balancer = serving([A, B])
    balancer.sources.configure("g", ["g2"])
    balancer.sources.record(B, "g2", served=False)
    balancer.record_probe(A, ok=False, error="down")
    balancer.record_probe(A, ok=False, error="down")
    assert set(picks(balancer, "g2")) == {B.address}


def test_learned_sources_are_bounded_and_the_least_recently_used_makes_room() -> None:
    clock = Clock()
    sources = TraversalSources(clock=clock)
    for i in range(MAX_LEARNED + 3):
        clock.advance(1)
        sources.seen(f"s{i}")
    watched = sources.watched()
    assert len(watched) == MAX_LEARNED
    assert watched[-1] == f"s{MAX_LEARNED + 2}"
    assert "s0" not in watched


def test_a_learned_source_unused_for_a_while_is_forgotten_with_its_marks() -> None:
    clock = Clock()
    sources = TraversalSources(clock=clock)
    sources.seen("g2")
    sources.record(A, "g2", served=False)
    clock.advance(FORGET_AFTER + 1)
    assert sources.watched() == []
    assert sources.missing_on("g2") == frozenset()


def test_configured_sources_are_never_forgotten() -> None:
    clock = Clock()
    sources = TraversalSources("g", ["g2", "g3"], clock=clock)
    clock.advance(FORGET_AFTER * 10)
    assert sources.watched() == ["g2", "g3"]


def test_an_unwatched_source_is_never_marked() -> None:
    sources = TraversalSources()
    sources.record(A, "never-seen", served=False)
    assert sources.missing_on("never-seen") == frozenset()


def test_a_removed_host_takes_its_marks_with_it() -> None:
    balancer = serving([A, B])
    balancer.sources.configure("g", ["g2"])
    balancer.sources.record(B, "g2", served=False)
    balancer.remove(B)
    assert balancer.sources.missing_on("g2") == frozenset()


def test_a_snapshot_says_what_is_watched_and_where_each_source_is_missing() -> None:
    sources = TraversalSources("g", ["g2"])
    sources.seen("tenant_a")
    sources.record(B, "g2", served=False)
    assert sources.snapshot() == {
        "default": "g",
        "configured": ["g2"],
        "learned": ["tenant_a"],
        "missing": {"g2": [B.address]},
    }


def test_a_request_refused_for_its_source_may_go_to_a_healthy_host_not_known_to_lack_it() -> None:
    balancer = serving([A, B, C])
    balancer.sources.seen("g2")
    balancer.sources.record(A, "g2", served=False)
    assert balancer.serves_elsewhere("g2", [A])
    balancer.sources.record(B, "g2", served=False)
    assert balancer.serves_elsewhere("g2", [A])  # C may have it
    assert not balancer.serves_elsewhere("g2", [A, C])  # tried there already
    balancer.sources.record(C, "g2", served=False)
    assert not balancer.serves_elsewhere("g2", [A])  # nobody has it: the server's error it is
