"""The test control plane and pod network behave like the parts of Kubernetes the operator needs.

These tests pin down the harness itself: a real kube-apiserver with RBAC, fresh namespaces,
stand-ins for the kubelet and the EndpointSlice controller, and pod addresses in network
namespaces that the host can reach.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import time
import urllib.request

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tests.devcluster import (
    GATEWAY,
    SUBNET,
    ControlPlane,
    EndpointSpec,
    NetnsError,
    NetnsHost,
    NetnsNetwork,
    apply_endpoint_slice,
    begin_pod_termination,
    can_i,
    create_namespace,
    create_running_pod,
    create_service,
    delete_pod,
    free_port,
    pinned_versions,
    purge_namespace,
    service_account_token,
    set_pod_ready,
)
from tests.kube_fixtures import NetnsHostFactory

OPERATOR_SA_NAMESPACE = "gremlinlb-system"
OPERATOR_SA = "gremlinlb-operator"


def _condition(pod: k8s.V1Pod, kind: str) -> str | None:
    assert pod.status is not None
    for condition in pod.status.conditions or []:
        if condition.type == kind:
            return condition.status
    return None


def _wait_listening(address: str, port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((address, port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {address}:{port} after {timeout_s} s")


def _start_http_server(host: NetnsHost, port: int = 8080) -> None:
    host.popen([sys.executable, "-m", "http.server", "--bind", host.ip, str(port)])
    _wait_listening(host.ip, port)


# -- the apiserver ---------------------------------------------------------------------------------


def test_apiserver_is_the_pinned_version_and_ready(
    control_plane: ControlPlane, kube_admin: k8s.ApiClient
) -> None:
    version = k8s.VersionApi(kube_admin).get_code()
    pinned = pinned_versions().get("KUBERNETES_VERSION")
    if pinned:
        assert version.git_version == pinned
    assert control_plane.running
    assert control_plane.url.startswith("https://127.0.0.1:")


def test_kubectl_uses_the_written_kubeconfig(control_plane: ControlPlane, namespace: str) -> None:
    manifest = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-kubectl\n"
        f"  namespace: {namespace}\ndata:\n  key: value\n"
    )
    applied = control_plane.kubectl("apply", "-f", "-", input_text=manifest)
    assert "configmap/from-kubectl" in applied.stdout
    got = control_plane.kubectl(
        "get", "configmap", "from-kubectl", "-n", namespace, "-o", "jsonpath={.data.key}"
    )
    assert got.stdout == "value"


def test_operator_token_authenticates_as_the_operator_service_account(
    kube_operator: k8s.ApiClient,
) -> None:
    review = k8s.AuthenticationV1Api(kube_operator).create_self_subject_review(
        k8s.V1SelfSubjectReview()
    )
    assert review.status is not None
    assert review.status.user_info is not None
    user = review.status.user_info
    assert user.username == f"system:serviceaccount:{OPERATOR_SA_NAMESPACE}:{OPERATOR_SA}"
    assert "system:masters" not in (user.groups or [])
    assert f"system:serviceaccounts:{OPERATOR_SA_NAMESPACE}" in (user.groups or [])


def test_rbac_denies_the_operator_what_it_is_not_granted(
    kube_admin: k8s.ApiClient, kube_operator: k8s.ApiClient, namespace: str
) -> None:
    operator_core = k8s.CoreV1Api(kube_operator)
    with pytest.raises(ApiException) as denied:
        operator_core.list_namespaced_pod(namespace)
    assert denied.value.status == 403

    rbac = k8s.RbacAuthorizationV1Api(kube_admin)
    rbac.create_namespaced_role(
        namespace,
        k8s.V1Role(
            metadata=k8s.V1ObjectMeta(name="read-pods"),
            rules=[k8s.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["get", "list"])],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        k8s.V1RoleBinding(
            metadata=k8s.V1ObjectMeta(name="operator-reads-pods"),
            role_ref=k8s.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="read-pods"
            ),
            subjects=[
                # The subject a real manifest uses: the ServiceAccount, not a user name.
                k8s.RbacV1Subject(
                    kind="ServiceAccount", name=OPERATOR_SA, namespace=OPERATOR_SA_NAMESPACE
                )
            ],
        ),
    )
    deadline = time.monotonic() + 10
    while not can_i(kube_operator, "list", "pods", namespace=namespace):
        assert time.monotonic() < deadline, "RoleBinding never took effect"
        time.sleep(0.1)

    assert operator_core.list_namespaced_pod(namespace).items == []
    assert not can_i(kube_operator, "create", "pods", namespace=namespace)
    assert not can_i(kube_operator, "list", "secrets", namespace=namespace)
    assert not can_i(kube_operator, "list", "pods")  # cluster-wide: not granted
    with pytest.raises(ApiException) as still_denied:
        operator_core.list_namespaced_secret(namespace)
    assert still_denied.value.status == 403
    assert can_i(kube_admin, "create", "pods", namespace=namespace)


def test_real_service_account_tokens_can_be_requested(
    kube_admin: k8s.ApiClient, control_plane: ControlPlane, namespace: str
) -> None:
    k8s.CoreV1Api(kube_admin).create_namespaced_service_account(
        namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name="app"))
    )
    token = service_account_token(kube_admin, namespace, "app")
    config = control_plane.client_configuration("admin")
    config.api_key = {"BearerToken": token}
    with k8s.ApiClient(config) as as_app:
        review = k8s.AuthenticationV1Api(as_app).create_self_subject_review(
            k8s.V1SelfSubjectReview()
        )
    assert review.status is not None
    assert review.status.user_info is not None
    assert review.status.user_info.username == f"system:serviceaccount:{namespace}:app"


# -- namespaces ------------------------------------------------------------------------------------


def test_each_test_gets_a_fresh_active_namespace(kube_admin: k8s.ApiClient, namespace: str) -> None:
    core = k8s.CoreV1Api(kube_admin)
    ns = core.read_namespace(namespace)
    assert ns.status is not None
    assert ns.status.phase == "Active"
    assert namespace.startswith("t-test-each-test-gets")
    assert core.list_namespaced_pod(namespace).items == []
    assert core.list_namespaced_config_map(namespace).items == []


def test_purging_a_namespace_deletes_what_is_in_it(kube_admin: k8s.ApiClient) -> None:
    name = create_namespace(kube_admin, prefix="t-purge-")
    core = k8s.CoreV1Api(kube_admin)
    create_running_pod(kube_admin, name, "doomed", "10.213.0.200")
    core.create_namespaced_config_map(
        name, k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="doomed"), data={"a": "b"})
    )
    purge_namespace(kube_admin, name)
    assert core.list_namespaced_pod(name).items == []
    assert core.list_namespaced_config_map(name).items == []
    # With no namespace controller the namespace itself stays Terminating.
    status = core.read_namespace(name).status
    assert status is not None
    assert status.phase == "Terminating"


# -- EndpointSlices --------------------------------------------------------------------------------


def test_endpoint_slice_accepts_a_netns_address_and_refuses_loopback(
    kube_admin: k8s.ApiClient, namespace: str, netns_hosts: NetnsHostFactory
) -> None:
    (server,) = netns_hosts(1)
    service = create_service(kube_admin, namespace, "gremlin", 8182)

    accepted = apply_endpoint_slice(
        kube_admin,
        namespace,
        "gremlin",
        [EndpointSpec(server.ip, pod_name="gremlin-0"), EndpointSpec.draining("10.213.0.201")],
        port=8182,
        owner=service,
    )
    assert accepted.endpoints is not None
    assert [e.addresses for e in accepted.endpoints] == [[server.ip], ["10.213.0.201"]]
    draining = accepted.endpoints[1].conditions
    assert draining is not None
    assert (draining.ready, draining.serving, draining.terminating) == (False, True, True)
    listed = k8s.DiscoveryV1Api(kube_admin).list_namespaced_endpoint_slice(
        namespace, label_selector="kubernetes.io/service-name=gremlin"
    )
    assert len(listed.items) == 1

    with pytest.raises(ApiException) as refused:
        apply_endpoint_slice(
            kube_admin, namespace, "gremlin", [EndpointSpec("127.0.0.1")], port=8182, name="lo"
        )
    assert refused.value.status == 422
    assert "loopback" in str(refused.value.body)


def test_updating_an_endpoint_slice_replaces_its_endpoints(
    kube_admin: k8s.ApiClient, namespace: str
) -> None:
    first = apply_endpoint_slice(
        kube_admin, namespace, "gremlin", [EndpointSpec("10.213.0.210")], port=8182
    )
    second = apply_endpoint_slice(
        kube_admin,
        namespace,
        "gremlin",
        [EndpointSpec("10.213.0.210", ready=False), EndpointSpec("10.213.0.211")],
        port=8182,
    )
    assert first.metadata is not None
    assert second.metadata is not None
    assert second.metadata.name == first.metadata.name
    assert second.metadata.resource_version != first.metadata.resource_version
    assert second.endpoints is not None
    assert [e.addresses[0] for e in second.endpoints] == ["10.213.0.210", "10.213.0.211"]


# -- pods without a kubelet ------------------------------------------------------------------------


def test_fake_kubelet_pod_reaches_ready_then_flips_and_terminates(
    kube_admin: k8s.ApiClient, namespace: str
) -> None:
    core = k8s.CoreV1Api(kube_admin)
    created = create_running_pod(
        kube_admin, namespace, "gremlin-0", "10.213.0.220", labels={"app": "gremlin"}
    )
    assert created.status is not None
    assert created.status.phase == "Running"
    assert created.status.pod_ip == "10.213.0.220"
    assert _condition(created, "Ready") == "True"
    pod = core.read_namespaced_pod("gremlin-0", namespace)
    assert pod.spec is not None
    assert pod.spec.node_name
    assert _condition(pod, "Ready") == "True"

    not_ready = set_pod_ready(kube_admin, namespace, "gremlin-0", False)
    assert _condition(not_ready, "Ready") == "False"
    assert not_ready.status is not None
    assert not_ready.status.pod_ip == "10.213.0.220"
    assert _condition(set_pod_ready(kube_admin, namespace, "gremlin-0", True), "Ready") == "True"

    begin_pod_termination(kube_admin, namespace, "gremlin-0")
    terminating = core.read_namespaced_pod("gremlin-0", namespace)
    assert terminating.metadata is not None
    assert terminating.metadata.deletion_timestamp
    delete_pod(kube_admin, namespace, "gremlin-0")
    assert [p for p in core.list_namespaced_pod(namespace).items] == []


# -- pod network -----------------------------------------------------------------------------------


def test_tcp_listener_in_a_netns_is_reachable_from_the_host(
    netns_hosts: NetnsHostFactory,
) -> None:
    first, second = netns_hosts(2)
    assert first.ip != second.ip
    port = free_port()  # free on the host's loopback right now
    _start_http_server(first, port)

    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
        f"http://{first.ip}:{port}/", timeout=5
    ) as response:
        assert response.status == 200

    # Bound to the namespace's address only: nothing answers on the host's loopback.
    with socket.socket() as sock:
        sock.settimeout(1)
        assert sock.connect_ex(("127.0.0.1", port)) != 0

    # Another "pod" reaches it across the bridge too.
    fetched = second.run(
        [
            sys.executable,
            "-c",
            f"import urllib.request; print(urllib.request.urlopen('http://{first.ip}:{port}/').status)",
        ]
    )
    assert fetched.stdout.strip() == "200", fetched.stderr


def test_netns_hosts_use_only_addresses_of_the_test_subnet(
    netns_hosts: NetnsHostFactory,
) -> None:
    (host,) = netns_hosts(1)
    assert ipaddress.IPv4Address(host.ip) in SUBNET
    for address in host.addresses():
        ip = ipaddress.ip_interface(address).ip
        assert ip.is_loopback or ip in SUBNET, address
    outside = host.run(
        [
            sys.executable,
            "-c",
            "import socket; s = socket.socket(); s.settimeout(2); "
            "print(s.connect_ex(('192.0.2.1', 9)))",  # TEST-NET-1: must not even be routed
        ]
    )
    assert outside.stdout.strip() == "101", outside  # ENETUNREACH: no route out of the subnet
    route = host.run(["ip", "-4", "route", "show"]).stdout
    assert "default" not in route
    assert str(GATEWAY) != host.ip


def test_pod_cidr_blocks_of_two_runs_never_overlap_and_keep_their_addresses(
    netns_network: NetnsNetwork,
) -> None:
    other = NetnsNetwork().open()  # another run on the same machine
    try:
        ours = netns_network.lease_block(28)
        theirs = other.lease_block(28)
        assert not ours.overlaps(theirs)
        assert ours.subnet_of(SUBNET)
        address = next(ours.hosts())
        # A namespace at an address of our block, then gone: the address stays ours.
        netns_network.remove_host(netns_network.add_host(address))
        with pytest.raises(NetnsError, match="already leased"):
            other.add_host(address)
    finally:
        netns_network.release_block(ours)
        other.close()


def test_a_disconnected_netns_host_times_out_and_comes_back(
    netns_hosts: NetnsHostFactory,
) -> None:
    (host,) = netns_hosts(1)
    _start_http_server(host)
    host.disconnect()
    with socket.socket() as sock:
        sock.settimeout(1.0)
        with pytest.raises(TimeoutError):  # dropped, not refused: like a vanished node
            sock.connect((host.ip, 8080))
    host.reconnect()
    _wait_listening(host.ip, 8080, timeout_s=10)


# -- restarts --------------------------------------------------------------------------------------


def test_apiserver_restart_keeps_state(
    control_plane: ControlPlane, kube_admin: k8s.ApiClient, namespace: str
) -> None:
    core = k8s.CoreV1Api(kube_admin)
    core.create_namespaced_config_map(
        namespace, k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="survivor"), data={"a": "1"})
    )
    port = control_plane.apiserver_port
    control_plane.restart_apiserver()
    assert control_plane.apiserver_port == port
    assert core.read_namespaced_config_map("survivor", namespace).data == {"a": "1"}
