"""The operator follows a Neptune cluster (GremlinCluster spec.neptune) for every sidecar.

Real parts: kube-apiserver + etcd with the CRD and manifests/ applied, the operator as its own
process with its ServiceAccount's rights only, sidecars as real ``gremlinlb sidecar``
processes (client "pods" on loopback, admin API over TLS with the cluster's certificate), real
Gremlin Servers, and the Neptune management API as moto in server mode. moto's instances have
endpoint names that resolve nowhere, so spec.neptune.addresses maps each to a local Gremlin
Server, which serves the traffic (writes are counted on the servers themselves).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from gremlinlb.devservers import Fleet, with_traversal_source
from gremlinlb.devservers.neptunefront import NeptuneFront
from tests.client_support import count_label
from tests.devcluster import ControlPlane, EndpointSpec, apply_endpoint_slice, create_service
from tests.moto_support import CLUSTER, INSTANCES, REGION, Moto, fail_over
from tests.operator_support import (
    GROUP,
    PLURAL,
    REPO,
    VERSION,
    OperatorProcess,
    SidecarProcess,
    applied_manifests,
    cluster_object,
    condition,
    create_client_pod,
    http,
    token_files,
    wait_for,
)

pytestmark = pytest.mark.integration

SETTLE = 30.0  # generous: the assertions are about behaviour, not speed
NAME = "graph"  # the token Secret's name, graph-gremlinlb-token, follows it
#: What botocore reads in the operator's process: fake keys moto accepts, and nothing else.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    "AWS_EC2_METADATA_DISABLED": "true",
}
OPERATOR_FLAGS = ("--health-interval", "1", "--lease-duration", "3", "--resync-interval", "600")

Listed = set[tuple[str, str, str | None]]


def documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((REPO / "manifests/examples" / name).read_text()) if d]


@pytest.fixture(scope="module")
def operator(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with applied_manifests(control_plane):
        process = OperatorProcess(control_plane, log, *OPERATOR_FLAGS, env=AWS_ENV)
        process.start()
        try:
            yield process
        finally:
            process.stop()


@dataclass
class Neptune:
    """A namespace bound for the operator, moto's cluster, and client pods with sidecars."""

    api: k8s.ApiClient
    control_plane: ControlPlane
    namespace: str
    moto: Moto
    fleet: Fleet
    work_dir: Path
    operator: OperatorProcess
    sidecars: list[SidecarProcess] = field(default_factory=list)

    def cluster(self, **neptune: Any) -> dict[str, Any]:
        """The example's GremlinCluster pointed at moto, its instances mapped to the fleet."""
        example = documents("neptune-gremlincluster.yaml")[0]
        example["metadata"]["name"] = NAME
        spec = example["spec"]
        spec.pop("sigv4")  # the local servers check no signature
        spec["neptune"] = {
            "clusterIdentifier": CLUSTER,
            "region": REGION,
            "endpointUrl": self.moto.url,
            "refreshSeconds": 1,
            "scheme": "ws",
            "addresses": {
                "w1": self.fleet[0].address,
                "r1": self.fleet[1].address,
                "r2": self.fleet[2].address,
                "r3": self.fleet[1].address,  # created by a spec after r1 is gone
            },
            **neptune,
        }
        spec["healthCheck"] = {"interval": 0.5, "rise": 1, "fall": 1}
        return example

    def apply(self, document: dict[str, Any], check: bool = True) -> Any:
        return self.control_plane.kubectl(
            "apply", "-n", self.namespace, "-f", "-", input_text=yaml.safe_dump(document),
            check=check,
        )  # fmt: skip

    def start(self, **neptune: Any) -> None:
        """The GremlinCluster applied (`neptune`: more of its spec.neptune) and two client pods
        whose sidecars take its pushes."""
        self.apply(self.cluster(**neptune))
        files = wait_for(self._secret, SETTLE, "the cluster's token Secret with its certificate")
        for index in range(2):
            name = f"app-{index}"
            sidecar = SidecarProcess(files["token"], self.work_dir / name, files=files).start()
            self.sidecars.append(sidecar)
            create_client_pod(
                self.api, self.namespace, name, sidecar.admin_port, cluster=NAME, admin_tls=True
            )

    def _secret(self) -> dict[str, str] | None:
        found = token_files(self.api, self.namespace)
        return found if "token" in found and "tls.crt" in found else None

    def operator_log(self) -> str:
        return self.operator.log_path.read_text(errors="replace")

    def status(self) -> dict[str, Any]:
        return cluster_object(self.api, self.namespace, NAME).get("status") or {}

    def all_list(self, wanted: Listed) -> None:
        for sidecar in self.sidecars:
            wait_for(lambda: listed(sidecar) == wanted, SETTLE, f"{wanted} at {sidecar.admin}")  # noqa: B023

    def initial(self) -> Listed:
        return {
            (self.fleet[0].address, "writer", "us-east-1a"),
            (self.fleet[1].address, "reader", "us-east-1a"),
            (self.fleet[2].address, "reader", "us-east-1b"),
        }


