"""gremlinlb in front of real JanusGraph 1.1.0 servers (TinkerPop 3.7.3), as a JanusGraph user
meets it: the README's quick starts (in-process client, sidecar) with the JanusGraph IO registry
on GraphBinary and GraphSON 3, read with plain gremlinpython and with the JanusGraph-Python
serializers (janusgraphpython).

JanusGraph differs from the TinkerGraph dev servers exactly where a balancer can trip: answers
carry custom types (``RelationIdentifier`` edge and property ids, ``Geoshape``), requests carry
JanusGraph's text and geo predicates (custom types too), and the server speaks TinkerPop 3.7.

One fleet of 3 servers serves the whole module (JVMs are the cost); each is in-memory with the
same load (custom string vertex ids, so the same ids everywhere) and a Lucene mixed index
``search`` over ``name``, ``description`` (text) and ``location`` (geo). A spec that kills a
server leaves the fleet to ``janus``, which restarts and reloads it before the next spec.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from gremlin_python.driver.client import Client
from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.driver.protocol import GremlinServerError
from gremlin_python.driver.serializer import GraphBinarySerializersV1, GraphSONSerializersV3d0
from gremlin_python.process.anonymous_traversal import traversal
from gremlin_python.process.graph_traversal import GraphTraversalSource
from gremlin_python.process.traversal import P, T
from gremlin_python.structure.io.graphsonV3d0 import GraphSONUtil, _GraphSONTypeIO
from gremlinlb.sidecar.config import SidecarConfig
from gremlinlb.sidecar.testing import SidecarThread
from janusgraph_python.driver.serializer import (
    JanusGraphBinarySerializersV1,
    JanusGraphSONSerializersV3d0,
)
from janusgraph_python.process.traversal import RelationIdentifier, Text, _JanusGraphP

from gremlinlb import BalancerSettings, HealthCheckSettings, RoundRobinClientRemoteConnection
from gremlinlb.core import parse_endpoint
from gremlinlb.devservers.fetch import ServerRuntime
from gremlinlb.devservers.janusgraph import JanusGraphServerProcess, fetch_janusgraph
from tests.fleet_fixtures import FLEET_BASE_PORT, free_port_block
from tests.helpers import wait_until

pytestmark = pytest.mark.integration

SIZE = 3
START_TIMEOUT = 120.0

# -- serializers -------------------------------------------------------------------------------


class Circle:
    """A JanusGraph ``Geoshape`` circle (degrees, km) for a ``geoWithin`` predicate.

    janusgraphpython 1.1.1 can write text predicates but no ``Geoshape``; JanusGraph's GraphSON
    reader takes GeoJSON, so a client can still send a geo predicate as bytecode. Written here
    rather than sent as a script: a script is never retried by the sidecar, and the in-process
    client sends only bytecode.
    """

    def __init__(self, latitude: float, longitude: float, radius_km: float) -> None:
        self.latitude, self.longitude, self.radius_km = latitude, longitude, radius_km


class _CircleIO(_GraphSONTypeIO):  # type: ignore[misc]
    @classmethod
    def dictify(cls, circle: Circle, writer: Any) -> Any:
        geometry = {
            "type": "Circle",
            "coordinates": [circle.longitude, circle.latitude],
            "radius": circle.radius_km,
            "properties": {"radius_units": "km"},
        }
        return GraphSONUtil.typed_value("Geoshape", {"geometry": geometry}, "janusgraph")


def janusgraph_graphson() -> Any:
    """janusgraphpython's GraphSON 3 serializer, taught to write a geo ``Circle``."""
    serializer = JanusGraphSONSerializersV3d0()
    for processor in (serializer.standard, serializer.traversal, serializer.session):
        processor._writer.serializers[Circle] = _CircleIO
    return serializer


