"""Helpers shared by the in-process client's integration tests (tests/integration/test_client*)."""

from __future__ import annotations

import socket
import threading

from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.driver.remote_connection import RemoteTraversal
from gremlin_python.process.anonymous_traversal import traversal
from gremlin_python.process.graph_traversal import GraphTraversalSource

from gremlinlb import BalancerSettings, HealthCheckSettings, RoundRobinClientRemoteConnection
from gremlinlb.devservers import GremlinServerProcess
from gremlinlb.devservers.faults import FaultProxy
from tests.helpers import wait_until


def answered_by(g: GraphTraversalSource) -> str:
    names: list[str] = g.V().has_label("server").values("name").to_list()
    assert len(names) == 1, f"expected one server vertex, got {names}"
    return names[0]


def values(remote: RemoteTraversal) -> list[object]:
    """The objects of a RemoteTraversal's traversers (what `to_list()` would return)."""
    return [t.object for t in remote.traversers]


def serving(rr: RoundRobinClientRemoteConnection) -> RoundRobinClientRemoteConnection:
    """Wait until every host passed its first probe (hosts join unprobed and take no
    request before), so a test's first request meets the whole rotation."""
    wait_until(lambda: all(rr.get_available().values()), 15, "every host's first probe")
    return rr


def fast_settings(**overrides: object) -> BalancerSettings:
    health = HealthCheckSettings(interval=0.5, timeout=2.0, rise=1, fall=1)
    base: dict[str, object] = {"health": health, "request_timeout": 3.0, "connect_timeout": 2.0}
    base.update(overrides)
    return BalancerSettings(**base)  # type: ignore[arg-type]


def count_label(server: GremlinServerProcess, label: str) -> int:
    direct = DriverRemoteConnection(server.url, "g")
    try:
        count: int = traversal().with_(direct).V().has_label(label).count().next()
        return count
    finally:
        direct.close()


def outlast_idle_close(proxy: FaultProxy) -> None:
    """Returns once a connection opened now, with no byte through it, was closed by `proxy` for
    being idle: every connection idle since before this call would have been closed too."""
    host, port = proxy.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=60) as witness:
        assert witness.recv(1) == b"", "the idle witness got bytes"


class ReadLoop:
    """Reads (`inject(1)`) in a loop through `url` on a thread of its own while a spec does
    something else (a failover under load): what it read and every error it met. Bounded:
    at most `limit` reads, and it stops at `stop()`."""

    def __init__(self, url: str, limit: int = 5000) -> None:
        self.reads: list[object] = []
        self.errors: list[BaseException] = []
        self._url = url
        self._limit = limit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def __enter__(self) -> ReadLoop:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        connection = DriverRemoteConnection(self._url, "g")
        try:
            g = traversal().with_(connection)
            for _ in range(self._limit):
                if self._stop.is_set():
                    break
                try:
                    self.reads.append(g.inject(1).next())
                except BaseException as error:
                    self.errors.append(error)
        finally:
            connection.close()
