"""Writers and readers through the sidecar: a writer and two readers (real Gremlin Servers), and
gremlinpython in front. Every write, transaction and session lands on the writer; reads on the
readers, evenly, and on the writer while no reader is up (or fail clearly with readers_only).
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence

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
    BufferSettings,
    HealthCheckSettings,
    HostState,
    ReadRouting,
    parse_endpoint,
)
from gremlinlb.devservers import Fleet, GremlinServerProcess
from tests.client_support import answered_by
from tests.driver_support import SPREAD_SPECS_OUTLIERS, count_on_each
from tests.helpers import name_servers
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


def role_sidecar(
    servers: Sequence[GremlinServerProcess], read_routing: ReadRouting, max_wait: float = 30.0
) -> SidecarThread:
    settings = BalancerSettings(
        health=HealthCheckSettings(interval=0.5, timeout=2.0, rise=1, fall=1),
        request_timeout=10.0,
        connect_timeout=1.0,
        outlier=SPREAD_SPECS_OUTLIERS,
        buffer=BufferSettings(max_wait=max_wait),
        read_routing=read_routing,
    )
    endpoints = tuple(parse_endpoint(e) for e in role_endpoints(servers))
    return SidecarThread(SidecarConfig(endpoints=endpoints, settings=settings))


@pytest.fixture
def servers(fleet: Fleet) -> list[GremlinServerProcess]:
    name_servers(fleet)
    return list(fleet)


@pytest.fixture
def sidecar(servers: Sequence[GremlinServerProcess]) -> Iterator[SidecarThread]:
    with role_sidecar(servers, ReadRouting.PREFER_READERS) as running:
        yield running


@pytest.fixture
def g(sidecar: SidecarThread) -> Iterator[GraphTraversalSource]:
    connection = DriverRemoteConnection(sidecar.url, "g")
    yield traversal().with_(connection)
    connection.close()


def test_every_mutating_traversal_lands_on_the_writer(
    g: GraphTraversalSource, servers: Sequence[GremlinServerProcess]
) -> None:
    plant_doomed(servers)
    mutate_every_way(g)
    writer, *readers = servers
    assert traces(writer) == WRITER_TRACES
    assert [traces(r) for r in readers] == [UNTOUCHED, UNTOUCHED]


def test_a_transaction_lands_on_the_writer(
    sidecar: SidecarThread, servers: Sequence[GremlinServerProcess]
) -> None:
    connection = DriverRemoteConnection(sidecar.url, "g")
    try:
        tx = traversal().with_(connection).tx()
        gtx = tx.begin()
        gtx.add_v("in_tx").iterate()
        inside = answered_by(gtx)
        tx.commit()
    finally:
        connection.close()
    assert inside == servers[0].address
    assert count_on_each(servers, "in_tx") == {s.address: int(s is servers[0]) for s in servers}


def test_a_session_lands_on_the_writer(
    sidecar: SidecarThread, servers: Sequence[GremlinServerProcess]
) -> None:
    client = Client(sidecar.url, "g", session=str(uuid.uuid4()))
    try:
        names = [
            client.submit("g.V().hasLabel('server').values('name')").all().result()[0]
            for _ in range(5)
        ]
    finally:
        client.close()
    assert names == [servers[0].address] * 5


def test_reads_spread_evenly_over_the_readers_and_never_reach_the_writer(
    g: GraphTraversalSource, servers: Sequence[GremlinServerProcess]
) -> None:
    names = Counter(answered_by(g) for _ in range(READS))
    assert_reads_even(names, servers[1:])


def test_reads_go_to_the_writer_while_no_reader_is_up(
    sidecar: SidecarThread, g: GraphTraversalSource, servers: Sequence[GremlinServerProcess]
) -> None:
    kill_readers(sidecar.balancer, servers)
    assert {answered_by(g) for _ in range(20)} == {servers[0].address}


def test_readers_only_fails_reads_clearly_while_no_reader_is_up(
    servers: Sequence[GremlinServerProcess],
) -> None:
    with role_sidecar(servers, ReadRouting.READERS_ONLY, max_wait=1.0) as sidecar:
        connection = DriverRemoteConnection(sidecar.url, "g")
        try:
            g = traversal().with_(connection)
            kill_readers(sidecar.balancer, servers)
            with pytest.raises(GremlinServerError, match=r"no reader .*readers_only"):
                answered_by(g)
            g.add_v("still_written").iterate()  # writes go on
        finally:
            connection.close()
    assert count_on_each(servers[:1], "still_written") == {servers[0].address: 1}


def test_metrics_count_attempts_by_role(sidecar: SidecarThread, g: GraphTraversalSource) -> None:
    g.add_v("written").iterate()
    for _ in range(4):
        answered_by(g)
    with urllib.request.urlopen(f"{sidecar.admin_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = dict(
        re.findall(
            r'^gremlinlb_sidecar_backend_attempts_by_role_total\{role="(\w+)"\} (\S+)$',
            text,
            re.MULTILINE,
        )
    )
    assert {role: float(n) for role, n in found.items()} == {"writer": 1.0, "reader": 4.0}


def test_the_host_list_shows_each_hosts_role(
    sidecar: SidecarThread, servers: Sequence[GremlinServerProcess]
) -> None:
    with urllib.request.urlopen(f"{sidecar.admin_url}/v1/hosts", timeout=10) as response:
        body = response.read().decode()
    for server, role in zip(servers, ["writer", "reader", "reader"], strict=True):
        assert f"{server.address}/gremlin?role={role}" in body


def put_hosts(sidecar: SidecarThread, generation: int, hosts: list[str]) -> tuple[int, str]:
    body = json.dumps({"generation": generation, "hosts": hosts}).encode()
    request = urllib.request.Request(f"{sidecar.admin_url}/v1/hosts", body, method="PUT")
    request.add_header("Authorization", f"Bearer {sidecar.token}")  # the generated one
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_a_pushed_role_change_applies_in_place_and_reads_follow_it(
    sidecar: SidecarThread, g: GraphTraversalSource, servers: Sequence[GremlinServerProcess]
) -> None:
    swapped = [
        f"{servers[0].address}?role=reader",
        f"{servers[1].address}?role=writer",
        f"{servers[2].address}?role=reader",
    ]
    assert put_hosts(sidecar, 0, swapped)[0] == 409  # same generation, other roles: refused
    status, body = put_hosts(sidecar, 1, swapped)
    assert (status, json.loads(body)["added"], json.loads(body)["removed"]) == (200, [], [])
    assert all(h.state is HostState.HEALTHY for h in sidecar.balancer.hosts())
    assert {answered_by(g) for _ in range(10)} == {servers[0].address, servers[2].address}