#: Every way a Python user reads JanusGraph: plain gremlinpython and janusgraphpython, each on
#: GraphBinary and GraphSON 3 (the two serializers the servers register JanusGraph's types on).
SERIALIZERS: dict[str, Callable[[], Any]] = {
    "graphbinary": GraphBinarySerializersV1,
    "graphson3": GraphSONSerializersV3d0,
    "janusgraph-graphbinary": JanusGraphBinarySerializersV1,
    "janusgraph-graphson3": janusgraph_graphson,
}
GRAPHBINARY = ("graphbinary", "janusgraph-graphbinary")
GRAPHSON = ("graphson3", "janusgraph-graphson3")


def within(km: float) -> Any:
    """JanusGraph's ``geoWithin`` a circle of ``km`` around Athens."""
    return _JanusGraphP("geoWithin", Circle(37.97, 23.72, km))


@dataclass(frozen=True)
class Query:
    """A read, and the serializers that can carry it both ways.

    What limits them is the client library, never the balancer: plain gremlinpython cannot read
    JanusGraph's GraphBinary types (``ValueError: 0 is not a valid DataType``), janusgraphpython
    reads ``RelationIdentifier`` but not ``Geoshape`` on GraphBinary, plain GraphSON 3 cannot
    write a JanusGraph predicate, and only the GraphSON 3 writer here writes a ``Circle``.
    """

    run: Callable[[GraphTraversalSource], Any]
    serializers: tuple[str, ...] = tuple(SERIALIZERS)


QUERIES: dict[str, Query] = {
    "count": Query(lambda g: g.V().count().next()),
    "names": Query(lambda g: g.V().has_label("place").values("name").order().to_list()),
    "range": Query(
        lambda g: g.V().has("population", P.gt(100_000)).values("name").order().to_list()
    ),
    "roads": Query(lambda g: g.V("athens").out("road").values("name").order().to_list()),
    "labels": Query(lambda g: g.V().group_count().by(T.label).next()),
    "text_contains": Query(
        lambda g: g.V().has("description", Text.text_contains("city")).values("name").to_list(),
        (*GRAPHBINARY, "janusgraph-graphson3"),
    ),
    "text_prefix": Query(
        lambda g: (
            g.V().has("description", Text.text_contains_prefix("isth")).values("name").to_list()
        ),
        (*GRAPHBINARY, "janusgraph-graphson3"),
    ),
    "geo_within": Query(
        lambda g: sorted(g.V().has("location", within(100)).values("name").to_list()),
        ("janusgraph-graphson3",),
    ),
    "edges": Query(
        lambda g: [e.id for e in g.E().has_label("road").to_list()],
        ("janusgraph-graphbinary", "janusgraph-graphson3"),
    ),
    "locations": Query(lambda g: g.V("athens").values("location").to_list(), GRAPHSON),
    "element_maps": Query(
        lambda g: g.V().has_label("place").element_map().to_list(),
        GRAPHSON,
    ),
}
CASES = [
    pytest.param(name, serializer, id=f"{name}-{serializer}")
    for name, query in QUERIES.items()
    for serializer in query.serializers
]

# -- the fleet ---------------------------------------------------------------------------------

#: The same load on every server (a script: it writes Geoshape values, which no Python
#: serializer here can write as a property value). @ADDRESS@ names the server.
LOAD = """
g.addV('place').property(T.id, 'athens').property('name', 'athens')
 .property('description', 'ancient city of the olympic games')
 .property('location', Geoshape.point(37.97, 23.72)).property('population', 664046).iterate()
g.addV('place').property(T.id, 'corinth').property('name', 'corinth')
 .property('description', 'city on the isthmus canal')
 .property('location', Geoshape.point(37.94, 22.93)).property('population', 58192).iterate()
g.addV('place').property(T.id, 'delphi').property('name', 'delphi')
 .property('description', 'sanctuary of the oracle on a mountain')
 .property('location', Geoshape.point(38.48, 22.50)).property('population', 2500).iterate()
g.addV('place').property(T.id, 'thessaloniki').property('name', 'thessaloniki')
 .property('description', 'port city of the north')
 .property('location', Geoshape.point(40.64, 22.94)).property('population', 325182).iterate()
g.V('athens').addE('road').to(__.V('corinth')).property('km', 84).iterate()
g.V('corinth').addE('road').to(__.V('delphi')).property('km', 180).iterate()
g.V('athens').addE('road').to(__.V('thessaloniki')).property('km', 502).iterate()
g.addV('server').property(T.id, 'server').property('name', '@ADDRESS@').iterate()
'loaded'
"""


