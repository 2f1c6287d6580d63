"""The operator on a real control plane, with its real RBAC, real Gremlin Servers and sidecars.

* kube-apiserver + etcd (session fixture), the CRD and manifests/ applied with kubectl;
* the operator as its own process, authenticated as the ServiceAccount
  gremlinlb-system/gremlinlb-operator (no system:masters: only what manifests/10-rbac.yaml
  grants), its admission webhook on loopback;
* four Gremlin Servers, each in its own network namespace at a 10.213.0.x address that appears
  in the Service's EndpointSlice, written by the tests: for the moments a real controller does
  not produce on demand (an endpoint turning ready at a known instant, an apiserver restart,
  an unreachable sidecar). What the real controllers do with the manifests as written is
  checked in test_cluster_e2e.py;
* sidecars as real ``gremlinlb sidecar`` processes on loopback, one per client "pod".

Each answer through a sidecar names the server that ran it (every server holds one vertex
``server`` with its index), so "traffic reaches a server" is observed, not inferred.
"""

from __future__ import annotations

import base64
import datetime
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from gremlinlb import certificates as certs
from gremlinlb.devservers import GremlinServerProcess, ServerRuntime, with_traversal_source
from tests.devcluster import (
    ControlPlane,
    EndpointSpec,
    NetnsHost,
    NetnsNetwork,
    apply_endpoint_slice,
    can_i,
    create_namespace,
    create_running_pod,
    create_service,
    purge_namespace,
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
    free_port,
    http,
    netns_servers,
    operator_may,
    restart_sidecar_container,
    running_operator,
    served_by,
    token_files,
    wait_for,
)

pytestmark = pytest.mark.integration

SERVERS = 4
#: Generous bounds: the assertions are about behaviour; measured times are printed.
SETTLE = 30.0
PUSH_TIMEOUT = 20.0  # long on purpose: a hung sidecar must not hold the others back meanwhile
OPERATOR_FLAGS = (
    *("--push-timeout", str(PUSH_TIMEOUT), "--resync-interval", "600"),
    *("--token-check-interval", "1", "--lease-duration", "3"),
    *("--webhook-cert-check-interval", "1", "--health-interval", "1"),
)


# -- module fixtures ----------------------------------------------------------------------------


def example_documents() -> list[dict[str, Any]]:
    """manifests/examples/gremlincluster.yaml: the GremlinCluster and its RoleBinding."""
    text = (REPO / "manifests/examples/gremlincluster.yaml").read_text()
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.fixture(scope="module")
def cluster_manifests(control_plane: ControlPlane) -> Iterator[ControlPlane]:
    with applied_manifests(control_plane) as applied:
        yield applied


@dataclass
class Servers:
    hosts: list[NetnsHost]
    processes: list[GremlinServerProcess]

    def endpoint(self, index: int, **conditions: Any) -> EndpointSpec:
        return EndpointSpec(self.hosts[index].ip, pod_name=f"gremlin-{index}", **conditions)

    def address(self, index: int) -> str:
        return f"{self.hosts[index].ip}:{GREMLIN_PORT}"


def _marker(index: int) -> Callable[[Any], None]:
    def add(g: Any) -> None:
        g.add_v("server").property("name", str(index)).iterate()

    return add


@pytest.fixture(scope="module")
def servers(
    netns_network: NetnsNetwork,
    gremlin_runtime: ServerRuntime,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Servers]:
    """Four Gremlin Servers, each alone in a network namespace, started in parallel, once."""
    run_dir = tmp_path_factory.mktemp("netns-gremlin")
    with netns_servers(netns_network, gremlin_runtime, run_dir, SERVERS) as started:
        for index, (_, process) in enumerate(started):
            with_traversal_source(process.address, _marker(index), timeout=30)
        yield Servers([h for h, _ in started], [p for _, p in started])


