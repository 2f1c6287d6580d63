"""Backends failing under load: killed, hung (SIGSTOP), restarted, and all gone at once.

Load is bounded: a few client threads, each stopping after a request count or a deadline.
Each server holds one `server` vertex naming it, so every answer says which server ran it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType

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
    Outcome,
    parse_endpoint,
)
from gremlinlb.devservers import Fleet, GremlinServerProcess, ServerRuntime, find_free_port
from tests.helpers import name_servers, wait_until

pytestmark = pytest.mark.integration


def config_for(servers: Sequence[GremlinServerProcess], **settings: object) -> SidecarConfig:
    base: dict[str, object] = {
        "health": HealthCheckSettings(interval=0.5, timeout=1.5, rise=1, fall=1),
        "request_timeout": 2.0,
        "connect_timeout": 1.0,
    }
    base.update(settings)
    return SidecarConfig(
        endpoints=tuple(parse_endpoint(s.address) for s in servers),
        settings=BalancerSettings(**base),  # type: ignore[arg-type]
    )


@pytest.fixture
def servers(fleet: Fleet) -> Sequence[GremlinServerProcess]:
    name_servers(list(fleet))
    return list(fleet)


@pytest.fixture
def sidecar(servers: Sequence[GremlinServerProcess]) -> Iterator[SidecarThread]:
    with SidecarThread(config_for(servers)) as running:
        yield running


class Load:
    """Client threads running read-only traversals until stopped (bounded in count and time)."""

    def __init__(self, url: str, threads: int = 6, per_thread: int = 3000, seconds: float = 90):
        self._url = url
        self._per_thread = per_thread
        self._deadline = time.monotonic() + seconds
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.served: list[str] = []
        self.errors: list[BaseException] = []
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    join_seconds = 30.0  # how long leaving waits for each thread

    def _run(self) -> None:
        connection = DriverRemoteConnection(self._url, "g", pool_size=1)
        try:
            self._read_until_stopped(traversal().with_(connection))
        finally:
            connection.close()

    def _read_until_stopped(self, g: GraphTraversalSource) -> None:
        for _ in range(self._per_thread):
            if self._stop.is_set() or time.monotonic() > self._deadline:
                return
            try:
                names = self._read(g)
            except Exception as error:  # reported by the tests
                with self._lock:
                    self.errors.append(error)
                continue
            with self._lock:
                self.served.extend(names)

    def _read(self, g: GraphTraversalSource) -> list[str]:
        names: list[str] = g.V().has_label("server").values("name").to_list()
        return names

    def wait_for(self, more: int, timeout: float = 60.0) -> None:
        """Block until `more` further answers arrived."""
        target = len(self.served) + more
        wait_until(lambda: len(self.served) >= target, timeout, f"{target} answers of the load")

    def since(self, mark: int) -> Counter[str]:
        with self._lock:
            return Counter(self.served[mark:])

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.join_seconds)


# Taken out by a failed probe (down) or by outlier detection (ejected), whichever came first.
OUT_OF_ROTATION = (HostState.DOWN, HostState.EJECTED)


def state(sidecar: SidecarThread, server: GremlinServerProcess) -> HostState:
    return sidecar.balancer.state_of(server.address)


def test_killed_server_mid_load_fails_no_read_only_traversal(
    sidecar: SidecarThread, servers: Sequence[GremlinServerProcess]
) -> None:
    victim = servers[1]
    with Load(sidecar.url) as load:
        load.wait_for(60)
        victim.kill()
        mark = len(load.served)
        load.wait_for(150)
    assert load.errors == []
    assert state(sidecar, victim) in OUT_OF_ROTATION
    assert set(load.since(mark + 12)) == {servers[0].address, servers[2].address}


def test_hung_server_mid_load_fails_no_read_only_traversal(
    sidecar: SidecarThread, servers: Sequence[GremlinServerProcess]
) -> None:
    victim = servers[2]
    with Load(sidecar.url) as load:
        load.wait_for(60)
        victim.pause()
        load.wait_for(150)
    assert load.errors == []
    assert state(sidecar, victim) in OUT_OF_ROTATION


def test_restarted_server_mid_load_serves_again_with_no_failed_traversal(
    sidecar: SidecarThread, servers: Sequence[GremlinServerProcess]
) -> None:
    victim = servers[0]
    with Load(sidecar.url) as load:
        load.wait_for(60)
        victim.kill()
        wait_until(lambda: state(sidecar, victim) in OUT_OF_ROTATION, 10, "the kill noticed")
        victim.restart()
        name_servers([victim])
        wait_until(lambda: state(sidecar, victim) is HostState.HEALTHY, 10, "the recovery")
        mark = len(load.served)
        load.wait_for(90)
    assert load.errors == []
    assert victim.address in load.since(mark)


def attempts_on(sidecar: SidecarThread, server: GremlinServerProcess) -> float:
    """The attempts the sidecar sent to `server`, whatever their outcome (its metrics)."""
    prefix = f'gremlinlb_sidecar_backend_requests_total{{host="{server.address}"'
    text = sidecar.sidecar.metrics.render().decode()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
    )


def test_write_in_flight_when_its_server_dies_is_answered_not_retried(
    servers: Sequence[GremlinServerProcess],
) -> None:
    pair = servers[:2]
    with SidecarThread(config_for(pair, request_timeout=60.0)) as sidecar:
        wait_until(
            lambda: all(h.state is HostState.HEALTHY for h in sidecar.balancer.hosts()),
            10,
            "both hosts to pass their first probe",
        )
        gremlin = Client(sidecar.url, "g", pool_size=1)
        try:
            for _ in range(4):  # both hosts get an open pooled connection: the write goes out
                gremlin.submit("1").all().result(10)
            # Still running at the kill however busy the machine: the server's own evaluation
            # timeout (30 s) ends it first, and the sidecar's request timeout is past that.
            pending = gremlin.submit("Thread.sleep(60000); g.addV('written').iterate(); 'done'")
            wait_until(
                lambda: any(h.in_flight for h in sidecar.balancer.hosts()), 30, "the write sent"
            )
            busy = next(h.endpoint.address for h in sidecar.balancer.hosts() if h.in_flight)
            first, second = sorted(pair, key=lambda s: s.address != busy)
            before = attempts_on(sidecar, second)
            first.kill()  # the server running the write dies under it
            with pytest.raises(GremlinServerError) as raised:
                pending.all().result(15)
            # Not retried: no attempt went to, nor is running on, the surviving server.
            assert attempts_on(sidecar, second) == before
            assert sidecar.balancer.in_flight(second.address) == []
            assert raised.value.status_code == 500
            assert "may or may not have been applied" in raised.value.status_message
            # The same client socket carries on: the failure was an answer, not a close.
            assert gremlin.submit("'still here'").all().result(10) == ["still here"]
        finally:
            gremlin.close()
    connection = DriverRemoteConnection(second.url, "g")
    try:
        assert traversal().with_(connection).V().has_label("written").count().next() == 0
    finally:
        connection.close()


def test_requests_wait_while_no_server_is_healthy_and_all_complete_after_recovery(
    extra_server: GremlinServerProcess,
) -> None:
    config = config_for([extra_server], buffer=BufferSettings(max_elements=50, max_wait=60.0))
    with SidecarThread(config) as sidecar:
        extra_server.kill()
        wait_until(lambda: state(sidecar, extra_server) is HostState.DOWN, 10, "the kill noticed")
        gremlin = Client(sidecar.url, "g", pool_size=4)
        try:
            pending = [gremlin.submit(f"[{i}]") for i in range(4)]
            wait_until(lambda: sidecar.balancer.buffered == 4, 10, "four buffered requests")
            extra_server.restart()
            answers = [p.all().result(30) for p in pending]
        finally:
            gremlin.close()
    assert answers == [[i] for i in range(4)]


def test_buffered_request_is_answered_596_after_max_wait(
    extra_server: GremlinServerProcess,
) -> None:
    config = config_for([extra_server], buffer=BufferSettings(max_elements=10, max_wait=1.0))
    config = replace(config, grace_period=0.0)
    with SidecarThread(config) as sidecar:
        extra_server.kill()
        wait_until(lambda: state(sidecar, extra_server) is HostState.DOWN, 10, "the kill noticed")
        gremlin = Client(sidecar.url, "g", pool_size=1)
        try:
            with pytest.raises(GremlinServerError) as raised:
                gremlin.submit("[1]").all().result(15)
        finally:
            gremlin.close()
    assert raised.value.status_code == 596
    assert "max_wait" in raised.value.status_message


def test_request_waits_rather_than_fails_when_more_servers_are_dead_than_max_attempts(
    servers: Sequence[GremlinServerProcess],
) -> None:
    # A long health interval: only the request itself can find out that the servers are gone.
    slow_health = HealthCheckSettings(interval=60.0, timeout=1.5, rise=1, fall=1)
    config = config_for(servers[:2], max_attempts=1, health=slow_health)
    with SidecarThread(config) as sidecar:
        servers[0].kill()
        servers[1].kill()
        gremlin = Client(sidecar.url, "g", pool_size=1)
        try:
            pending = gremlin.submit_async("[42]")
            wait_until(lambda: sidecar.balancer.buffered == 1, 15, "the request to wait")
            servers[1].restart()
            # Stands in for the next health round, 60 s away: a probe that passed.
            sidecar.balancer.record_probe(parse_endpoint(servers[1].address), ok=True)
            answer = pending.result(30).all().result(30)
        finally:
            gremlin.close()
    assert answer == [42]


class SmallQueueServer(GremlinServerProcess):
    """A dev server whose work queue holds one request: the next ones get 429 at once."""

    def _write_config(self) -> None:
        super()._write_config()
        yaml = self.work_dir / "gremlin-server.yaml"
        yaml.write_text(yaml.read_text() + "maxWorkQueueSize: 1\n")


@pytest.fixture
def small_queue_server(
    fleet: Fleet, gremlin_runtime: ServerRuntime, tmp_path: Path
) -> Iterator[GremlinServerProcess]:
    server = SmallQueueServer(
        find_free_port(fleet.base_port + 120), tmp_path / "small-queue", runtime=gremlin_runtime
    )
    server.start()
    try:
        server.wait_ready()
        yield server
    finally:
        server.kill()


def test_requests_refused_with_429_are_retried_on_another_server(
    small_queue_server: GremlinServerProcess, servers: Sequence[GremlinServerProcess]
) -> None:
    config = config_for([small_queue_server, servers[0]], request_timeout=10.0)
    with SidecarThread(config) as sidecar:
        gremlin = Client(sidecar.url, "g", pool_size=8)
        try:
            pending = [gremlin.submit(f"Thread.sleep(700); {i}") for i in range(8)]
            answers = [p.all().result(30) for p in pending]
        finally:
            gremlin.close()
        overloaded = sidecar.balancer.hosts()[0].outcomes.get(Outcome.OVERLOADED, 0)
    assert answers == [[i] for i in range(8)]
    assert overloaded >= 1
    assert sidecar.balancer.state_of(small_queue_server.address) is HostState.HEALTHY