def load(server: JanusGraphServerProcess) -> None:
    """The module's graph, written directly to one server."""
    client = Client(server.url, "g")
    try:
        assert client.submit(LOAD.replace("@ADDRESS@", server.address)).all().result() == ["loaded"]
    finally:
        client.close()


@pytest.fixture(scope="module")
def janusgraph_runtime() -> ServerRuntime:
    """JanusGraph's jars (`make janusgraph` fetched them; a fetch here is a no-op then)."""
    return fetch_janusgraph()


@pytest.fixture(scope="module")
def janusgraph_fleet(
    tmp_path_factory: pytest.TempPathFactory, janusgraph_runtime: ServerRuntime
) -> Iterator[list[JanusGraphServerProcess]]:
    """3 JanusGraph servers for the module, started in parallel and loaded alike."""
    base = free_port_block(FLEET_BASE_PORT + 400, SIZE)
    run_dir = tmp_path_factory.mktemp("janusgraph-fleet")
    servers = [
        JanusGraphServerProcess(port, run_dir / str(port), runtime=janusgraph_runtime)
        for port in range(base, base + SIZE)
    ]
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready(START_TIMEOUT)
            load(server)
        yield servers
    finally:
        for server in servers:  # killed: an in-memory graph has nothing to save
            server.kill()


@pytest.fixture
def janus(janusgraph_fleet: list[JanusGraphServerProcess]) -> list[JanusGraphServerProcess]:
    """The module's fleet, whole at the start of every spec: a server a spec killed is
    restarted and loaded again; what a transaction spec wrote is dropped."""
    dead = [s for s in janusgraph_fleet if not s.is_running()]
    for server in dead:
        server.start()
    for server in dead:
        server.wait_ready(START_TIMEOUT)
        load(server)
    for server in janusgraph_fleet:
        drop_notes(server)
    return janusgraph_fleet


def direct(server: JanusGraphServerProcess, serializer: str = "janusgraph-graphson3") -> Any:
    return DriverRemoteConnection(server.url, "g", message_serializer=SERIALIZERS[serializer]())


def on_server(server: JanusGraphServerProcess, query: Callable[[GraphTraversalSource], Any]) -> Any:
    connection = direct(server)
    try:
        return query(traversal().with_(connection))
    finally:
        connection.close()


def drop_notes(server: JanusGraphServerProcess) -> None:
    """``.none().to_list()`` rather than ``iterate()``: see the discard() specs below."""
    on_server(server, lambda g: g.V().has_label("note").drop().none().to_list())


def notes(server: JanusGraphServerProcess) -> list[str]:
    found: list[str] = on_server(server, lambda g: g.V().has_label("note").id_().to_list())
    return found


def answered_by(g: GraphTraversalSource) -> str:
    names: list[str] = g.V("server").values("name").to_list()
    assert len(names) == 1, names
    return names[0]


# -- the two quick starts ----------------------------------------------------------------------


@pytest.fixture
def client_for(
    janus: list[JanusGraphServerProcess],
) -> Iterator[Callable[..., RoundRobinClientRemoteConnection]]:
    """The README's plain-Python quick start over the fleet: default settings, the given
    serializer (GraphBinary, the driver's default, unless said otherwise)."""
    made: list[RoundRobinClientRemoteConnection] = []

    def make(
        serializer: str = "graphbinary", settings: BalancerSettings | None = None
    ) -> RoundRobinClientRemoteConnection:
        rr = RoundRobinClientRemoteConnection(
            [s.address for s in janus],
            traversal_source="g",
            settings=settings,
            message_serializer=SERIALIZERS[serializer](),
        )
        made.append(rr)
        return rr

    yield make
    for rr in made:
        rr.close()