@pytest.fixture(scope="module")
def operator(
    cluster_manifests: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with running_operator(cluster_manifests, log, *OPERATOR_FLAGS) as process:
        yield process


# -- per-test scenario ---------------------------------------------------------------------------


@dataclass
class Scenario:
    api: k8s.ApiClient
    control_plane: ControlPlane
    namespace: str
    servers: Servers
    work_dir: Path
    service: k8s.V1Service
    token: str = ""
    sidecars: dict[str, SidecarProcess] = field(default_factory=dict)

    def set_endpoints(self, *endpoints: EndpointSpec) -> float:
        apply_endpoint_slice(
            self.api,
            self.namespace,
            "gremlin",
            list(endpoints),
            port=GREMLIN_PORT,
            owner=self.service,
        )
        return time.monotonic()

    def apply_example(self) -> None:
        path = REPO / "manifests" / "examples" / "gremlincluster.yaml"
        self.control_plane.kubectl("apply", "-n", self.namespace, "-f", str(path))
        self.token = wait_for(self.stored_token, SETTLE, "the cluster's token Secret")

    def stored_token(self) -> str | None:
        return self.secret_files().get("token")

    def secret_files(self) -> dict[str, str]:
        """The token Secret's keys as its mounted volume shows them ({} while it is absent)."""
        return token_files(self.api, self.namespace)

    def add_client(
        self,
        name: str,
        files: dict[str, str] | None = None,
        *flags: str,
        zone: str | None = None,
    ) -> SidecarProcess:
        """A client pod as injected: its sidecar serves the admin API over TLS with the
        certificate of the token Secret (or ``files``), and the pod says so; ``flags`` are
        more sidecar flags (what the webhook's environment would set, e.g. ``--zone``);
        ``zone`` is the pod's zone label (and then its sidecar's ``--zone``)."""
        files = self.secret_files() if files is None else files
        if zone is not None:
            flags = (*flags, "--zone", zone)
        sidecar = SidecarProcess(self.token, self.work_dir / name, *flags, files=files).start()
        self.sidecars[name] = sidecar
        create_client_pod(
            self.api, self.namespace, name, sidecar.admin_port, admin_tls=True, zone=zone
        )
        return sidecar

    def status(self) -> dict[str, Any]:
        return cluster_object(self.api, self.namespace)

    def wait_hosts(self, sidecar: SidecarProcess, indexes: list[int]) -> tuple[int, list[str]]:
        wanted = sorted(self.servers.address(i) for i in indexes)

        def holds() -> tuple[int, list[str]] | None:
            found = sidecar.host_list()
            return found if found[1] == wanted else None

        return wait_for(holds, SETTLE, f"sidecar hosts {wanted}", interval=0.02)

    def close(self) -> None:
        for sidecar in self.sidecars.values():
            sidecar.stop()


@pytest.fixture
def scenario(
    kube_admin: k8s.ApiClient,
    cluster_manifests: ControlPlane,
    operator: OperatorProcess,
    servers: Servers,
    namespace: str,
    tmp_path: Path,
) -> Iterator[Scenario]:
    """A namespace with the Gremlin Servers' Service and a slice of servers 0-2, all ready."""
    service = create_service(kube_admin, namespace, "gremlin", GREMLIN_PORT)
    found = Scenario(kube_admin, cluster_manifests, namespace, servers, tmp_path, service)
    found.set_endpoints(*(servers.endpoint(i) for i in range(3)))
    try:
        yield found
    finally:
        found.close()


@pytest.fixture
def ready(scenario: Scenario) -> Scenario:
    """The example GremlinCluster applied and one client pod whose sidecar holds servers 0-2."""
    scenario.apply_example()
    scenario.wait_hosts(scenario.add_client("app-0"), [0, 1, 2])
    return scenario


# -- the tests ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bound_namespace(cluster_manifests: ControlPlane, kube_admin: k8s.ApiClient) -> Iterator[str]:
    """A namespace where the example's RoleBinding grants the operator its workload role."""
    name = create_namespace(kube_admin, prefix="t-rbac-bound-")
    binding = next(d for d in example_documents() if d["kind"] == "RoleBinding")
    cluster_manifests.kubectl("apply", "-n", name, "-f", "-", input_text=yaml.safe_dump(binding))
    try:
        yield name
    finally:
        purge_namespace(kube_admin, name)


#: (verb, resource, API group, namespace: "bound" / "unbound" / "system" / cluster-wide, name)
Access = tuple[str, str, str, str | None, str | None]

ALLOWED: list[Access] = [
    ("watch", "gremlinclusters", "gremlinlb.io", None, None),
    ("patch", "gremlinclusters/status", "gremlinlb.io", "unbound", "graph"),
    ("list", "customresourcedefinitions", "apiextensions.k8s.io", None, None),
    ("update", "mutatingwebhookconfigurations", "admissionregistration.k8s.io", None,
     "gremlinlb-sidecar-injector"),
    ("watch", "endpointslices", "discovery.k8s.io", "bound", None),
    ("watch", "pods", "", "bound", None),
    ("get", "services", "", "bound", "gremlin"),
    ("get", "secrets", "", "bound", "graph-gremlinlb-token"),
    ("create", "secrets", "", "bound", None),
    ("update", "secrets", "", "bound", "graph-gremlinlb-token"),
    ("create", "events", "", "bound", None),
    ("update", "secrets", "", "system", "gremlinlb-webhook-tls"),
    ("get", "secrets", "", "system", "gremlinlb-push-ca"),
    ("update", "leases", "coordination.k8s.io", "system", "gremlinlb-operator"),
]  # fmt: skip

REFUSED: list[Access] = [
    ("list", "secrets", "", "bound", None),
    ("watch", "secrets", "", "bound", None),
    ("delete", "secrets", "", "bound", "graph-gremlinlb-token"),
    ("get", "secrets", "", "unbound", "graph-gremlinlb-token"),
    ("create", "secrets", "", "unbound", None),
    ("get", "secrets", "", "kube-system", "anything"),
    ("list", "secrets", "", None, None),
    ("get", "secrets", "", "system", "some-other-secret"),
    ("list", "secrets", "", "system", None),
    ("list", "pods", "", None, None),
    ("watch", "pods", "", "unbound", None),
    ("list", "endpointslices", "discovery.k8s.io", None, None),
    ("create", "pods", "", "bound", None),
    ("patch", "pods", "", "bound", "app-0"),
    ("delete", "pods", "", "bound", "app-0"),
    ("delete", "gremlinclusters", "gremlinlb.io", "bound", "graph"),
    ("update", "gremlinclusters", "gremlinlb.io", "bound", "graph"),
    ("update", "mutatingwebhookconfigurations", "admissionregistration.k8s.io", None,
     "someone-elses"),
    ("update", "leases", "coordination.k8s.io", "system", "someone-elses"),
    ("create", "rolebindings", "rbac.authorization.k8s.io", "bound", None),
]  # fmt: skip


def _ask(api: k8s.ApiClient, bound: str, access: Access) -> bool:
    verb, resource, group, where, name = access
    namespace = {"bound": bound, "unbound": "default", "system": "gremlinlb-system"}.get(
        where or "", where
    )
    resource, _, subresource = resource.partition("/")
    return operator_may(
        api,
        verb,
        resource,
        group=group,
        namespace=namespace,
        name=name,
        subresource=subresource or None,
    )


@pytest.mark.parametrize("access", ALLOWED, ids=lambda a: "-".join(p for p in a if p))
def test_the_operator_is_granted_what_it_needs(
    kube_admin: k8s.ApiClient, bound_namespace: str, access: Access
) -> None:
    assert _ask(kube_admin, bound_namespace, access)


@pytest.mark.parametrize("access", REFUSED, ids=lambda a: "-".join(p for p in a if p))
def test_the_operator_is_refused_everything_else(
    kube_admin: k8s.ApiClient, bound_namespace: str, access: Access
) -> None:
    assert not _ask(kube_admin, bound_namespace, access)


def test_the_operator_process_itself_holds_no_more_than_its_role(
    operator: OperatorProcess, kube_operator: k8s.ApiClient
) -> None:
    assert can_i(kube_operator, "watch", "gremlinclusters", group="gremlinlb.io")
    assert not can_i(kube_operator, "list", "secrets")
    assert not can_i(kube_operator, "get", "secrets", namespace="kube-system", name="x")


def test_a_cluster_in_a_namespace_without_the_binding_says_what_to_grant(
    scenario: Scenario,
) -> None:
    cluster = next(d for d in example_documents() if d["kind"] == "GremlinCluster")
    scenario.control_plane.kubectl(
        "apply", "-n", scenario.namespace, "-f", "-", input_text=yaml.safe_dump(cluster)
    )

    def forbidden() -> dict[str, Any] | None:
        ready = condition(scenario.status(), "Ready")
        return ready if ready.get("reason") == "Forbidden" else None

    ready = wait_for(forbidden, SETTLE, "the Forbidden condition")
    assert ready["status"] == "False"
    assert (
        f"kubectl create rolebinding gremlinlb-operator -n {scenario.namespace}"
        in (ready["message"])
    )
    assert "--clusterrole=gremlinlb-operator-workload" in ready["message"]
    scenario.apply_example()  # now with the RoleBinding: the operator gets to work
    sidecar = scenario.add_client("app-0")
    scenario.wait_hosts(sidecar, [0, 1, 2])
    wait_for(
        lambda: condition(scenario.status(), "Ready").get("reason") == "EndpointsAvailable",
        SETTLE * 2,
        "Ready once the RoleBinding exists",
    )


def test_applying_the_example_cluster_makes_it_ready_with_every_sidecar_holding_the_list(
    scenario: Scenario,
) -> None:
    scenario.apply_example()
    sidecars = [scenario.add_client(f"app-{i}") for i in range(2)]

    def ready_and_synced() -> dict[str, Any] | None:
        obj = scenario.status()
        status = obj.get("status") or {}
        sidecar_status = status.get("sidecars") or {}
        if condition(obj, "Ready").get("status") == "True" and sidecar_status.get("inSync") == 2:
            return obj
        return None

    obj = wait_for(ready_and_synced, SETTLE, "Ready with both sidecars in sync")
    status = obj["status"]
    assert status["readyEndpoints"] == 3
    assert status["totalEndpoints"] == 3
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert condition(obj, "Degraded")["status"] == "False"
    wanted = sorted(scenario.servers.address(i) for i in range(3))
    for sidecar in sidecars:
        assert sidecar.host_list() == (status["hostsGeneration"], wanted)
    events = k8s.CoreV1Api(scenario.api).list_namespaced_event(scenario.namespace).items
    assert {"TokenCreated", "HostsChanged"} <= {e.reason for e in events}
    printed = scenario.control_plane.kubectl("get", "gremlinclusters", "-n", scenario.namespace)
    assert printed.stdout.split("\n")[1].split()[:5] == [
        "graph",
        "3",
        "3",
        "2",
        "EndpointsAvailable",
    ]


def test_a_fourth_server_gets_traffic_soon_after_its_endpoint_turns_ready(
    ready: Scenario,
) -> None:
    ready.set_endpoints(
        *(ready.servers.endpoint(i) for i in range(3)), ready.servers.endpoint(3, ready=False)
    )
    sidecar = ready.sidecars["app-0"]
    changed = ready.set_endpoints(*(ready.servers.endpoint(i) for i in range(4)))
    # Measure until the first answer from server 3 through the sidecar.
    first_answer = wait_for(
        lambda: "3" in served_by(sidecar.address, 4) and time.monotonic(),
        SETTLE,
        "an answer from the fourth server",
        interval=0.01,
    )
    elapsed = first_answer - changed
    print(f"\nendpoint ready -> first request served by the new server: {elapsed:.3f} s")
    assert elapsed < 10.0  # the requirement is 2 s; this bound only catches a broken push path
    assert set(served_by(sidecar.address, 40)) == {"0", "1", "2", "3"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"healthCheck": {"rise": 0}}, "spec.healthCheck.rise"),
        ({"policy": "random"}, 'supported values: "round_robin", "least_in_flight"'),
        ({"buffer": {"maxWait": -1}}, "spec.buffer.maxWait"),
        (
            {"healthCheck": {"interval": 1e-6}},
            "spec.healthCheck.interval in body should be greater than or equal to 0.1",
        ),
        ({"keepaliveInterval": 0.5}, "spec.keepaliveInterval: Invalid value: 0.5: must be 0 (off)"),
        ({"service": {"port": 8182}}, "spec.service.name: Required value"),
        ({"tls": {"caSecretRef": {"name": "ca"}}}, "tls.caSecretRef is set but tls.enabled is"),
        ({"sidecar": {"adminPort": 8182}}, "sidecar.gremlinPort and sidecar.adminPort must differ"),
    ],
    ids=[
        "rise-0",
        "unknown-policy",
        "negative-wait",
        "health-interval-below-its-floor",
        "keepalive-below-its-floor",
        "no-service-name",
        "ca-without-tls",
        "same-ports",
    ],
)
def test_an_invalid_cluster_is_refused_by_the_apiserver_with_a_useful_message(
    cluster_manifests: ControlPlane, namespace: str, change: dict[str, Any], message: str
) -> None:
    example = next(d for d in example_documents() if d["kind"] == "GremlinCluster")
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(example["spec"].get(key), dict):
            if key == "service":
                example["spec"][key] = value
            else:
                example["spec"][key].update(value)
        else:
            example["spec"][key] = value
    refused = cluster_manifests.kubectl(
        "apply", "-n", namespace, "-f", "-", input_text=yaml.safe_dump(example), check=False
    )
    assert refused.returncode != 0
    assert message in refused.stderr, refused.stderr
    listed = cluster_manifests.kubectl("get", "gremlinclusters", "-n", namespace, "-o", "name")
    assert listed.stdout.strip() == ""


