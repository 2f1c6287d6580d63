"""Small helpers shared by the integration tests."""

import time
from collections.abc import Callable, Iterable

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
