"""Roles: requests that may write, sessions and transactions go to writers; reads to readers."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from gremlinlb.core import (
    AllHostsTriedError,
    Balancer,
    BalancerSettings,
    BufferTimeoutError,
    Endpoint,
    EventKind,
    HostEvent,
    HostState,
    InvalidEndpointError,
    Lease,
    Outcome,
    ReadRouting,
    Role,
    Waiter,
    parse_endpoint,
)
from gremlinlb.core.health import HealthCounter
from gremlinlb.core.hedging import HedgeRule
from gremlinlb.core.hosts import Host
from gremlinlb.core.outliers import OutlierDetector
from gremlinlb.core.routing import Candidates, Router
from gremlinlb.core.slowstart import SlowStart
from tests.unit.core_support import Clock, serving

WRITER = "w:8182?role=writer"
READERS = ["r1:8182?role=reader", "r2:8182?role=reader"]
NO_RAMP = BalancerSettings(slow_start=0)


def fleet(settings: BalancerSettings = NO_RAMP, clock: Clock | None = None) -> Balancer:
    return serving([WRITER, *READERS], settings, clock)


def host_of(balancer: Balancer, *, write: bool, session: bool = False) -> str:
    lease = balancer.acquire(0, write=write, session=session)
    assert isinstance(lease, Lease)
    balancer.finish(lease, Outcome.SUCCESS)
    return lease.endpoint.host


def take_down(balancer: Balancer, *hosts: str) -> None:
    for endpoint in balancer.endpoints():
        if endpoint.host in hosts:
            balancer.record_probe(endpoint, ok=False)
            balancer.record_probe(endpoint, ok=False)
            assert balancer.state_of(endpoint) is HostState.DOWN


# -- the text form ------------------------------------------------------------------------


def test_role_and_zone_are_read_from_the_query() -> None:
    endpoint = parse_endpoint("ws://10.0.0.1:8182/gremlin?role=writer&zone=us-east-1a")
    assert (endpoint.role, endpoint.zone, endpoint.url) == (
        Role.WRITER,
        "us-east-1a",
        "ws://10.0.0.1:8182/gremlin",
    )


def test_host_port_takes_a_query_too() -> None:
    assert parse_endpoint("10.0.0.1:8182?role=reader").role is Role.READER


def test_a_host_without_a_role_serves_both() -> None:
    endpoint = parse_endpoint("10.0.0.1:8182")
    assert (endpoint.role, endpoint.zone) == (Role.ANY, None)


def test_the_text_form_reads_back_as_the_same_host_role_and_zone() -> None:
    endpoint = parse_endpoint("10.0.0.1:8182?zone=b&role=reader")
    again = parse_endpoint(endpoint.text)
    assert (again, again.role, again.zone) == (endpoint, Role.READER, "b")
    assert endpoint.text == "ws://10.0.0.1:8182/gremlin?role=reader&zone=b"


def test_the_signed_host_reads_back_from_the_text_form() -> None:
    endpoint = parse_endpoint("127.0.0.1:9001?role=writer&sigv4_host=db-1.example:8182")
    assert endpoint.sigv4_host == "db-1.example:8182"
    assert endpoint.text == "ws://127.0.0.1:9001/gremlin?role=writer&sigv4_host=db-1.example:8182"
    assert parse_endpoint(endpoint.text).sigv4_host == "db-1.example:8182"


def test_a_new_signed_host_is_a_change_of_topology_not_of_identity() -> None:
    before = parse_endpoint("h:8182?sigv4_host=a.example:8182")
    after = parse_endpoint("h:8182?sigv4_host=b.example:8182")
    assert before == after
    assert not before.same_topology(after)


def test_a_plain_host_has_its_url_as_text() -> None:
    assert parse_endpoint("10.0.0.1:8182").text == "ws://10.0.0.1:8182/gremlin"


def test_role_and_zone_are_not_part_of_the_identity() -> None:
    assert parse_endpoint("h:8182?role=writer&zone=a") == parse_endpoint("h:8182?role=reader")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("h:8182?weight=2", "query key 'weight'; the only keys are role"),
        ("h:8182?role=primary", "role 'primary'; use one of writer, reader, any"),
        ("h:8182?role=writer&role=reader", "gives role twice"),
        ("h:8182?zone=", "empty zone"),
        ("h:8182?role", "not key=value pairs"),
        ("h:8182/gremlin#top", "fragment"),
        ("h:8182?sigv4_host=db-1.example", "sigv4_host 'db-1.example'; give the host:port"),
        ("h:8182?sigv4_host=db-1.example:0", "sigv4_host 'db-1.example:0'"),
        ("h:8182?sigv4_host=ws://db-1.example:8182", "sigv4_host 'ws://db-1.example:8182'"),
        ("h:8182?sigv4_host=:8182", "sigv4_host ':8182'"),
    ],
)
def test_a_bad_query_is_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(InvalidEndpointError, match=reason):
        parse_endpoint(text)


# -- routing by kind ------------------------------------------------------------------------


def test_requests_that_may_write_go_to_the_writer_only() -> None:
    balancer = fleet()
    assert {host_of(balancer, write=True) for _ in range(20)} == {"w"}


def test_sessions_go_to_the_writer_even_when_marked_read() -> None:
    balancer = fleet()
    assert {host_of(balancer, write=False, session=True) for _ in range(10)} == {"w"}


def test_reads_go_to_the_readers_in_turn() -> None:
    balancer = fleet()
    picked = Counter(host_of(balancer, write=False) for _ in range(100))
    assert picked == {"r1": 50, "r2": 50}


def test_reads_fall_back_to_the_writer_while_no_reader_is_healthy() -> None:
    balancer = fleet()
    take_down(balancer, "r1", "r2")
    assert {host_of(balancer, write=False) for _ in range(10)} == {"w"}


def test_reads_return_to_the_readers_once_one_is_back() -> None:
    balancer = fleet()
    take_down(balancer, "r1", "r2")
    balancer.record_probe(parse_endpoint(READERS[0]), ok=True)
    assert {host_of(balancer, write=False) for _ in range(10)} == {"r1"}


def test_readers_only_makes_a_read_wait_rather_than_load_the_writer() -> None:
    balancer = fleet(BalancerSettings(slow_start=0, read_routing=ReadRouting.READERS_ONLY))
    take_down(balancer, "r1", "r2")
    assert isinstance(balancer.acquire(0, write=False), Waiter)


def test_readers_only_timeout_says_why_the_writer_was_not_used() -> None:
    clock = Clock()
    settings = BalancerSettings(slow_start=0, read_routing=ReadRouting.READERS_ONLY)
    balancer = fleet(settings, clock)
    take_down(balancer, "r1", "r2")
    waiter = balancer.acquire(0, write=False)
    assert isinstance(waiter, Waiter)
    clock.advance(settings.buffer.max_wait + 1)
    with pytest.raises(BufferTimeoutError, match=r"no reader .* readers_only"):
        balancer.time_out(waiter)


def test_read_routing_any_spreads_reads_over_every_host() -> None:
    balancer = fleet(BalancerSettings(slow_start=0, read_routing=ReadRouting.ANY))
    assert {host_of(balancer, write=False) for _ in range(30)} == {"w", "r1", "r2"}


def test_a_write_waits_while_the_writer_is_down_though_readers_are_healthy() -> None:
    balancer = fleet()
    take_down(balancer, "w")
    assert isinstance(balancer.acquire(0, write=True), Waiter)


def test_a_write_waiting_for_its_writer_times_out_naming_the_writers() -> None:
    clock = Clock()
    balancer = fleet(NO_RAMP, clock)
    take_down(balancer, "w")
    waiter = balancer.acquire(0)
    assert isinstance(waiter, Waiter)
    clock.advance(NO_RAMP.buffer.max_wait + 1)
    with pytest.raises(BufferTimeoutError, match="no writer"):
        balancer.time_out(waiter)


def test_a_waiting_write_goes_to_the_writer_when_it_is_back() -> None:
    balancer = fleet()
    take_down(balancer, "w")
    waiter = balancer.acquire(0, write=True)
    assert isinstance(waiter, Waiter)
    balancer.record_probe(parse_endpoint(WRITER), ok=True)
    assert waiter.lease is not None
    assert waiter.lease.endpoint.host == "w"


def test_a_waiting_write_does_not_hold_up_reads_behind_it() -> None:
    balancer = fleet(BalancerSettings(slow_start=0, read_routing=ReadRouting.READERS_ONLY))
    take_down(balancer, "w", "r1", "r2")
    write = balancer.acquire(0, write=True)
    read = balancer.acquire(0, write=False)
    assert isinstance(write, Waiter)
    assert isinstance(read, Waiter)
    balancer.record_probe(parse_endpoint(READERS[0]), ok=True)
    assert read.lease is not None
    assert read.lease.endpoint.host == "r1"
    assert write.lease is None
    assert balancer.buffered == 1


def test_a_retried_write_is_never_sent_to_a_reader() -> None:
    balancer = fleet()
    with pytest.raises(AllHostsTriedError):
        balancer.acquire(0, [parse_endpoint(WRITER)], write=True)


def test_a_retried_read_goes_to_the_other_reader() -> None:
    balancer = fleet()
    lease = balancer.acquire(0, [parse_endpoint(READERS[0])], write=False)
    assert isinstance(lease, Lease)
    assert lease.endpoint.host == "r2"


def test_a_hedge_of_a_read_goes_to_the_other_reader() -> None:
    balancer = fleet()
    lease = balancer.acquire(0, [parse_endpoint(READERS[1])], hedge=True, write=False)
    assert isinstance(lease, Lease)
    assert lease.endpoint.host == "r1"


def test_without_roles_every_host_takes_writes() -> None:
    balancer = serving(["a:8182", "b:8182"], NO_RAMP)
    assert {host_of(balancer, write=True) for _ in range(10)} == {"a", "b"}


def test_a_role_change_of_a_kept_host_applies_in_place() -> None:
    balancer = fleet()
    events: list[HostEvent] = []
    balancer.subscribe(events.append)
    balancer.replace(["w:8182?role=reader", "r1:8182?role=writer", READERS[1]])
    assert [e.kind for e in events if e.kind is not EventKind.STATE_CHANGED] == []
    assert all(h.state is HostState.HEALTHY for h in balancer.hosts())
    assert {host_of(balancer, write=True) for _ in range(10)} == {"r1"}
    assert {host_of(balancer, write=False) for _ in range(10)} == {"w", "r2"}


def test_attempts_are_counted_by_the_role_of_their_host() -> None:
    balancer = fleet()
    host_of(balancer, write=True)
    host_of(balancer, write=False)
    host_of(balancer, write=False)
    assert balancer.stats().attempts_by_role == {"writer": 1, "reader": 2}


def test_the_role_shows_in_the_host_status() -> None:
    balancer = fleet()
    roles = {h.endpoint.host: h.endpoint.role for h in balancer.hosts()}
    assert roles == {"w": Role.WRITER, "r1": Role.READER, "r2": Role.READER}


def test_an_endpoint_object_keeps_its_role() -> None:
    endpoint = Endpoint("ws", "w", 8182, role=Role.WRITER)
    assert endpoint.text == "ws://w:8182/gremlin?role=writer"


def test_reads_between_writes_still_alternate_over_the_readers() -> None:
    balancer = fleet()
    reads: Counter[str] = Counter()
    for _ in range(50):
        host_of(balancer, write=True)
        reads[host_of(balancer, write=False)] += 1
    assert reads == {"r1": 25, "r2": 25}


# -- the router on its own (core.routing): candidates are an explicit value ---------------


def _router(addresses: list[str], settings: BalancerSettings) -> tuple[Router, list[Host]]:
    ring = [
        Host(parse_endpoint(a), seq, HealthCounter(1, 1), HostState.HEALTHY)
        for seq, a in enumerate(addresses)
    ]
    router = Router(
        settings,
        ring,
        list(ring),
        zone=None,
        clients=None,
        rng=random.Random(0),
        slow_start=SlowStart(settings),
        outliers=OutlierDetector(settings),
        hedging=HedgeRule(settings),
    )
    for host in ring:
        router.count(host.endpoint, 1)
    return router, ring


@pytest.mark.parametrize(
    ("routing", "kind"),
    [
        (ReadRouting.READERS_ONLY, "readers"),
        (ReadRouting.PREFER_READERS, "readers"),
        (ReadRouting.ANY, "all"),
    ],
)
def test_the_router_picks_writes_among_writers_and_reads_by_read_routing(
    routing: ReadRouting, kind: str
) -> None:
    settings = BalancerSettings(slow_start=0, read_routing=routing)
    router, ring = _router([WRITER, *READERS], settings)
    assert router.kind_for(write=True) == "writers"
    assert router.kind_for(write=False) == kind
    writes = {router.pick(Candidates(write=True), 0.0) for _ in range(4)}
    assert writes == {ring[0]}
    reads = Counter(router.pick(Candidates(write=False), 0.0) for _ in range(6))
    if kind == "readers":
        assert set(reads) == set(ring[1:])


def test_the_router_skips_excluded_hosts_and_falls_back_to_writers_only_if_routing_allows() -> None:
    prefer = BalancerSettings(slow_start=0, read_routing=ReadRouting.PREFER_READERS)
    router, ring = _router([WRITER, *READERS], prefer)
    readers = {h.endpoint for h in ring[1:]}
    assert router.pick(Candidates(write=False, exclude=readers), 0.0) is ring[0]
    only = BalancerSettings(slow_start=0, read_routing=ReadRouting.READERS_ONLY)
    router, ring = _router([WRITER, *READERS], only)
    readers = {h.endpoint for h in ring[1:]}
    assert router.pick(Candidates(write=False, exclude=readers), 0.0) is None