def every_host_serves(rr: RoundRobinClientRemoteConnection) -> RoundRobinClientRemoteConnection:
    """Waits until every JanusGraph host passed its health probe (a host whose probe fails
    never takes a traversal, so a fleet that never gets there serves nothing)."""
    wait_until(lambda: all(rr.get_available().values()), 20, "every JanusGraph host healthy")
    return rr


@pytest.fixture
def sidecar(janus: list[JanusGraphServerProcess]) -> Iterator[SidecarThread]:
    """The README's sidecar quick start over the fleet: endpoints only, default settings."""
    config = SidecarConfig(endpoints=tuple(parse_endpoint(s.address) for s in janus))
    with SidecarThread(config) as running:
        yield running


def via_sidecar(sidecar: SidecarThread, serializer: str) -> DriverRemoteConnection:
    return DriverRemoteConnection(sidecar.url, "g", message_serializer=SERIALIZERS[serializer]())


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_the_client_with_default_settings_serves_every_janusgraph_server_in_turn(
    client_for: Callable[..., RoundRobinClientRemoteConnection],
    janus: list[JanusGraphServerProcess],
    serializer: str,
) -> None:
    """The plain-Python quick start as written: every server joins and answers in turn."""
    g = traversal().with_(every_host_serves(client_for(serializer)))
    assert Counter(answered_by(g) for _ in range(6)) == {s.address: 2 for s in janus}


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_the_client_with_a_plain_value_probe_serves_every_janusgraph_server_in_turn(
    client_for: Callable[..., RoundRobinClientRemoteConnection],
    janus: list[JanusGraphServerProcess],
    serializer: str,
) -> None:
    """The README's way to pick a probe: one whose answer is a plain number can be read by
    any serializer, whatever types the graph's vertices carry."""
    settings = BalancerSettings(health=HealthCheckSettings(probe_script="g.inject(0)"))
    g = traversal().with_(every_host_serves(client_for(serializer, settings)))
    assert Counter(answered_by(g) for _ in range(6)) == {s.address: 2 for s in janus}


@pytest.mark.parametrize(("query", "serializer"), CASES)
def test_the_client_answers_as_a_direct_connection_does(
    client_for: Callable[..., RoundRobinClientRemoteConnection],
    janus: list[JanusGraphServerProcess],
    query: str,
    serializer: str,
) -> None:
    run = QUERIES[query].run
    connection = direct(janus[0], serializer)
    try:
        expected = run(traversal().with_(connection))
    finally:
        connection.close()
    g = traversal().with_(every_host_serves(client_for(serializer)))
    assert [run(g) for _ in range(SIZE)] == [expected] * SIZE


def test_the_sidecar_with_default_settings_spreads_requests_over_every_janusgraph_server(
    sidecar: SidecarThread, janus: list[JanusGraphServerProcess]
) -> None:
    connection = via_sidecar(sidecar, "janusgraph-graphbinary")
    try:
        g = traversal().with_(connection)
        assert Counter(answered_by(g) for _ in range(6)) == {s.address: 2 for s in janus}
    finally:
        connection.close()


@pytest.mark.parametrize(("query", "serializer"), CASES)
def test_the_sidecar_answers_as_a_direct_connection_does(
    sidecar: SidecarThread, janus: list[JanusGraphServerProcess], query: str, serializer: str
) -> None:
    run = QUERIES[query].run
    expected_connection = direct(janus[0], serializer)
    connection = via_sidecar(sidecar, serializer)
    try:
        expected = run(traversal().with_(expected_connection))
        g = traversal().with_(connection)
        assert [run(g) for _ in range(SIZE)] == [expected] * SIZE
    finally:
        connection.close()
        expected_connection.close()