ZONES = {0: "zone-a", 1: "zone-a", 2: "zone-b", 3: "zone-b"}


def _states(sidecar: SidecarProcess) -> dict[str, tuple[str, str | None]]:
    """The sidecar's hosts: address -> (state, zone)."""
    status, body = http("GET", f"{sidecar.admin}/v1/hosts")
    assert status == 200, body
    return {h["address"]: (h["state"], h["zone"]) for h in body["hosts"]}


def _share_in(zone: str, names: list[str], zones: dict[int, str]) -> float:
    """The share of answers (server names) that came from a server in `zone`."""
    return sum(1 for n in names if zones[int(n)] == zone) / len(names)


def _local_share(names: list[str]) -> float:
    return _share_in("zone-a", names, ZONES)


def test_a_sidecar_keeps_its_requests_in_its_zone_and_spills_over_when_the_zone_is_down(
    scenario: Scenario,
) -> None:
    servers = scenario.servers
    scenario.set_endpoints(*(servers.endpoint(i, zone=z, hint=z) for i, z in ZONES.items()))
    scenario.apply_example()
    fast = {"spec": {"healthCheck": {"interval": 1, "timeout": 1, "fall": 1}}}
    scenario.control_plane.kubectl(
        "patch",
        "gremlincluster",
        "graph",
        "-n",
        scenario.namespace,
        "--type=merge",
        "-p",
        json.dumps(fast),
    )
    sidecar = scenario.add_client("app-a", None, "--zone", "zone-a")
    scenario.wait_hosts(sidecar, list(ZONES))
    wanted = {servers.address(i): z for i, z in ZONES.items()}
    wait_for(
        lambda: {a: zone for a, (_, zone) in _states(sidecar).items()} == wanted,
        SETTLE,
        "every host with its zone in the sidecar",
    )
    healthy = served_by(sidecar.address, 200)
    print(f"\nzone-a share while zone-a is healthy: {_local_share(healthy):.3f}")
    assert _local_share(healthy) >= 0.9
    zones = wait_for(
        lambda: (
            [e.get("zone") for e in scenario.status().get("status", {}).get("endpoints", [])]
            or None
        ),
        SETTLE,
        "zones in the status",
    )
    assert zones == list(ZONES.values())

    local = [servers.processes[i] for i in (0, 1)]
    for process in local:
        process.pause()
    try:
        wait_for(
            lambda: all(
                _states(sidecar)[servers.address(i)][0] in ("down", "ejected") for i in (0, 1)
            ),
            SETTLE,
            "zone-a's hosts out of rotation",
        )
        spilled = served_by(sidecar.address, 100)
        print(f"zone-a share while zone-a is down: {_local_share(spilled):.3f}")
        assert set(spilled) <= {"2", "3"}
    finally:
        for process in local:
            process.resume()
    wait_for(
        lambda: all(_states(sidecar)[servers.address(i)][0] == "healthy" for i in (0, 1)),
        SETTLE,
        "zone-a's hosts back",
    )
    back = served_by(sidecar.address, 100)
    print(f"zone-a share once zone-a is back: {_local_share(back):.3f}")
    assert _local_share(back) >= 0.9


