"""Writers and readers in the in-process client: the same routing as the sidecar's, over a
writer and two readers (real Gremlin Servers), with the bytecode walk deciding what may write."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence

import pytest
from gremlin_python.process.anonymous_traversal import traversal
from gremlin_python.process.graph_traversal import GraphTraversalSource

from gremlinlb import BufferSettings, BufferTimeoutError, RoundRobinClientRemoteConnection
from gremlinlb.core import ReadRouting
from gremlinlb.devservers import GremlinServerProcess
from tests.client_support import answered_by, fast_settings, serving
from tests.driver_support import count_on_each
from tests.roles_support import (
    UNTOUCHED,
    WRITER_TRACES,
    assert_reads_even,
    kill_readers,
    mutate_every_way,
    plant_doomed,
    role_endpoints,
    traces,
)

pytestmark = pytest.mark.integration

READS = 400


@pytest.fixture
def rr(servers: Sequence[GremlinServerProcess]) -> Iterator[RoundRobinClientRemoteConnection]:
    connection = RoundRobinClientRemoteConnection(
        role_endpoints(servers), settings=fast_settings(slow_start=0)
    )
    yield serving(connection)
    connection.close()


@pytest.fixture
def g(rr: RoundRobinClientRemoteConnection) -> GraphTraversalSource:
    return traversal().with_(rr)


def test_every_mutating_traversal_lands_on_the_writer(
    g: GraphTraversalSource, servers: Sequence[GremlinServerProcess]
) -> None:
    plant_doomed(servers)
    mutate_every_way(g)
    writer, *readers = servers
    assert traces(writer) == WRITER_TRACES
    assert [traces(r) for r in readers] == [UNTOUCHED, UNTOUCHED]


def test_a_transaction_lands_on_the_writer(
    g: GraphTraversalSource, servers: Sequence[GremlinServerProcess]
) -> None:
    tx = g.tx()
    gtx = tx.begin()
    gtx.add_v("in_tx").iterate()
    inside = answered_by(gtx)
    tx.commit()
    assert inside == servers[0].address
    assert count_on_each(servers, "in_tx") == {s.address: int(s is servers[0]) for s in servers}


def test_reads_spread_evenly_over_the_readers_and_never_reach_the_writer(
    g: GraphTraversalSource, servers: Sequence[GremlinServerProcess]
) -> None:
    names = Counter(answered_by(g) for _ in range(READS))
    assert_reads_even(names, servers[1:])


def test_reads_go_to_the_writer_while_no_reader_is_up(
    rr: RoundRobinClientRemoteConnection,
    g: GraphTraversalSource,
    servers: Sequence[GremlinServerProcess],
) -> None:
    kill_readers(rr.balancer, servers)
    assert {answered_by(g) for _ in range(20)} == {servers[0].address}


def test_readers_only_fails_reads_clearly_while_no_reader_is_up(
    servers: Sequence[GremlinServerProcess],
) -> None:
    settings = fast_settings(
        slow_start=0,
        read_routing=ReadRouting.READERS_ONLY,
        buffer=BufferSettings(max_wait=1.0),
    )
    rr = serving(RoundRobinClientRemoteConnection(role_endpoints(servers), settings=settings))
    try:
        g = traversal().with_(rr)
        kill_readers(rr.balancer, servers)
        with pytest.raises(BufferTimeoutError, match=r"no reader .*readers_only"):
            answered_by(g)
        g.add_v("still_written").iterate()
    finally:
        rr.close()
    assert count_on_each(servers[:1], "still_written") == {servers[0].address: 1}
