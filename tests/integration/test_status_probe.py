"""The optional status probe (`health.status_probe`: GET /status, Amazon Neptune's instance
status) on real parts: real Gremlin Servers behind the verifying front
(gremlinlb.devservers.sigv4front), which answers GET /status as a Neptune instance does and
relays the WebSocket traffic to the server, reached by the real sidecar and the real in-process
client through real gremlinpython. Writes are counted on the servers themselves.
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.process.anonymous_traversal import traversal
from gremlin_python.process.graph_traversal import GraphTraversalSource
from gremlinlb.sidecar.config import SidecarConfig
from gremlinlb.sidecar.options import BackendOptions
from gremlinlb.sidecar.testing import SidecarThread

from gremlinlb import RoundRobinClientRemoteConnection, sigv4
from gremlinlb.certificates import generate
from gremlinlb.core import (
    BalancerSettings,
    BufferSettings,
    HealthCheckSettings,
    HostState,
    HostStatus,
    SigV4Settings,
    parse_endpoint,
)
from gremlinlb.devservers import Fleet
from gremlinlb.devservers.sigv4front import Secret, SigV4Front
from tests.client_support import count_label
from tests.helpers import fake_aws_credentials, wait_until

pytestmark = pytest.mark.integration

REGION = "us-east-1"
KEY = ("ASIASTATUSKEY", "status-secret", "status-token")
SIGNED = SigV4Settings(enabled=True, region=REGION)


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    fake_aws_credentials(monkeypatch, *KEY)
    yield
    sigv4.reset()


def _fronts(
    fleet: Fleet, *, verifying: bool, ssl_context: ssl.SSLContext | None = None
) -> Iterator[list[SigV4Front]]:
    made = [
        SigV4Front(
            s.address,
            {KEY[0]: Secret(KEY[1], KEY[2])},
            verifying=verifying,
            ssl_context=ssl_context,
        )
        for s in fleet[:2]
    ]
    for front in made:
        front.__enter__()
    try:
        yield made
    finally:
        for front in made:
            front.__exit__()


@pytest.fixture
def open_fronts(fleet: Fleet) -> Iterator[list[SigV4Front]]:
    """Two Neptune stand-ins without IAM auth."""
    yield from _fronts(fleet, verifying=False)


@pytest.fixture
def iam_fronts(fleet: Fleet, credentials: None) -> Iterator[list[SigV4Front]]:
    """Two Neptune stand-ins with IAM auth: every upgrade and GET /status must be signed."""
    yield from _fronts(fleet, verifying=True)


@dataclass(frozen=True)
class Tls:
    server: ssl.SSLContext
    client: ssl.SSLContext


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    """A CA and a certificate for 127.0.0.1: the fronts' TLS, and what clients trust."""
    bundle = generate(["127.0.0.1"], ca_common_name="status-probe-test-ca")
    (tmp_path / "cert.pem").write_bytes(bundle.cert_pem)
    (tmp_path / "key.pem").write_bytes(bundle.key_pem)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return Tls(server, ssl.create_default_context(cadata=bundle.ca_pem.decode()))


@pytest.fixture
def tls_fronts(fleet: Fleet, credentials: None, tls: Tls) -> Iterator[list[SigV4Front]]:
    """Two Neptune stand-ins serving TLS only, with IAM auth."""
    yield from _fronts(fleet, verifying=True, ssl_context=tls.server)


def _settings(status_probe: bool = True, signing: SigV4Settings | None = None) -> BalancerSettings:
    return BalancerSettings(
        health=HealthCheckSettings(
            interval=0.3, timeout=2.0, rise=1, fall=1, status_probe=status_probe, status_timeout=1.0
        ),
        buffer=BufferSettings(max_wait=1.0),
        request_timeout=5.0,
        connect_timeout=2.0,
        slow_start=0,
        sigv4=signing or SigV4Settings(),
    )


def _sidecar(
    addresses: list[str], settings: BalancerSettings, tls: Tls | None = None
) -> SidecarThread:
    return SidecarThread(
        SidecarConfig(
            endpoints=tuple(parse_endpoint(a) for a in addresses),
            settings=settings,
            backend=BackendOptions(ssl_context=tls.client if tls is not None else None),
        )
    )


def _write(g: GraphTraversalSource, count: int) -> None:
    for _ in range(count):
        g.add_v("hit").next()


def _hits(fleet: Fleet) -> list[int]:
    return [count_label(server, "hit") for server in fleet[:2]]