#: Servers by zone for the overload spec: one in zone-a, three in zone-b.
LOPSIDED = {0: "zone-a", 1: "zone-b", 2: "zone-b", 3: "zone-b"}


def test_sidecars_in_a_zone_with_more_clients_than_servers_spill_the_excess(
    scenario: Scenario,
) -> None:
    # 3 of 4 client pods in zone-a, 1 of 4 servers there: a sidecar in zone-a keeps
    # (1/4)/(3/4) = 1/3 of its reads in zone-a (Envoy's rule); the one in zone-b keeps all.
    servers = scenario.servers
    scenario.set_endpoints(*(servers.endpoint(i, zone=z, hint=z) for i, z in LOPSIDED.items()))
    scenario.apply_example()
    in_a = [scenario.add_client(f"app-a{i}", zone="zone-a") for i in range(3)]
    in_b = scenario.add_client("app-b", zone="zone-b")
    wanted = {"zone-a": 3, "zone-b": 1}

    def settled(sidecar: SidecarProcess) -> bool:
        states = _states(sidecar)
        return (
            http("GET", f"{sidecar.admin}/v1/hosts")[1].get("client_zones") == wanted
            and len(states) == len(LOPSIDED)
            and all(state == "healthy" for state, _ in states.values())
        )

    wait_for(
        lambda: all(settled(s) for s in (*in_a, in_b)),
        SETTLE,
        f"client zones {wanted} and four healthy hosts in every sidecar",
    )
    listed = [{"zone": "zone-a", "ready": 3}, {"zone": "zone-b", "ready": 1}]
    wait_for(
        lambda: scenario.status().get("status", {}).get("sidecars", {}).get("byZone") == listed,
        SETTLE,
        f"sidecars per zone in the status: {listed}",
    )
    plan = http("GET", f"{in_a[0].admin}/v1/hosts")[1]["zone_plans"]["all"]
    assert plan["local"] == pytest.approx(1 / 3)

    from_a = served_by(in_a[0].address, 200)
    from_b = served_by(in_b.address, 200)
    print(
        f"\nzone-a sidecar: {_share_in('zone-a', from_a, LOPSIDED):.3f} local (planned 0.333); "
        f"zone-b sidecar: {_share_in('zone-b', from_b, LOPSIDED):.3f} local (planned 1)"
    )
    assert 0.2 <= _share_in("zone-a", from_a, LOPSIDED) <= 0.5
    assert _share_in("zone-b", from_b, LOPSIDED) >= 0.9


