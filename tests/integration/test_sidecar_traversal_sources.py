"""Per-traversal-source health through the sidecar: a server without a traversal source is
routed around for that source only.

Real Gremlin Servers: one binds `g` and `g2`, the other only `g` (it answers requests for `g2`
with Gremlin Server's own 499 "not configured"); real gremlinpython through the real sidecar.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from gremlin_python.driver.client import Client
from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.driver.protocol import GremlinServerError
from gremlin_python.process.anonymous_traversal import traversal
from gremlin_python.process.graph_traversal import GraphTraversalSource
from gremlinlb.sidecar.config import SidecarConfig
from gremlinlb.sidecar.testing import SidecarThread

from gremlinlb.core import (
    BalancerSettings,
    HealthCheckSettings,
    HostState,
    parse_endpoint,
)
from gremlinlb.devservers import GremlinServerProcess
from tests.client_support import answered_by
from tests.helpers import name_servers, wait_until

pytestmark = pytest.mark.integration

HEALTH = HealthCheckSettings(interval=0.5, timeout=2.0, rise=1, fall=1)


@pytest.fixture
def with_g2(gremlin_server_factory: Callable[..., GremlinServerProcess]) -> GremlinServerProcess:
    server = gremlin_server_factory(extra_sources=("g2",))
    name_servers([server])
    g2 = DriverRemoteConnection(server.url, "g2")
    try:
        traversal().with_(g2).add_v("in_g2").iterate()
    finally:
        g2.close()
    return server


@pytest.fixture
def only_g(gremlin_server_factory: Callable[..., GremlinServerProcess]) -> GremlinServerProcess:
    server = gremlin_server_factory()
    name_servers([server])
    return server


def sidecar_for(*servers: GremlinServerProcess, sources: tuple[str, ...] = ()) -> SidecarThread:
    config = SidecarConfig(
        endpoints=tuple(parse_endpoint(s.address) for s in servers),
        settings=BalancerSettings(health=HEALTH),
        traversal_sources=sources,
    )
    return SidecarThread(config)


@pytest.fixture
def remotes() -> Iterator[Callable[[str, str], GraphTraversalSource]]:
    opened: list[DriverRemoteConnection] = []

    def remote(url: str, source: str) -> GraphTraversalSource:
        connection = DriverRemoteConnection(url, source)
        opened.append(connection)
        return traversal().with_(connection)

    yield remote
    for connection in opened:
        connection.close()


def states(sidecar: SidecarThread) -> set[HostState]:
    return {h.state for h in sidecar.balancer.hosts()}


def test_a_configured_source_goes_only_to_hosts_that_serve_it_and_g_to_every_host(
    with_g2: GremlinServerProcess,
    only_g: GremlinServerProcess,
    remotes: Callable[[str, str], GraphTraversalSource],
) -> None:
    with sidecar_for(with_g2, only_g, sources=("g2",)) as sidecar:
        missing = sidecar.balancer.sources.missing_on("g2")
        assert missing == {parse_endpoint(only_g.address)}  # known before any request
        g2 = remotes(sidecar.url, "g2")
        g = remotes(sidecar.url, "g")
        answers = [g2.V().has_label("in_g2").count().next() for _ in range(20)]
        served_g = Counter(answered_by(g) for _ in range(20))
        assert answers == [1] * 20  # every g2 request answered, by the server that has it
        assert served_g == Counter({with_g2.address: 10, only_g.address: 10})
        assert states(sidecar) == {HostState.HEALTHY}
        with urllib.request.urlopen(f"{sidecar.admin_url}/v1/hosts", timeout=5) as answer:
            shown = json.load(answer)["traversal_sources"]
        assert shown["missing"] == {"g2": [only_g.address]}


def test_a_source_learned_from_requests_is_answered_from_the_first_request_on(
    with_g2: GremlinServerProcess,
    only_g: GremlinServerProcess,
    remotes: Callable[[str, str], GraphTraversalSource],
) -> None:
    with sidecar_for(with_g2, only_g) as sidecar:
        g2 = remotes(sidecar.url, "g2")
        # nothing configured: a request that meets the server without g2 is refused there
        # before it runs, and is sent to the other server
        answers = [g2.V().has_label("in_g2").count().next() for _ in range(20)]
        assert answers == [1] * 20
        assert sidecar.balancer.sources.missing_on("g2") == {parse_endpoint(only_g.address)}
        assert states(sidecar) == {HostState.HEALTHY}


def test_a_write_refused_for_a_missing_source_runs_once_on_a_host_that_has_it(
    with_g2: GremlinServerProcess,
    only_g: GremlinServerProcess,
    remotes: Callable[[str, str], GraphTraversalSource],
) -> None:
    with sidecar_for(with_g2, only_g) as sidecar:
        g2 = remotes(sidecar.url, "g2")
        for i in range(6):
            g2.add_v("written").property("i", i).iterate()
        direct = remotes(with_g2.url, "g2")
        assert sorted(direct.V().has_label("written").values("i").to_list()) == list(range(6))
        assert states(sidecar) == {HostState.HEALTHY}


def test_a_source_no_host_serves_gets_the_servers_error_and_takes_no_host_out(
    with_g2: GremlinServerProcess,
    only_g: GremlinServerProcess,
    remotes: Callable[[str, str], GraphTraversalSource],
) -> None:
    with sidecar_for(with_g2, only_g) as sidecar:
        typo = remotes(sidecar.url, "g_typo")
        for _ in range(6):
            with pytest.raises(GremlinServerError, match=r"499.*\[g_typo\].*not configured"):
                typo.V().count().next()
        wait_until(
            lambda: len(sidecar.balancer.sources.missing_on("g_typo")) == 2,
            10,
            "the typo to be probed on every host",
        )
        with pytest.raises(GremlinServerError, match=r"499.*\[g_typo\].*not configured"):
            typo.V().count().next()
        g = remotes(sidecar.url, "g")
        assert Counter(answered_by(g) for _ in range(10)) == Counter(
            {with_g2.address: 5, only_g.address: 5}
        )
        assert states(sidecar) == {HostState.HEALTHY}


def test_sessions_naming_a_source_are_pinned_to_a_host_that_serves_it(
    with_g2: GremlinServerProcess, only_g: GremlinServerProcess
) -> None:
    with sidecar_for(with_g2, only_g, sources=("g2",)) as sidecar:
        counts = []
        for _ in range(6):  # round-robin alone would pin every other session to only_g
            session = Client(sidecar.url, "g2", session=str(uuid.uuid4()))
            try:
                counts.append(session.submit("g.V().hasLabel('in_g2').count()").all().result())
            finally:
                session.close()
        assert counts == [[1]] * 6