def listed(sidecar: SidecarProcess) -> Listed:
    """A sidecar's hosts in service: (address, role, zone)."""
    status, body = http("GET", f"{sidecar.admin}/v1/hosts")
    assert status == 200, body
    return {(h["address"], h["role"], h["zone"]) for h in body["hosts"] if h["state"] != "draining"}


@pytest.fixture
def neptune(
    kube_admin: k8s.ApiClient,
    operator: OperatorProcess,
    namespace: str,
    moto: Moto,
    fleet: Fleet,
    tmp_path: Path,
) -> Iterator[Neptune]:
    found = Neptune(kube_admin, operator.control_plane, namespace, moto, fleet, tmp_path, operator)
    binding = next(d for d in documents("gremlincluster.yaml") if d["kind"] == "RoleBinding")
    found.apply(binding)
    try:
        yield found
    finally:
        for sidecar in found.sidecars:
            sidecar.stop()


@pytest.fixture
def following(neptune: Neptune) -> Neptune:
    neptune.start()
    neptune.all_list(neptune.initial())
    return neptune


def write_through(
    sidecar: SidecarProcess, label: str, count: int, before: Callable[[int], None] | None = None
) -> int:
    """`count` writes, one at a time, `before(i)` called ahead of the i-th; how many were
    acknowledged (all of them, or an error is raised)."""
    acknowledged = 0

    def work(g: Any) -> None:
        nonlocal acknowledged
        for i in range(count):
            if before is not None:
                before(i)
            g.add_v(label).iterate()
            acknowledged += 1

    with_traversal_source(sidecar.address, work, timeout=2 * SETTLE)
    return acknowledged


def test_every_sidecar_lists_the_writer_and_the_readers_with_their_zones(
    following: Neptune,
) -> None:
    fleet = following.fleet
    status = wait_for(
        lambda: (s := following.status()).get("neptune", {}).get("lastReadTime") and s,
        SETTLE,
        "status.neptune",
    )
    assert status["neptune"]["writer"] == {"address": fleet[0].address, "zone": "us-east-1a"}
    assert sorted(r["address"] for r in status["neptune"]["readers"]) == sorted(
        [fleet[1].address, fleet[2].address]
    )
    assert (status["writers"], status["readers"]) == (1, 2)
    write_through(following.sidecars[0], "via-operator", 3)
    assert [count_label(server, "via-operator") for server in fleet[:3]] == [3, 0, 0]


def test_after_a_failover_every_sidecar_lists_the_new_writer(following: Neptune) -> None:
    fleet = following.fleet
    following.moto.client.failover_db_cluster(
        DBClusterIdentifier=CLUSTER, TargetDBInstanceIdentifier="r2"
    )
    following.all_list(
        {
            (fleet[0].address, "reader", "us-east-1a"),
            (fleet[1].address, "reader", "us-east-1a"),
            (fleet[2].address, "writer", "us-east-1b"),
        }
    )
    write_through(following.sidecars[1], "after-failover", 3)
    assert [count_label(server, "after-failover") for server in fleet[:3]] == [0, 0, 3]


def test_an_instance_deleted_and_one_created_are_followed(following: Neptune) -> None:
    fleet = following.fleet
    following.moto.client.delete_db_instance(DBInstanceIdentifier="r1", SkipFinalSnapshot=True)
    without_r1: Listed = {
        (fleet[0].address, "writer", "us-east-1a"),
        (fleet[2].address, "reader", "us-east-1b"),
    }
    following.all_list(without_r1)
    following.moto.add("r3", "us-east-1b")  # mapped to the server r1 had
    following.all_list({*without_r1, (fleet[1].address, "reader", "us-east-1b")})