def test_a_writer_service_makes_its_endpoints_writers_and_the_others_readers(
    ready: Scenario,
) -> None:
    writer_service = create_service(ready.api, ready.namespace, "gremlin-writer", GREMLIN_PORT)
    apply_endpoint_slice(
        ready.api,
        ready.namespace,
        "gremlin-writer",
        [ready.servers.endpoint(0)],
        port=GREMLIN_PORT,
        owner=writer_service,
    )
    ready.control_plane.kubectl(
        "patch",
        "gremlincluster",
        "graph",
        "-n",
        ready.namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"roles": {"writerService": "gremlin-writer"}}}),
    )
    sidecar = ready.sidecars["app-0"]

    def roles() -> dict[str, str] | None:
        status, body = http("GET", f"{sidecar.admin}/v1/hosts")
        assert status == 200, body
        found = {h["address"]: h["role"] for h in body["hosts"]}
        return found if "writer" in found.values() else None

    found = wait_for(roles, SETTLE, "roles in the sidecar's host list")
    assert found == {
        ready.servers.address(0): "writer",
        ready.servers.address(1): "reader",
        ready.servers.address(2): "reader",
    }
    assert set(served_by(sidecar.address, 40)) == {"1", "2"}  # reads go to the readers
    status = wait_for(
        lambda: (s := ready.status().get("status", {})).get("writers") is not None and s,
        SETTLE,
        "writers in the status",
    )
    assert (status["writers"], status["readers"]) == (1, 2)


def test_a_restarted_sidecar_gets_the_list_again(ready: Scenario) -> None:
    sidecar = ready.sidecars["app-0"]
    sidecar.stop()
    sidecar.start()  # same ports, empty state directory: it knows no host
    assert sidecar.host_list()[1] == []
    restart_sidecar_container(ready.api, ready.namespace, "app-0")  # what the kubelet reports
    ready.wait_hosts(sidecar, [0, 1, 2])


class Traffic:
    """Reads through a sidecar in a background thread, bounded in count and time."""

    def __init__(self, address: str, limit: int = 5000, seconds: float = 120.0) -> None:
        self.address = address
        self.limit = limit
        self.deadline = time.monotonic() + seconds
        self.answers = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        def work(g: Any) -> None:
            while (
                not self._stop.is_set()
                and self.answers < self.limit
                and time.monotonic() < self.deadline
            ):
                try:
                    g.V().has_label("server").values("name").next()
                    self.answers += 1
                except Exception as error:
                    self.failures.append(f"{type(error).__name__}: {error}")
                time.sleep(0.01)

        try:
            with_traversal_source(self.address, work, timeout=self.deadline - time.monotonic())
        except Exception as error:
            self.failures.append(f"{type(error).__name__}: {error}")

    def __enter__(self) -> Traffic:
        self._thread.start()
        wait_for(lambda: self.answers > 5, 20, "traffic to flow")
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)


def test_an_operator_restart_changes_nothing_for_traffic(
    ready: Scenario, operator: OperatorProcess
) -> None:
    sidecar = ready.sidecars["app-0"]
    before = sidecar.host_list()
    with Traffic(sidecar.address) as traffic:
        operator.restart()
        answered = traffic.answers
        wait_for(lambda: traffic.answers > answered + 20, 20, "traffic after the restart")
        assert sidecar.host_list() == before  # nothing new was pushed: same generation, hosts
    assert traffic.failures == []
    # The restarted operator still follows changes.
    ready.set_endpoints(ready.servers.endpoint(0), ready.servers.endpoint(1))
    generation, _ = ready.wait_hosts(sidecar, [0, 1])
    assert generation == before[0] + 1


def test_an_apiserver_restart_disturbs_no_traffic_and_changes_still_arrive(
    ready: Scenario,
) -> None:
    sidecar = ready.sidecars["app-0"]
    with Traffic(sidecar.address) as traffic:
        ready.control_plane.restart_apiserver()
        answered = traffic.answers
        wait_for(lambda: traffic.answers > answered + 20, 20, "traffic after the restart")
    assert traffic.failures == []
    ready.set_endpoints(ready.servers.endpoint(1), ready.servers.endpoint(2))
    ready.wait_hosts(sidecar, [1, 2])


def test_an_unreachable_sidecar_is_reported_and_does_not_delay_the_others(
    ready: Scenario,
) -> None:
    # A hung sidecar (accepts TCP, never answers) and a dead one (connection refused), both
    # declared with admin TLS (a pod without it gets no push at all).
    hung = __import__("socket").socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)
    try:
        port = hung.getsockname()[1]
        create_client_pod(ready.api, ready.namespace, "hung", port, admin_tls=True)
        create_client_pod(ready.api, ready.namespace, "dead", free_port(), admin_tls=True)
        healthy = ready.sidecars["app-0"]
        changed = ready.set_endpoints(ready.servers.endpoint(0), ready.servers.endpoint(2))
        ready.wait_hosts(healthy, [0, 2])
        elapsed = time.monotonic() - changed
        print(f"\nhealthy sidecar updated {elapsed:.3f} s after the change, next to a hung one")
        assert elapsed < PUSH_TIMEOUT  # the hung push (PUSH_TIMEOUT s) did not hold it back

        def reported() -> dict[str, Any] | None:
            # The healthy sidecar in sync too: a status can be written between a generation
            # and app-0's ack of it (0 in sync was read once in a full run under load).
            obj = ready.status()
            sidecars = obj["status"]["sidecars"]
            out = {s["pod"]: s for s in sidecars["outOfSync"]}
            return obj if {"hung", "dead"} <= set(out) and sidecars["inSync"] == 1 else None

        obj = wait_for(reported, SETTLE, "both unreachable sidecars in the status, app-0 in sync")
        sidecars = obj["status"]["sidecars"]
        assert sidecars["total"] == 3
        assert sidecars["inSync"] == 1
        degraded = condition(obj, "Degraded")
        assert (degraded["status"], degraded["reason"]) == ("True", "SidecarsOutOfSync")
        assert "dead" in degraded["message"]
        assert condition(obj, "Ready")["status"] == "True"
        events = wait_for(
            lambda: [
                e
                for e in k8s.CoreV1Api(ready.api).list_namespaced_event(ready.namespace).items
                if e.reason == "PushFailed" and "dead" in (e.message or "")
            ],
            SETTLE,
            "a PushFailed event for the dead sidecar",
        )
        assert events[0].type == "Warning"
    finally:
        hung.close()


