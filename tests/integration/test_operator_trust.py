"""Who may act on the sidecars, on a real control plane with real sidecars (issue 22).

* one leader at a time: two operator replicas, one reaching the apiserver through a TCP proxy
  that stalls; their own logs show that at most one of them acts at any moment;
* the admin token only over verified TLS: a client pod whose sidecar serves plain HTTP gets no
  push unless its GremlinCluster allows it, and the cluster says why;
* a generation claimed in a sidecar's 409 is believed only within a window.

The operators run as their own processes with the ServiceAccount's RBAC (manifests/10-rbac.yaml),
the sidecars are real ``gremlinlb sidecar`` processes on loopback, the Gremlin Server a real JVM
in a network namespace (its address is the EndpointSlice's).
"""

from __future__ import annotations

import http.server
import json
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from gremlinlb.devservers import ServerRuntime
from gremlinlb.devservers.faults import FaultProxy
from tests.devcluster import (
    ControlPlane,
    EndpointSpec,
    NetnsNetwork,
    apply_endpoint_slice,
    create_service,
)
from tests.operator_support import (
    GREMLIN_PORT,
    REPO,
    OperatorProcess,
    SidecarProcess,
    applied_manifests,
    cluster_object,
    condition,
    create_client_pod,
    netns_servers,
    running_operator,
    token_files,
    wait_for,
)

pytestmark = pytest.mark.integration

SETTLE = 30.0
#: Short lease timings (3 s, renew deadline 2 s) and a resync every half second, so that a
#: leader pushes to every sidecar all the time: each push is an act the logs show.
FLAGS = (
    *("--lease-duration", "3", "--resync-interval", "0.5", "--push-timeout", "5"),
    *("--token-check-interval", "1", "--health-interval", "1"),
)


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests(control_plane: ControlPlane) -> Iterator[ControlPlane]:
    with applied_manifests(control_plane) as applied:
        yield applied