def test_with_the_api_down_the_last_list_stays_and_the_status_shows_the_error(
    following: Neptune,
) -> None:
    following.moto.stop()
    status = wait_for(
        lambda: (s := following.status()).get("neptune", {}).get("lastError") and s,
        SETTLE,
        "status.neptune.lastError",
    )
    assert "cannot read Neptune cluster graph" in status["neptune"]["lastError"]
    degraded = condition(cluster_object(following.api, following.namespace, NAME), "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "NeptuneReadFailed")
    for sidecar in following.sidecars:
        assert listed(sidecar) == following.initial()
    write_through(following.sidecars[0], "while-api-down", 2)
    assert count_label(following.fleet[0], "while-api-down") == 2


def api_calls(moto: Moto) -> int:
    """The management API calls moto has answered (its request log)."""
    return moto.log_path.read_text(errors="replace").count('"POST / HTTP')


def assert_no_more_reads(moto: Moto) -> None:
    """Over three refresh intervals, no read starts: a follower left running would make six
    calls (two a read); a read already on its worker thread when its follower stopped may
    still finish (at most its two calls)."""
    before = api_calls(moto)
    time.sleep(3)
    assert api_calls(moto) - before <= 2


def test_a_deleted_cluster_is_no_longer_read(following: Neptune) -> None:
    assert api_calls(following.moto) > 0
    following.control_plane.kubectl("delete", "gremlincluster", NAME, "-n", following.namespace)
    gone = f"GremlinCluster {following.namespace}/{NAME} deleted: stopped following it"
    wait_for(lambda: gone in following.operator_log(), SETTLE, "the operator to see the deletion")
    assert_no_more_reads(following.moto)


def test_a_cluster_changed_to_a_service_follows_the_service_and_no_longer_neptune(
    following: Neptune,
) -> None:
    service = create_service(following.api, following.namespace, "gremlin", 8182)
    unrouted = "192.0.2.10"  # TEST-NET-1: listed, never reached
    apply_endpoint_slice(
        following.api,
        following.namespace,
        "gremlin",
        [EndpointSpec(unrouted)],
        port=8182,
        owner=service,
    )
    document = following.cluster()
    del document["spec"]["neptune"]
    document["spec"]["service"] = {"name": "gremlin", "port": 8182}
    following.apply(document)
    following.all_list({(f"{unrouted}:8182", "any", None)})
    wait_for(lambda: "neptune" not in following.status(), SETTLE, "status.neptune removed")
    following.moto.client.failover_db_cluster(
        DBClusterIdentifier=CLUSTER, TargetDBInstanceIdentifier="r2"
    )
    assert_no_more_reads(following.moto)
    for sidecar in following.sidecars:
        assert listed(sidecar) == {(f"{unrouted}:8182", "any", None)}


@pytest.mark.parametrize(
    ("service", "message"),
    [
        (True, "spec.service and spec.neptune are both set"),
        (False, "spec.service or spec.neptune is required"),
    ],
    ids=["both", "neither"],
)
def test_a_cluster_with_both_sources_or_neither_is_refused_by_the_apiserver(
    neptune: Neptune, service: bool, message: str
) -> None:
    document = neptune.cluster()
    if service:
        document["spec"]["service"] = {"name": "gremlin"}
    else:
        del document["spec"]["neptune"]
    refused = neptune.apply(document, check=False)
    assert refused.returncode != 0
    assert message in refused.stderr, refused.stderr
    found = k8s.CustomObjectsApi(neptune.api).list_namespaced_custom_object(
        GROUP, VERSION, neptune.namespace, PLURAL
    )
    assert isinstance(found, dict)
    assert found["items"] == []


def test_selectors_push_only_the_instances_they_select_each_signed_for_its_own_name(
    neptune: Neptune,
) -> None:
    neptune.start(roles=["reader"], zones=["us-east-1b"])
    neptune.all_list({(neptune.fleet[2].address, "reader", "us-east-1b")})
    status, body = http("GET", f"{neptune.sidecars[0].admin}/v1/hosts")
    assert status == 200, body
    (host,) = (h for h in body["hosts"] if h["state"] != "draining")
    r2 = neptune.moto.client.describe_db_instances(DBInstanceIdentifier="r2")["DBInstances"][0]
    own_name = f"{r2['Endpoint']['Address']}:{r2['Endpoint']['Port']}"
    assert f"sigv4_host={own_name}" in host["endpoint"]  # mapped, yet signed as the instance


def test_a_write_refused_after_a_failover_is_held_until_the_operator_pushes_the_new_writer(
    neptune: Neptune, fronts: list[NeptuneFront]
) -> None:
    """Neptune fronts learn their roles from moto as instances do; the operator reads the
    cluster every 600 s, so only a sidecar's report can make it read (and push) at once."""
    at = {name: front.address for name, front in zip(INSTANCES, fronts, strict=True)}
    neptune.start(refreshSeconds=600, addresses=at)
    roles = ("writer", "reader", "reader")
    zones = ("us-east-1a", "us-east-1a", "us-east-1b")
    neptune.all_list({(f.address, r, z) for f, r, z in zip(fronts, roles, zones, strict=True)})

    def fail_over_at_ten(i: int) -> None:
        if i == 10:
            fail_over(neptune.moto)
            wait_for(lambda: fronts[0].writer is False, SETTLE, "w1 a reader")

    acknowledged = write_through(neptune.sidecars[0], "load", 20, fail_over_at_ten)
    counts = [count_label(server, "load") for server in neptune.fleet[:3]]
    assert fronts[0].answered["ReadOnlyViolationException"] >= 1  # the old writer refused
    assert sum(counts) == acknowledged == 20  # every acknowledged write, none twice
    assert counts == [10, 0, 10]  # none on a reader
    assert "suspects a failover (writes refused by a reader: 1)" in neptune.operator_log()
    roles = ("reader", "reader", "writer")
    neptune.all_list({(f.address, r, z) for f, r, z in zip(fronts, roles, zones, strict=True)})