def _backends_seen(scenario: Scenario, address: str, **counts: int) -> dict[str, Any] | None:
    """The cluster object once its status shows ``address`` with these sidecar counts."""
    obj = scenario.status()
    backends = (obj.get("status") or {}).get("backends") or {}
    hosts = {h["address"]: h for h in backends.get("hosts") or ()}
    found = hosts.get(address) or {}
    return obj if all(found.get(state) == n for state, n in counts.items()) else None


def test_the_status_shows_a_ready_endpoint_that_no_sidecar_can_reach(
    ready: Scenario, netns_network: NetnsNetwork
) -> None:
    silent = netns_network.add_host()  # ready to Kubernetes, but no Gremlin Server listens
    try:
        ready.set_endpoints(
            *(ready.servers.endpoint(i) for i in range(3)),
            EndpointSpec(silent.ip, pod_name="gremlin-silent"),
        )
        address = f"{silent.ip}:{GREMLIN_PORT}"
        obj = wait_for(
            lambda: _backends_seen(ready, address, down=1, healthy=0),
            SETTLE,
            "the unreachable server as the sidecar sees it",
        )
        assert obj["status"]["readyEndpoints"] == 4  # Kubernetes still calls it ready
        backends = obj["status"]["backends"]
        assert (backends["sidecarsReporting"], backends["sidecarsServing"]) == (1, 1)
        for index in range(3):
            seen = {h["address"]: h for h in backends["hosts"]}[ready.servers.address(index)]
            assert seen["healthy"] == 1
        degraded = condition(obj, "Degraded")
        assert (degraded["status"], degraded["reason"]) == ("True", "BackendsUnhealthy")
        assert f"{address}: 1 down of 1 sidecars" in degraded["message"]
        assert condition(obj, "Ready")["status"] == "True"
    finally:
        netns_network.remove_host(silent)


def test_a_sidecar_that_sees_no_healthy_backend_is_named_in_the_status(
    ready: Scenario, netns_network: NetnsNetwork
) -> None:
    silent = netns_network.add_host()
    try:
        ready.set_endpoints(EndpointSpec(silent.ip, pod_name="gremlin-silent"))
        address = f"{silent.ip}:{GREMLIN_PORT}"
        obj = wait_for(
            lambda: _backends_seen(ready, address, down=1),
            SETTLE,
            "the only server down as the sidecar sees it",
        )
        backends = obj["status"]["backends"]
        assert backends["sidecarsServing"] == 0
        assert backends["withoutHealthyBackend"] == ["app-0"]
        degraded = condition(obj, "Degraded")
        assert degraded["reason"] == "SidecarsWithoutHealthyBackend"
        assert "app-0" in degraded["message"]
        printed = ready.control_plane.kubectl("get", "gremlinclusters", "-n", ready.namespace)
        header, row = printed.stdout.split("\n")[:2]
        assert dict(zip(header.split(), row.split(), strict=False))["SERVING"] == "0"
        # The application's pod stays ready: its sidecar can still serve (and buffer).
        assert http("GET", f"{ready.sidecars['app-0'].admin}/readyz")[0] == 200
    finally:
        netns_network.remove_host(silent)


def test_the_webhook_injects_a_native_sidecar_into_a_labelled_pod(ready: Scenario) -> None:
    pod = k8s.CoreV1Api(ready.api).create_namespaced_pod(
        ready.namespace,
        k8s.V1Pod(
            metadata=k8s.V1ObjectMeta(name="web", labels={"gremlinlb.io/inject": "graph"}),
            spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="web", image="web:1")]),
        ),
    )
    assert pod.spec is not None
    assert pod.metadata is not None
    assert [c.name for c in pod.spec.containers] == ["web"]
    (sidecar,) = pod.spec.init_containers or []
    assert sidecar.name == "gremlinlb-sidecar"
    assert sidecar.restart_policy == "Always"  # native sidecar: starts before the app
    assert sidecar.image == "gremlinlb:0.1.0"
    assert [(p.name, p.container_port) for p in sidecar.ports or []] == [("gremlinlb-admin", 9901)]
    probes = {
        kind: probe.http_get.path if probe is not None and probe.http_get is not None else None
        for kind, probe in (
            ("startup", sidecar.startup_probe),
            ("readiness", sidecar.readiness_probe),
            ("liveness", sidecar.liveness_probe),
        )
    }
    assert probes == {"startup": "/healthz", "readiness": "/readyz", "liveness": "/healthz"}
    env = {e.name: e.value or "" for e in sidecar.env or []}
    assert env["GREMLINLB_LISTEN"] == "127.0.0.1:8182"
    assert env["GREMLINLB_TOKEN_FILE"] == "/var/run/gremlinlb/token/token"
    assert sorted(env["GREMLINLB_ENDPOINTS"].split(",")) == sorted(
        ready.servers.address(i) for i in range(3)
    )
    assert env["GREMLINLB_HEALTH_INTERVAL"] == "5.0"  # from the example cluster's spec
    volumes = {v.name: v for v in pod.spec.volumes or []}
    token_volume = volumes["gremlinlb-token"].secret
    assert token_volume is not None
    assert token_volume.secret_name == "graph-gremlinlb-token"
    assert (pod.metadata.annotations or {})["gremlinlb.io/injected"] == "graph"


def test_the_webhook_leaves_unlabelled_pods_alone(ready: Scenario) -> None:
    pod = k8s.CoreV1Api(ready.api).create_namespaced_pod(
        ready.namespace,
        k8s.V1Pod(
            metadata=k8s.V1ObjectMeta(name="other", labels={"app": "other"}),
            spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="other", image="other:1")]),
        ),
    )
    assert pod.spec is not None
    assert pod.metadata is not None
    assert pod.spec.init_containers is None
    assert [c.name for c in pod.spec.containers] == ["other"]
    assert "gremlinlb.io/injected" not in (pod.metadata.annotations or {})


def test_the_webhook_refuses_a_pod_naming_an_unknown_cluster(ready: Scenario) -> None:
    with pytest.raises(ApiException) as refused:
        create_running_pod(
            ready.api,
            ready.namespace,
            "lost",
            "127.0.0.1",
            labels={"gremlinlb.io/inject": "grpah"},
        )
    assert refused.value.status == 400
    body = str(refused.value.body)
    assert "no GremlinCluster named 'grpah'" in body
    assert "GremlinClusters there: graph" in body


