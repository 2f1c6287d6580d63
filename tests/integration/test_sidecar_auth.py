"""Backends that require SASL PLAIN: the sidecar authenticates itself, clients bring nothing.

The authenticating server is a real Gremlin Server with its SimpleAuthenticator. Its credentials
graph is written by another real Gremlin Server (a script with jBCrypt and TinkerGraph's GraphSON
writer), so the file is exactly what the authenticator reads.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gremlin_python.driver.client import Client
from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.driver.protocol import GremlinServerError
from gremlin_python.process.anonymous_traversal import traversal
from gremlinlb.sidecar.config import SidecarConfig
from gremlinlb.sidecar.options import BackendOptions
from gremlinlb.sidecar.testing import SidecarThread

from gremlinlb.core import BalancerSettings, BufferSettings, HealthCheckSettings, parse_endpoint
from gremlinlb.devservers import Fleet, GremlinServerProcess, ServerRuntime, find_free_port
from gremlinlb.devservers.probe import port_open

pytestmark = pytest.mark.integration

USER, PASSWORD = "stephen", "s3cret"

CREDENTIALS_SCRIPT = """
def credentials = org.apache.tinkerpop.gremlin.tinkergraph.structure.TinkerGraph.open()
def hash = org.mindrot.jbcrypt.BCrypt.hashpw(password, org.mindrot.jbcrypt.BCrypt.gensalt(4))
credentials.addVertex(T.label, 'user', 'username', user, 'password', hash)
credentials.io(org.apache.tinkerpop.gremlin.structure.io.IoCore.graphson()).writeGraph(path)
'written'
"""


class AuthenticatingServer(GremlinServerProcess):
    """A dev server whose configuration also turns on SimpleAuthenticator."""

    def __init__(self, port: int, work_dir: Path, credentials: Path, runtime: ServerRuntime):
        super().__init__(port, work_dir, runtime=runtime)
        self.credentials = credentials

    def _write_config(self) -> None:
        super()._write_config()
        database = self.work_dir / "credentials.properties"
        database.write_text(
            "gremlin.graph=org.apache.tinkerpop.gremlin.tinkergraph.structure.TinkerGraph\n"
            "gremlin.tinkergraph.vertexIdManager=LONG\n"
            f"gremlin.tinkergraph.graphLocation={self.credentials}\n"
            "gremlin.tinkergraph.graphFormat=graphson\n"
        )
        yaml = self.work_dir / "gremlin-server.yaml"
        yaml.write_text(
            yaml.read_text()
            + "authentication: {\n"
            + "  authenticator: org.apache.tinkerpop.gremlin.server.auth.SimpleAuthenticator,\n"
            + f"  config: {{credentialsDb: {database}}}}}\n"
        )

    def wait_authenticated(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not port_open(self.host, self.port):  # a driver per refused attempt leaks loops
            assert self.is_running(), self.log_tail()
            assert time.monotonic() < deadline, "the authenticating server did not start"
            time.sleep(0.2)
        while True:
            try:
                connection = DriverRemoteConnection(
                    self.url, "g", username=USER, password=PASSWORD, pool_size=1
                )
                try:
                    if traversal().with_(connection).inject(1).to_list() == [1]:
                        return
                finally:
                    connection.close()
            except Exception:
                if time.monotonic() > deadline or not self.is_running():
                    raise
            time.sleep(0.5)


@pytest.fixture
def secured(
    fleet: Fleet, gremlin_runtime: ServerRuntime, tmp_path: Path
) -> Iterator[GremlinServerProcess]:
    credentials = tmp_path / "credentials.json"
    writer = Client(fleet[0].url, "g", pool_size=1)
    try:
        bindings = {"user": USER, "password": PASSWORD, "path": str(credentials)}
        assert writer.submit(CREDENTIALS_SCRIPT, bindings).all().result(30) == ["written"]
    finally:
        writer.close()
    port = find_free_port(fleet.base_port + 150)
    server = AuthenticatingServer(port, tmp_path / "secured", credentials, gremlin_runtime)
    server.start()
    try:
        server.wait_authenticated()
        yield server
    finally:
        server.kill()


def config_for(server: GremlinServerProcess, password: str) -> SidecarConfig:
    return SidecarConfig(
        endpoints=(parse_endpoint(server.address),),
        settings=BalancerSettings(
            health=HealthCheckSettings(interval=0.5, timeout=2.0, rise=1, fall=1),
            buffer=BufferSettings(max_wait=1.0),
            request_timeout=5.0,
        ),
        backend=BackendOptions(username=USER, password=password),
    )


def test_clients_without_credentials_are_served_by_an_authenticating_server(
    secured: GremlinServerProcess,
) -> None:
    with SidecarThread(config_for(secured, PASSWORD)) as sidecar:
        gremlin = Client(sidecar.url, "g", pool_size=4)
        try:
            pending = [gremlin.submit(f"[{i}]") for i in range(20)]  # new connections at once
            assert [p.all().result(20) for p in pending] == [[i] for i in range(20)]
        finally:
            gremlin.close()
        connection = DriverRemoteConnection(sidecar.url, "g")
        try:
            tx = traversal().with_(connection).tx()
            gtx = tx.begin()
            gtx.add_v("secured").iterate()
            tx.commit()
            assert traversal().with_(connection).V().has_label("secured").count().next() == 1
        finally:
            connection.close()


def test_wrong_backend_password_is_reported_not_hidden(secured: GremlinServerProcess) -> None:
    with SidecarThread(config_for(secured, "wrong")) as sidecar:
        gremlin = Client(sidecar.url, "g", pool_size=1)
        try:
            with pytest.raises(GremlinServerError) as raised:
                gremlin.submit("[1]").all().result(20)
        finally:
            gremlin.close()
        last_error = sidecar.balancer.hosts()[0].last_error or ""
    assert raised.value.status_code == 596
    assert "refused the configured credentials" in last_error
