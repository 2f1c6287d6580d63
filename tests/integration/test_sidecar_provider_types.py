"""Provider types through the real sidecar: a read carrying JanusGraph's predicates is classed a
read, so it is routed (and would be retried and hedged) as one.

Real TinkerGraph Gremlin Servers, one writer and two readers, and gremlinpython with writers
for JanusGraph's GraphBinary types (tests/unit/test_provider_types.py). TinkerGraph cannot
deserialize JanusGraph's custom types and never answers such a request, so each request here
ends in the sidecar's request timeout; where the sidecar sent it is what tells its class (a
read goes to a reader, anything that may write to the writer). That a read with a JanusGraph
predicate is retried when its server is killed needs JanusGraph servers, not these.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.driver.protocol import GremlinServerError
from gremlin_python.process.anonymous_traversal import traversal
from gremlin_python.process.graph_traversal import GraphTraversal, GraphTraversalSource
from gremlinlb.sidecar.config import SidecarConfig
from gremlinlb.sidecar.testing import SidecarThread

from gremlinlb.core import (
    BalancerSettings,
    HealthCheckSettings,
    OutlierSettings,
    ReadRouting,
    parse_endpoint,
)
from gremlinlb.devservers import GremlinServerProcess
from tests.roles_support import role_endpoints
from tests.unit.test_provider_types import (
    EDGE,
    PARIS,
    geo_within,
    janusgraph_graphbinary,
    text_contains,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def sidecar(servers: Sequence[GremlinServerProcess]) -> Iterator[SidecarThread]:
    settings = BalancerSettings(
        health=HealthCheckSettings(interval=0.5, timeout=2.0, rise=1, fall=1),
        request_timeout=1.0,
        connect_timeout=1.0,
        outlier=OutlierSettings(consecutive_failures=100),  # the timeouts here eject no host
        read_routing=ReadRouting.PREFER_READERS,
    )
    endpoints = tuple(parse_endpoint(e) for e in role_endpoints(servers))
    with SidecarThread(SidecarConfig(endpoints=endpoints, settings=settings)) as running:
        yield running


@pytest.fixture
def g(sidecar: SidecarThread) -> Iterator[GraphTraversalSource]:
    connection = DriverRemoteConnection(
        sidecar.url, "g", message_serializer=janusgraph_graphbinary()
    )
    yield traversal().with_(connection)
    connection.close()


def sent_to(sidecar: SidecarThread, traversal: GraphTraversal) -> list[str]:
    """Send `traversal` (TinkerGraph leaves it unanswered); the hosts it was sent to."""
    before = {h.endpoint.address: sum(h.outcomes.values()) for h in sidecar.balancer.hosts()}
    with pytest.raises(GremlinServerError, match="598"):
        traversal.to_list()
    return [
        h.endpoint.address
        for h in sidecar.balancer.hosts()
        if sum(h.outcomes.values()) > before[h.endpoint.address]
    ]


def test_a_read_with_janusgraph_predicates_and_ids_is_routed_as_a_read(
    sidecar: SidecarThread, g: GraphTraversalSource, servers: Sequence[GremlinServerProcess]
) -> None:
    read = g.E(EDGE).out_v().has("bio", text_contains("graph")).has("place", geo_within(PARIS))
    hosts = sent_to(sidecar, read)
    assert len(hosts) == 1
    assert hosts[0] in {s.address for s in servers[1:]}  # a reader


def test_the_same_traversal_with_a_mutating_step_goes_to_the_writer(
    sidecar: SidecarThread, g: GraphTraversalSource, servers: Sequence[GremlinServerProcess]
) -> None:
    write = g.E(EDGE).out_v().has("bio", text_contains("graph")).property("seen", True)
    assert sent_to(sidecar, write) == [servers[0].address]