def test_pushes_travel_over_tls_to_sidecars_with_the_push_cas_certificate(
    ready: Scenario,
) -> None:
    files = ready.secret_files()
    certificate = x509.load_pem_x509_certificate(files["tls.crt"].encode())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [f"graph.{ready.namespace}.gremlinlb-sidecar"]
    sidecar = ready.sidecars["app-0"]
    assert sidecar.admin.startswith("https://")
    assert sidecar.host_list()[1] == sorted(ready.servers.address(i) for i in range(3))


def test_a_sidecar_with_a_certificate_from_another_ca_is_never_sent_the_token(
    ready: Scenario,
) -> None:
    impostor = certs.generate([f"graph.{ready.namespace}.gremlinlb-sidecar"])
    files = {"tls.crt": impostor.cert_pem.decode(), "tls.key": impostor.key_pem.decode()}
    sidecar = ready.add_client("impostor", files=files)

    def refused() -> dict[str, Any] | None:
        out = {s["pod"]: s for s in ready.status()["status"]["sidecars"]["outOfSync"]}
        return out.get("impostor")

    entry = wait_for(refused, SETTLE, "the impostor reported out of sync")
    assert "certificate" in entry["error"].lower(), entry
    assert sidecar.host_list() == (0, [])


def test_the_token_secret_is_owned_by_its_cluster_which_carries_no_finalizer(
    ready: Scenario,
) -> None:
    obj = ready.status()
    assert not obj["metadata"].get("finalizers")
    secret = k8s.CoreV1Api(ready.api).read_namespaced_secret(
        "graph-gremlinlb-token", ready.namespace
    )
    assert secret.metadata is not None
    owners = [(o.kind, o.name, o.uid, o.controller) for o in secret.metadata.owner_references or []]
    assert owners == [("GremlinCluster", "graph", obj["metadata"]["uid"], True)]


def test_a_cluster_is_deleted_at_once_while_the_operator_is_down(
    ready: Scenario, operator: OperatorProcess
) -> None:
    operator.stop()
    try:
        ready.control_plane.kubectl(
            "delete", "gremlincluster", "graph", "-n", ready.namespace, "--timeout=15s"
        )
        listed = ready.control_plane.kubectl(
            "get", "gremlinclusters", "-n", ready.namespace, "-o", "name"
        )
        assert listed.stdout.strip() == ""
    finally:
        operator.start()
    # The sidecars keep their last list: deleting the cluster never cuts traffic.
    assert set(served_by(ready.sidecars["app-0"].address, 12)) == {"0", "1", "2"}


def test_a_token_secret_without_a_token_is_replaced_not_recursed_on(scenario: Scenario) -> None:
    core = k8s.CoreV1Api(scenario.api)
    core.create_namespaced_secret(
        scenario.namespace,
        k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name="graph-gremlinlb-token"),
            string_data={"not-the-token": "x"},
        ),
    )
    scenario.apply_example()  # waits until the Secret holds a token
    scenario.wait_hosts(scenario.add_client("app-0"), [0, 1, 2])
    events = k8s.CoreV1Api(scenario.api).list_namespaced_event(scenario.namespace).items
    repaired = [e for e in events if e.reason == "TokenRepaired"]
    assert repaired, [e.reason for e in events]
    assert "no usable 'token' key" in (repaired[0].message or "")


def _in_sync(scenario: Scenario, count: int) -> dict[str, Any] | None:
    status = scenario.status().get("status") or {}
    sidecars = status.get("sidecars") or {}
    return status if sidecars.get("inSync") == count and sidecars.get("total") == count else None


def test_a_deleted_token_secret_is_recreated_and_every_sidecar_follows_the_new_token(
    ready: Scenario,
) -> None:
    second = ready.add_client("app-1")
    ready.wait_hosts(second, [0, 1, 2])
    old = ready.token
    k8s.CoreV1Api(ready.api).delete_namespaced_secret("graph-gremlinlb-token", ready.namespace)
    new = wait_for(lambda: (t := ready.stored_token()) != old and t, SETTLE, "a new token Secret")
    # Pushes with the new token are refused until the kubelet updates the mounted files.
    ready.set_endpoints(ready.servers.endpoint(0), ready.servers.endpoint(1))
    refused = wait_for(
        lambda: [
            s
            for s in (ready.status().get("status") or {}).get("sidecars", {}).get("outOfSync", [])
            if s["error"].startswith("401")
        ],
        SETTLE,
        "pushes refused with the old token in place",
    )
    assert refused
    for sidecar in ready.sidecars.values():
        sidecar.project(ready.secret_files())  # the kubelet's update of the Secret volume
    assert ready.stored_token() == new
    for sidecar in ready.sidecars.values():
        ready.wait_hosts(sidecar, [0, 1])
    status = wait_for(lambda: _in_sync(ready, 2), SETTLE, "every sidecar in sync")
    for sidecar in ready.sidecars.values():
        assert sidecar.host_list()[0] == status["hostsGeneration"]
        assert http_put_status(sidecar, old) == 401


def http_put_status(sidecar: SidecarProcess, token: str) -> int:
    body = {"generation": 0, "hosts": []}  # refused either way: 401 or else 409
    return http("PUT", f"{sidecar.admin}/v1/hosts", body, token=token)[0]