@pytest.fixture(scope="module")
def server_ip(
    netns_network: NetnsNetwork,
    gremlin_runtime: ServerRuntime,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """One Gremlin Server alone in a network namespace."""
    run_dir = tmp_path_factory.mktemp("trust-gremlin")
    with netns_servers(netns_network, gremlin_runtime, run_dir, 1) as [(host, _)]:
        yield host.ip


@pytest.fixture(scope="module")
def operator(
    manifests: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    log = tmp_path_factory.mktemp("trust-operator") / "operator.log"
    with running_operator(manifests, log, *FLAGS) as process:
        yield process


@dataclass
class Cluster:
    """A namespace with the Service and EndpointSlice of the server, and the example cluster."""

    api: k8s.ApiClient
    control_plane: ControlPlane
    namespace: str
    server: str
    work_dir: Path
    token: str = ""
    sidecars: list[SidecarProcess] = field(default_factory=list)

    def apply(self, allow_plain_http: bool = False) -> None:
        documents = (REPO / "manifests/examples/gremlincluster.yaml").read_text()
        if allow_plain_http:
            documents = documents.replace(
                "  sidecar:\n", "  sidecar:\n    allowPlainHttpPush: true\n", 1
            )
        self.control_plane.kubectl("apply", "-n", self.namespace, "-f", "-", input_text=documents)
        self.token = wait_for(lambda: self.files().get("token"), SETTLE, "the token Secret")

    def files(self) -> dict[str, str]:
        return token_files(self.api, self.namespace)

    def client(self, name: str, *, tls: bool = True) -> SidecarProcess:
        """A client pod and its real sidecar: admin API over TLS with the Secret's certificate
        and the pod annotated so (as injected), or plain HTTP without the annotation."""
        files = self.files() if tls else {}
        sidecar = SidecarProcess(self.token, self.work_dir / name, files=files).start()
        self.sidecars.append(sidecar)
        create_client_pod(self.api, self.namespace, name, sidecar.admin_port, admin_tls=tls)
        return sidecar

    def holds_the_list(self, sidecar: SidecarProcess) -> int | None:
        generation, hosts = sidecar.host_list()
        return generation if hosts == [f"{self.server}:{GREMLIN_PORT}"] else None

    def status(self) -> dict[str, Any]:
        return dict(cluster_object(self.api, self.namespace).get("status") or {})

    def events(self, reason: str) -> list[k8s.CoreV1Event]:
        items = k8s.CoreV1Api(self.api).list_namespaced_event(self.namespace).items
        return [e for e in items if e.reason == reason]


@pytest.fixture
def cluster(
    kube_admin: k8s.ApiClient,
    manifests: ControlPlane,
    server_ip: str,
    namespace: str,
    tmp_path: Path,
) -> Iterator[Cluster]:
    service = create_service(kube_admin, namespace, "gremlin", GREMLIN_PORT)
    apply_endpoint_slice(
        kube_admin,
        namespace,
        "gremlin",
        [EndpointSpec(server_ip, pod_name="gremlin-0")],
        port=GREMLIN_PORT,
        owner=service,
    )
    found = Cluster(kube_admin, manifests, namespace, server_ip, tmp_path)
    try:
        yield found
    finally:
        for sidecar in found.sidecars:
            sidecar.stop()


# -- one leader at a time ------------------------------------------------------------------------

LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\] \S+\s+\[\w+\s*\] (.*)$")


@dataclass(frozen=True)
class Event:
    at: datetime
    kind: str  # "lead", "stop" or "act"
    text: str


def timeline(log: Path) -> list[Event]:
    """What a replica's own log says it did: started or stopped leading, pushed, wrote a
    status. Times are the log's own timestamps (both replicas run on this machine's clock)."""
    events = []
    for line in log.read_text(errors="replace").splitlines():
        match = LINE.match(line)
        if match is None:
            continue
        at = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f")
        text = match[2]
        if text.startswith("leading:"):
            events.append(Event(at, "lead", text))
        elif text.startswith(("stopped leading:", "standing by:")):  # the latter: before #22
            events.append(Event(at, "stop", text))
        elif "pushing generation" in text or "writing the status" in text:
            events.append(Event(at, "act", text))
    return events


def leading_spans(events: list[Event], end: datetime) -> list[tuple[datetime, datetime]]:
    """From each "leading" line to the next "stopped leading" line (or ``end``)."""
    spans, since = [], None
    for event in events:
        if event.kind == "lead" and since is None:
            since = event.at
        elif event.kind == "stop" and since is not None:
            spans.append((since, event.at))
            since = None
    if since is not None:
        spans.append((since, end))
    return spans


def acts(events: list[Event]) -> list[Event]:
    return [e for e in events if e.kind == "act"]


def lease_holder(api: k8s.ApiClient) -> str:
    lease = k8s.CoordinationV1Api(api).read_namespaced_lease(
        "gremlinlb-operator", "gremlinlb-system"
    )
    return str(lease.spec.holder_identity or "") if lease.spec else ""


def identity(process: OperatorProcess) -> str:
    return f"{socket.gethostname()}-{process.pid}"


Spans = list[tuple[datetime, datetime]]


def assert_one_leader_at_a_time(a_log: Path, b_log: Path) -> tuple[Spans, Spans]:
    """No two leading spans overlap, and each replica acts only within its own."""
    a_events, b_events = timeline(a_log), timeline(b_log)
    end = max(e.at for e in [*a_events, *b_events])
    a_spans, b_spans = leading_spans(a_events, end), leading_spans(b_events, end)
    for name, spans, events in (("a", a_spans, a_events), ("b", b_spans, b_events)):
        outside = [e for e in acts(events) if not any(s <= e.at <= t for s, t in spans)]
        assert not outside, f"replica {name} acted while not leading: {outside[:3]}"
    overlaps = [(x, y) for x in a_spans for y in b_spans if x[0] < y[1] and y[0] < x[1]]
    assert not overlaps, f"both replicas leading at once: a {a_spans}, b {b_spans}"
    return a_spans, b_spans


def through(proxy: FaultProxy, control_plane: ControlPlane, path: Path) -> Path:
    """The operator's kubeconfig, with the apiserver reached through ``proxy``."""
    config = json.loads(control_plane.operator_kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://{proxy.address}"
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


def test_a_leader_cut_off_from_the_apiserver_stops_acting_before_the_other_replica_leads(
    cluster: Cluster, operator: OperatorProcess, tmp_path: Path
) -> None:
    cp = cluster.control_plane
    operator.stop()  # a clean stop releases the Lease: replica a takes it at once
    try:
        with FaultProxy(f"127.0.0.1:{cp.apiserver_port}") as proxy:
            kubeconfig = through(proxy, cp, tmp_path / "through-proxy.kubeconfig")
            a = OperatorProcess(
                cp, tmp_path / "a.log", *FLAGS, kubeconfig=kubeconfig, log_level="DEBUG"
            )
            b = OperatorProcess(cp, tmp_path / "b.log", *FLAGS, log_level="DEBUG")
            try:
                a.start()
                wait_for(lambda: lease_holder(cluster.api) == identity(a), SETTLE, "a leading")
                cluster.apply()
                sidecar = cluster.client("app-0")
                wait_for(lambda: cluster.holds_the_list(sidecar), SETTLE, "the list pushed")
                b.start()
                proxy.stalled = True  # a's calls to the apiserver neither fail nor return
                wait_for(
                    lambda: any(e.kind == "lead" for e in timeline(b.log_path)),
                    SETTLE,
                    "replica b leading",
                )
                # a stops within its renew deadline; bounded well past today's 30 s call limit
                # so that a replica that only stops once its calls fail is seen doing so.
                wait_for(
                    lambda: any(e.kind == "stop" for e in timeline(a.log_path)),
                    45.0,
                    "replica a stopping",
                )
                assert_one_leader_at_a_time(a.log_path, b.log_path)
                wait_for(lambda: len(acts(timeline(b.log_path))) >= 3, SETTLE, "b pushing")
                proxy.stalled = False  # a reaches the apiserver again, and finds b leading
                seen = len(acts(timeline(b.log_path)))
                wait_for(lambda: len(acts(timeline(b.log_path))) >= seen + 3, SETTLE, "b on")
                assert lease_holder(cluster.api) == identity(b)
            finally:
                a.stop()
                b.stop()
    finally:
        operator.start()
    wait_for(lambda: lease_holder(cluster.api) == identity(operator), SETTLE, "operator back")

    a_spans, b_spans = assert_one_leader_at_a_time(a.log_path, b.log_path)
    a_events, b_events = timeline(a.log_path), timeline(b.log_path)
    assert acts(a_events), "a never acted"
    assert acts(b_events), "b never acted"
    assert len(a_spans) == 1, a_spans
    assert len(b_spans) == 1, b_spans
    assert a_spans[0][1] < b_spans[0][0]  # a stopped before b started


# -- the token only over verified TLS ------------------------------------------------------------


def test_a_pod_whose_sidecar_serves_plain_http_gets_no_push_and_the_cluster_says_why(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    cluster.apply()
    wait_for(lambda: cluster.holds_the_list(cluster.client("app-0")), SETTLE, "a TLS push")
    plain = cluster.client("plain", tls=False)

    def reported() -> dict[str, Any] | None:
        status = cluster.status()
        degraded = condition({"status": status}, "Degraded")
        refused = (status.get("sidecars") or {}).get("plainHttpRefused")
        return degraded if refused == ["plain"] else None

    degraded = wait_for(reported, SETTLE, "the plain HTTP pod reported")
    assert degraded["reason"] == "SidecarsWithoutAdminTLS", degraded
    assert "spec.sidecar.allowPlainHttpPush" in degraded["message"]
    (event,) = wait_for(lambda: cluster.events("PlainHttpPushRefused"), SETTLE, "an event")
    assert event.type == "Warning"
    assert "plain" in (event.message or "")
    assert plain.host_list() == (0, [])  # never pushed to: the token never left in clear


def test_a_cluster_that_allows_plain_http_pushes_to_a_pod_without_admin_tls(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    cluster.apply(allow_plain_http=True)
    plain = cluster.client("plain", tls=False)
    wait_for(lambda: cluster.holds_the_list(plain), SETTLE, "the plain HTTP push")
    assert not (cluster.status().get("sidecars") or {}).get("plainHttpRefused")


def test_the_apiserver_refuses_a_plain_http_opt_in_that_is_not_a_boolean(
    cluster: Cluster,
) -> None:
    documents = (REPO / "manifests/examples/gremlincluster.yaml").read_text()
    documents = documents.replace("  sidecar:\n", '  sidecar:\n    allowPlainHttpPush: "yes"\n', 1)
    done = cluster.control_plane.kubectl(
        "apply", "-n", cluster.namespace, "-f", "-", input_text=documents, check=False
    )
    assert done.returncode != 0
    assert "spec.sidecar.allowPlainHttpPush" in done.stderr, done.stderr
    assert "boolean" in done.stderr, done.stderr


# -- a generation claimed in a 409 ---------------------------------------------------------------


class HostileSidecar:
    """An HTTPS admin API with the cluster's own certificate (what a compromised client pod
    holds) that answers every push with a 409 claiming an absurd generation."""

    CLAIM = 2**62

    def __init__(self, cert: str, key: str, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "tls.crt").write_text(cert)
        (directory / "tls.key").write_text(key)
        claim = self.CLAIM
        self.puts = 0
        hostile = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                hostile.puts += 1
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._answer(409, {"error": "stale generation", "generation": claim})

            def do_GET(self) -> None:
                self._answer(503, {"generation": claim, "hosts": {}})

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(directory / "tls.crt", directory / "tls.key")
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_sidecar_claiming_an_absurd_generation_moves_no_generation(
    cluster: Cluster, operator: OperatorProcess, tmp_path: Path
) -> None:
    cluster.apply()
    honest = cluster.client("app-0")
    before = wait_for(lambda: cluster.holds_the_list(honest), SETTLE, "the first push")
    files = cluster.files()
    hostile = HostileSidecar(files["tls.crt"], files["tls.key"], tmp_path / "hostile")
    try:
        create_client_pod(cluster.api, cluster.namespace, "hostile", hostile.port, admin_tls=True)

        def refused() -> dict[str, Any] | None:
            # An entry saying a push is still under way is a moment of the status, not its
            # verdict on the reply: wait past it.
            out = (cluster.status().get("sidecars") or {}).get("outOfSync") or []
            return next(
                (
                    s
                    for s in out
                    if s["pod"] == "hostile"
                    and hostile.puts >= 2
                    and "push in progress" not in s["error"]
                ),
                None,
            )

        entry = wait_for(refused, SETTLE, "the hostile sidecar reported")
        assert "not believed" in entry["error"], entry
        status = cluster.status()
        assert status["hostsGeneration"] < before + 1000, status["hostsGeneration"]
        assert honest.host_list()[0] == status["hostsGeneration"]
    finally:
        hostile.close()