# -- a server killed under JanusGraph-predicate reads ------------------------------------------

#: Bounds of the load around a kill: reads before it (so it lands mid-load) and after it.
READS_BEFORE_KILL = 30
READS_AFTER_KILL = 90
LOAD_WORKERS = 4


@dataclass
class Load:
    """Reads with JanusGraph predicates from a few threads until told to stop."""

    reads: list[Callable[[], Any]]
    expected: list[Any]
    done: int = 0
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def worker(self, index: int) -> None:
        turn = index
        while not self.stop.is_set():
            read = turn % len(self.reads)
            turn += 1
            try:
                answer = self.reads[read]()
                outcome = None if answer == self.expected[read] else f"wrong answer {answer!r}"
            except Exception as exc:
                outcome = f"{type(exc).__name__}: {exc}"
            with self.lock:
                self.done += 1
                if outcome is not None:
                    self.failures.append(outcome[:300])

    def count(self) -> int:
        with self.lock:
            return self.done

    def run_through_a_kill(self, victim: JanusGraphServerProcess) -> None:
        threads = [
            threading.Thread(target=self.worker, args=(i,), name=f"janus-load-{i}")
            for i in range(LOAD_WORKERS)
        ]
        for thread in threads:
            thread.start()
        try:
            wait_until(lambda: self.count() >= READS_BEFORE_KILL, 60, "reads before the kill")
            victim.kill()
            after = self.count() + READS_AFTER_KILL
            wait_until(lambda: self.count() >= after, 90, "reads after the kill")
        finally:
            self.stop.set()
            for thread in threads:
                thread.join(60)


def text_read(g: GraphTraversalSource) -> Callable[[], Any]:
    return lambda: sorted(
        g.V().has("description", Text.text_contains("city")).values("name").to_list()
    )


def geo_read(g: GraphTraversalSource) -> Callable[[], Any]:
    return lambda: sorted(g.V().has("location", within(100)).values("name").to_list())


EXPECTED_TEXT = ["athens", "corinth", "thessaloniki"]
EXPECTED_GEO = ["athens", "corinth"]


def fast_probes() -> BalancerSettings:
    """Probes every half second: the kill is noticed within the load's bounds."""
    return BalancerSettings(
        health=HealthCheckSettings(interval=0.5, timeout=2.0, rise=1, fall=1),
        request_timeout=10.0,
        connect_timeout=2.0,
    )


def test_a_server_killed_under_janusgraph_predicate_reads_through_the_sidecar_fails_no_read(
    janus: list[JanusGraphServerProcess],
) -> None:
    """textContains over GraphBinary and geoWithin over GraphSON 3: both carry a JanusGraph
    custom type in the request, which the write check must still know for a read."""
    config = SidecarConfig(
        endpoints=tuple(parse_endpoint(s.address) for s in janus), settings=fast_probes()
    )
    with SidecarThread(config) as sidecar:
        binary = via_sidecar(sidecar, "janusgraph-graphbinary")
        graphson = via_sidecar(sidecar, "janusgraph-graphson3")
        try:
            load = Load(
                [text_read(traversal().with_(binary)), geo_read(traversal().with_(graphson))],
                [EXPECTED_TEXT, EXPECTED_GEO],
            )
            load.run_through_a_kill(janus[1])
        finally:
            binary.close()
            graphson.close()
    assert load.failures == []


def test_a_server_killed_under_janusgraph_predicate_reads_through_the_client_fails_no_read(
    client_for: Callable[..., RoundRobinClientRemoteConnection],
    janus: list[JanusGraphServerProcess],
) -> None:
    binary = traversal().with_(
        every_host_serves(client_for("janusgraph-graphbinary", fast_probes()))
    )
    graphson = traversal().with_(
        every_host_serves(client_for("janusgraph-graphson3", fast_probes()))
    )
    load = Load([text_read(binary), geo_read(graphson)], [EXPECTED_TEXT, EXPECTED_GEO])
    load.run_through_a_kill(janus[2])
    assert load.failures == []