def test_a_cluster_deleted_and_applied_again_ends_with_every_sidecar_in_sync(
    ready: Scenario,
) -> None:
    """What GitOps does: delete the cluster (the garbage collector takes its Secret; there is
    none here, so the test deletes it), apply it again: a new token reaches every sidecar."""
    second = ready.add_client("app-1")
    ready.wait_hosts(second, [0, 1, 2])
    old = ready.token
    ready.control_plane.kubectl(
        "delete", "gremlincluster", "graph", "-n", ready.namespace, "--timeout=15s"
    )
    k8s.CoreV1Api(ready.api).delete_namespaced_secret("graph-gremlinlb-token", ready.namespace)
    ready.apply_example()
    assert ready.token != old
    for sidecar in ready.sidecars.values():
        sidecar.project(ready.secret_files())
    status = wait_for(lambda: _in_sync(ready, 2), SETTLE, "every sidecar in sync")
    for sidecar in ready.sidecars.values():
        assert sidecar.host_list() == (
            status["hostsGeneration"],
            sorted(ready.servers.address(i) for i in range(3)),
        )


def test_a_cluster_applied_again_adopts_the_token_secret_left_behind(ready: Scenario) -> None:
    old_uid = ready.status()["metadata"]["uid"]
    ready.control_plane.kubectl(
        "delete", "gremlincluster", "graph", "-n", ready.namespace, "--timeout=15s"
    )
    ready.apply_example()  # the Secret is still there (no garbage collection yet)
    new_uid = ready.status()["metadata"]["uid"]
    assert new_uid != old_uid

    def adopted() -> bool:
        secret = k8s.CoreV1Api(ready.api).read_namespaced_secret(
            "graph-gremlinlb-token", ready.namespace
        )
        owners = (secret.metadata.owner_references or []) if secret.metadata else []
        return [o.uid for o in owners] == [new_uid]

    wait_for(adopted, SETTLE, "the Secret owned by the new cluster")
    assert ready.stored_token() == ready.token  # same token: the sidecars never noticed
    wait_for(lambda: _in_sync(ready, 1), SETTLE, "the sidecar in sync")


def _lease_holder(api: k8s.ApiClient) -> str:
    lease = k8s.CoordinationV1Api(api).read_namespaced_lease(
        "gremlinlb-operator", "gremlinlb-system"
    )
    return str(lease.spec.holder_identity or "") if lease.spec else ""


def test_a_standby_replica_serves_the_webhook_and_takes_over_when_the_leader_dies(
    ready: Scenario, operator: OperatorProcess, tmp_path: Path
) -> None:
    standby = OperatorProcess(ready.control_plane, tmp_path / "standby.log", *OPERATOR_FLAGS)
    try:
        standby.start()  # it points the webhook at itself: it serves it while standing by
        leader = f"{socket.gethostname()}-{operator.pid}"
        assert _lease_holder(ready.api) == leader
        pod = k8s.CoreV1Api(ready.api).create_namespaced_pod(
            ready.namespace,
            k8s.V1Pod(
                metadata=k8s.V1ObjectMeta(name="web", labels={"gremlinlb.io/inject": "graph"}),
                spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="web", image="web:1")]),
            ),
        )
        assert pod.spec is not None
        injected = pod.spec.init_containers or []
        assert [c.name for c in injected] == ["gremlinlb-sidecar"]
        # The standby follows no cluster, yet the sidecar starts with the leader's host list.
        env = {e.name: e.value or "" for e in injected[0].env or []}
        wanted = sorted(ready.servers.address(i) for i in range(3))
        assert sorted(env["GREMLINLB_ENDPOINTS"].split(",")) == wanted
        assert operator.process is not None
        operator.process.kill()  # no clean stop: the lease is not released, it expires
        operator.process.wait(10)
        wait_for(
            lambda: _lease_holder(ready.api) == f"{socket.gethostname()}-{standby.pid}",
            SETTLE,
            "the standby holding the lease",
        )
        ready.set_endpoints(ready.servers.endpoint(1), ready.servers.endpoint(3))
        ready.wait_hosts(ready.sidecars["app-0"], [1, 3])
    finally:
        standby.stop()  # a clean stop releases the lease at once
        operator.start()
    wait_for(
        lambda: _lease_holder(ready.api) == f"{socket.gethostname()}-{operator.pid}",
        SETTLE,
        "the restarted operator leading again",
    )


def _served_certificate(port: int) -> x509.Certificate:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_the_webhook_certificate_is_renewed_while_the_operator_runs(
    ready: Scenario, operator: OperatorProcess
) -> None:
    core = k8s.CoreV1Api(ready.api)
    before = _served_certificate(operator.webhook_port)
    # As if eleven months had passed: the stored certificate expires in ten days.
    aging = certs.generate(["127.0.0.1"], validity=datetime.timedelta(days=10))
    core.patch_namespaced_secret(
        "gremlinlb-webhook-tls",
        "gremlinlb-system",
        {
            "data": {
                key: base64.b64encode(value).decode()
                for key, value in (
                    ("ca.crt", aging.ca_pem),
                    ("tls.crt", aging.cert_pem),
                    ("tls.key", aging.key_pem),
                )
            }
        },
    )
    year = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=300)

    def renewed() -> x509.Certificate | None:
        served = _served_certificate(operator.webhook_port)
        return served if served.not_valid_after_utc > year and served != before else None

    served = wait_for(renewed, SETTLE, "a renewed certificate being served")
    secret = core.read_namespaced_secret("gremlinlb-webhook-tls", "gremlinlb-system")
    assert secret.data is not None
    stored = x509.load_pem_x509_certificate(base64.b64decode(secret.data["tls.crt"]))
    assert stored == served
    config = k8s.AdmissionregistrationV1Api(ready.api).read_mutating_webhook_configuration(
        "gremlinlb-sidecar-injector"
    )
    (hook,) = config.webhooks or []
    bundle = base64.b64decode(str(hook.client_config.ca_bundle))
    assert len(x509.load_pem_x509_certificates(bundle)) == 2  # the new CA and the previous one
    # The apiserver trusts it: a labelled pod still gets its sidecar.
    pod = core.create_namespaced_pod(
        ready.namespace,
        k8s.V1Pod(
            metadata=k8s.V1ObjectMeta(name="after", labels={"gremlinlb.io/inject": "graph"}),
            spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="web", image="web:1")]),
        ),
    )
    assert pod.spec is not None
    assert [c.name for c in pod.spec.init_containers or []] == ["gremlinlb-sidecar"]