def _status_failures(sidecar: SidecarThread) -> float:
    text = sidecar.sidecar.metrics.render().decode()
    for line in text.splitlines():
        if line.startswith('gremlinlb_sidecar_probe_failures_total{check="status"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_sidecar_takes_out_a_host_whose_status_turns_unhealthy_while_its_traversal_passes(
    fleet: Fleet, open_fronts: list[SigV4Front]
) -> None:
    with _sidecar([f.address for f in open_fronts], _settings()) as sidecar:
        recovering = sidecar.balancer.hosts()[0].endpoint
        open_fronts[0].instance_status = "recovery"
        wait_until(
            lambda: sidecar.balancer.state_of(recovering) is HostState.DOWN, 15, "host 0 down"
        )
        # GET /status is asked only after the probe's traversal passed: it still passes.
        assert open_fronts[0].status_asked["recovery"] > 0
        error = sidecar.balancer.hosts()[0].last_error or ""
        assert error.startswith("probe: status probe: GET /status says status 'recovery'")
        assert _status_failures(sidecar) > 0
        remote = DriverRemoteConnection(sidecar.url, "g")
        try:
            g = traversal().with_(remote)
            _write(g, 10)
            assert _hits(fleet) == [0, 10]
            open_fronts[0].instance_status = "healthy"
            wait_until(
                lambda: sidecar.balancer.state_of(recovering) is HostState.HEALTHY, 15, "back"
            )
            _write(g, 10)
        finally:
            remote.close()
    assert _hits(fleet) == [5, 15]  # round robin over both again


def test_client_takes_out_a_host_whose_status_turns_unhealthy_while_its_traversal_passes(
    fleet: Fleet, open_fronts: list[SigV4Front]
) -> None:
    rr = RoundRobinClientRemoteConnection([f.address for f in open_fronts], settings=_settings())
    try:
        wait_until(lambda: all(rr.get_available().values()), 15, "both hosts probed")
        open_fronts[0].instance_status = "recovery"
        wait_until(lambda: rr.hosts()[0].state is HostState.DOWN, 15, "host 0 down")
        assert open_fronts[0].status_asked["recovery"] > 0
        error = rr.hosts()[0].last_error or ""
        assert error.startswith("probe: status probe: GET /status says status 'recovery'")
        g = traversal().with_(rr)
        _write(g, 10)
        assert _hits(fleet) == [0, 10]
        open_fronts[0].instance_status = "healthy"
        wait_until(lambda: rr.hosts()[0].state is HostState.HEALTHY, 15, "host 0 back")
        _write(g, 10)
    finally:
        rr.close()
    assert _hits(fleet) == [5, 15]


def test_an_unsigned_status_request_is_refused_when_iam_auth_is_on(
    iam_fronts: list[SigV4Front],
) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://{iam_fronts[0].address}/status", timeout=5)
    assert refused.value.code == 403
    assert iam_fronts[0].status_refused["no SigV4 Authorization header"] == 1


def test_sidecar_signs_its_status_probe_when_sigv4_is_on(iam_fronts: list[SigV4Front]) -> None:
    _sidecar_asks_signed([f.address for f in iam_fronts], iam_fronts)


def test_client_signs_its_status_probe_when_sigv4_is_on(iam_fronts: list[SigV4Front]) -> None:
    _client_asks_signed([f.address for f in iam_fronts], iam_fronts)


def test_the_status_probe_is_off_by_default_so_a_server_without_status_serves(
    fleet: Fleet,
) -> None:
    settings = _settings(status_probe=False)
    assert settings.health.status_probe is HealthCheckSettings().status_probe
    with _sidecar([fleet[0].address], settings) as sidecar:
        remote = DriverRemoteConnection(sidecar.url, "g")
        try:
            _write(traversal().with_(remote), 3)
        finally:
            remote.close()
    assert count_label(fleet[0], "hit") == 3


def test_with_the_status_probe_on_a_server_without_status_is_down_naming_the_status_probe(
    fleet: Fleet,
) -> None:
    with _sidecar([fleet[0].address], _settings()) as sidecar:
        host = sidecar.balancer.hosts()[0]
        assert host.state is HostState.DOWN
        assert (host.last_error or "").startswith(
            "probe: status probe: GET /status answered HTTP 400: the server has no status endpoint"
        )


def test_sidecar_asks_a_wss_hosts_status_over_https_signed(
    tls_fronts: list[SigV4Front], tls: Tls
) -> None:
    _sidecar_asks_signed([f"wss://{f.address}/gremlin" for f in tls_fronts], tls_fronts, tls)


def test_client_asks_a_wss_hosts_status_over_https_signed(
    tls_fronts: list[SigV4Front], tls: Tls
) -> None:
    _client_asks_signed([f"wss://{f.address}/gremlin" for f in tls_fronts], tls_fronts, tls)


def _asked_signed(fronts: list[SigV4Front], hosts: Callable[[], list[HostStatus]]) -> None:
    """Every front answered the probes' GET /status more than once, and every host serves."""
    wait_until(lambda: all(f.status_asked["healthy"] >= 2 for f in fronts), 15, "status asked")
    assert all(h.state is HostState.HEALTHY for h in hosts())


def _sidecar_asks_signed(urls: list[str], fronts: list[SigV4Front], tls: Tls | None = None) -> None:
    with _sidecar(urls, _settings(signing=SIGNED), tls) as sidecar:
        _asked_signed(fronts, sidecar.balancer.hosts)
    assert [f.status_refused.total() for f in fronts] == [0, 0]


def _client_asks_signed(urls: list[str], fronts: list[SigV4Front], tls: Tls | None = None) -> None:
    rr = RoundRobinClientRemoteConnection(
        urls, settings=_settings(signing=SIGNED), ssl_context=tls.client if tls else None
    )
    try:
        _asked_signed(fronts, rr.hosts)
    finally:
        rr.close()
    assert [f.status_refused.total() for f in fronts] == [0, 0]