# -- transactions ------------------------------------------------------------------------------


@pytest.fixture(params=["client", "sidecar"])
def tx_source(
    request: pytest.FixtureRequest,
    client_for: Callable[..., RoundRobinClientRemoteConnection],
    janus: list[JanusGraphServerProcess],
) -> Iterator[GraphTraversalSource]:
    """A traversal source through the client or the sidecar, janusgraphpython GraphSON 3."""
    if request.param == "client":
        yield traversal().with_(every_host_serves(client_for("janusgraph-graphson3")))
        return
    config = SidecarConfig(endpoints=tuple(parse_endpoint(s.address) for s in janus))
    with SidecarThread(config) as sidecar:
        connection = via_sidecar(sidecar, "janusgraph-graphson3")
        try:
            yield traversal().with_(connection)
        finally:
            connection.close()


def test_a_committed_transaction_lands_on_exactly_one_server(
    tx_source: GraphTraversalSource, janus: list[JanusGraphServerProcess]
) -> None:
    tx = tx_source.tx()
    gtx = tx.begin()
    for note in ("n1", "n2", "n3"):
        gtx.add_v("note").property(T.id, note).none().to_list()
    assert sorted(gtx.V().has_label("note").id_().to_list()) == ["n1", "n2", "n3"]
    tx.commit()
    found = {s.address: sorted(notes(s)) for s in janus}
    assert sorted(found.values()) == [[], [], ["n1", "n2", "n3"]], found


def test_a_rolled_back_transaction_ran_on_one_server_and_left_nothing(
    tx_source: GraphTraversalSource, janus: list[JanusGraphServerProcess]
) -> None:
    tx = tx_source.tx()
    gtx = tx.begin()
    for note in ("r1", "r2", "r3"):
        gtx.add_v("note").property(T.id, note).none().to_list()
    # each write was seen by the next request: all of them ran in one server's transaction
    assert sorted(gtx.V().has_label("note").id_().to_list()) == ["r1", "r2", "r3"]
    tx.rollback()
    assert {s.address: notes(s) for s in janus} == {s.address: [] for s in janus}


# -- TinkerPop 3.7 servers and gremlinpython 3.8 -----------------------------------------------


def test_gremlinpython_3_8_iterate_is_refused_by_a_janusgraph_1_1_server(
    janus: list[JanusGraphServerProcess],
) -> None:
    """The README's compatibility note: iterate() appends discard(), a 3.8 step 3.7 lacks."""
    with pytest.raises(GremlinServerError, match=r"discard\(\)"):
        on_server(janus[0], lambda g: g.V("athens").property("visited", True).iterate())


def test_none_to_list_runs_a_write_on_a_janusgraph_1_1_server(
    janus: list[JanusGraphServerProcess],
) -> None:
    """The README's workaround: ``.none().to_list()`` sends what gremlinpython 3.7's
    iterate() sends (its ``none()`` step), so the write runs and nothing comes back."""
    assert (
        on_server(janus[0], lambda g: g.add_v("note").property(T.id, "w1").none().to_list()) == []
    )
    assert notes(janus[0]) == ["w1"]


def test_edge_ids_read_through_the_balancer_are_janusgraph_relation_identifiers(
    sidecar: SidecarThread,
) -> None:
    """janusgraphpython's types survive the sidecar: an edge id is a RelationIdentifier."""
    connection = via_sidecar(sidecar, "janusgraph-graphbinary")
    try:
        ids = traversal().with_(connection).V("athens").out_e("road").id_().to_list()
    finally:
        connection.close()
    assert ids
    assert all(isinstance(i, RelationIdentifier) for i in ids)
