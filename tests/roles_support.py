"""A writer and two readers made of real Gremlin Servers, and the evidence of who wrote what.

Each server has its own graph, so a write leaves its trace only on the server that ran it:
the traces are counted on each server directly, not through the balancer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import TypeVar

from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.process.anonymous_traversal import traversal
from gremlin_python.process.graph_traversal import GraphTraversalSource, __
from gremlin_python.process.traversal import T

from gremlinlb.core import Balancer, HostState
from gremlinlb.devservers import GremlinServerProcess
from tests.helpers import wait_until

MUTATIONS = 10
R = TypeVar("R")


def role_endpoints(servers: Sequence[GremlinServerProcess]) -> list[str]:
    """The first server as the writer, the others as readers, in the endpoint text form."""
    writer, *readers = servers
    return [f"{writer.address}?role=writer", *(f"{r.address}?role=reader" for r in readers)]


def plant_doomed(servers: Sequence[GremlinServerProcess]) -> None:
    """A `doomed` vertex on every server, for the drop traversal to remove where it runs."""
    for server in servers:
        direct(server, lambda g: g.add_v("doomed").iterate())


def mutate_every_way(g: GraphTraversalSource, count: int = MUTATIONS) -> None:
    """Mutating traversals of every shape the bytecode walk must catch, `count` times each."""
    for i in range(count):
        g.add_v("written").property("i", i).iterate()
        g.merge_v({T.label: "merged", "k": "one"}).iterate()
        g.inject(i).side_effect(__.add_v("nested")).iterate()
        g.V().has_label("server").add_e("wrote").to(__.V().has_label("server")).iterate()
        g.V().has_label("server").property("touched", i).iterate()
        g.V().has_label("doomed").drop().iterate()


def traces(server: GremlinServerProcess) -> dict[str, int]:
    """What the mutations left on `server`, asked directly."""

    def read(g: GraphTraversalSource) -> dict[str, int]:
        return {
            "written": g.V().has_label("written").count().next(),
            "merged": g.V().has_label("merged").count().next(),
            "nested": g.V().has_label("nested").count().next(),
            "wrote": g.E().has_label("wrote").count().next(),
            "touched": g.V().has("touched").count().next(),
            "doomed": g.V().has_label("doomed").count().next(),
        }

    return direct(server, read)


WRITER_TRACES = {
    "written": MUTATIONS,
    "merged": 1,
    "nested": MUTATIONS,
    "wrote": MUTATIONS,
    "touched": 1,
    "doomed": 0,
}
UNTOUCHED = {"written": 0, "merged": 0, "nested": 0, "wrote": 0, "touched": 0, "doomed": 1}


def assert_reads_even(names: Counter[str], readers: Sequence[GremlinServerProcess]) -> None:
    """Every read answered by a reader, each reader within 5% of an even share."""
    total = sum(names.values())
    print(f"\nreads per reader: {sorted(names.values())} of {total}")
    assert set(names) <= {r.address for r in readers}, names
    even = total / len(readers)
    for reader in readers:
        assert abs(names[reader.address] - even) <= 0.05 * even, names


def direct(server: GremlinServerProcess, work: Callable[[GraphTraversalSource], R]) -> R:
    connection = DriverRemoteConnection(server.url, "g")
    try:
        return work(traversal().with_(connection))
    finally:
        connection.close()


def kill_readers(balancer: Balancer, servers: Sequence[GremlinServerProcess]) -> None:
    """Kill every server but the writer (the first), and wait until the balancer saw them go."""
    for reader in servers[1:]:
        reader.kill()
    wait_until(
        lambda: all(balancer.state_of(r.address) is HostState.DOWN for r in servers[1:]),
        15,
        "both readers seen down",
    )
