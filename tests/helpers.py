"""Small helpers shared by the integration tests."""

import time
from collections.abc import Callable, Iterable

from gremlin_python.process.graph_traversal import GraphTraversalSource, __

from gremlinlb.devservers import GremlinServerProcess


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds saying what never came."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.05)


def name_servers(servers: Iterable[GremlinServerProcess]) -> None:
    """One `server` vertex per server holding its address, so an answer tells who ran it."""
    for server in servers:
        server.add_name_vertex()


def endless_read(
    g: GraphTraversalSource, server_timeout_ms: int, never: object = 2
) -> GraphTraversalSource:
    """A read-only traversal that loops until the server's evaluationTimeout stops it.

    Slow by construction, on any machine: its one traverser (1) repeats until it equals
    `never`, which it never does. `never` may be large, so that the request stands out.
    """
    looping: GraphTraversalSource = (
        g.with_("evaluationTimeout", server_timeout_ms)
        .inject(1)
        .repeat(__.identity())
        .until(__.is_(never))
    )
    return looping
