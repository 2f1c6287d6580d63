"""Sidecars that watch the operator, on a real control plane (issue 27 point 3).

A real ``gremlinlb sidecar`` process long-polls a real operator process over verified TLS (the
push CA's certificate for ``localhost``) and gets its lists without any PUT; the operator's
status shows what the watching sidecars report. The Gremlin Server is a real JVM in a network
namespace, as in test_operator_trust.py (whose fixtures these specs share).
"""

from __future__ import annotations

import base64
import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.devcluster import ControlPlane
from tests.integration.test_operator_trust import (  # noqa: F401 (fixtures)
    FLAGS,
    SETTLE,
    Cluster,
    cluster,
    manifests,
    server_ip,
)
from tests.operator_support import (
    OperatorProcess,
    SidecarProcess,
    create_client_pod,
    http,
    running_operator,
    wait_for,
)

pytestmark = pytest.mark.integration

#: Health reads every hour: what the status shows of a watcher can only come from its polls.
WATCH_FLAGS = (*FLAGS, "--health-interval", "3600")


@pytest.fixture
def operator(manifests: ControlPlane, tmp_path: Path) -> Iterator[OperatorProcess]:  # noqa: F811
    with running_operator(manifests, tmp_path / "operator.log", *WATCH_FLAGS) as process:
        yield process


def push_ca(api: k8s.ApiClient) -> str:
    secret = k8s.CoreV1Api(api).read_namespaced_secret("gremlinlb-push-ca", "gremlinlb-system")
    assert secret.data is not None, "the push CA Secret holds nothing"
    return base64.b64decode(secret.data["ca.crt"]).decode()


def watcher(
    graph: Cluster, operator: OperatorProcess, name: str, token: str | None = None
) -> SidecarProcess:
    """A client pod whose real sidecar watches ``operator`` (as injected: token, CA, names)."""
    files = graph.files()  # as the token Secret is mounted: the push CA is its ca.crt
    assert "ca.crt" in files, files.keys()
    work = graph.work_dir / name
    sidecar = SidecarProcess(
        token or graph.token,
        work,
        *("--operator-url", operator.distribution_url),
        *("--operator-ca-file", str(work / "token-volume" / "ca.crt")),
        *("--operator-cluster", f"{graph.namespace}/graph", "--pod-name", name),
        files=files,
    ).start()
    graph.sidecars.append(sidecar)
    create_client_pod(graph.api, graph.namespace, name, sidecar.admin_port, admin_tls=True)
    return sidecar


def pushes(operator: OperatorProcess) -> float:
    """PUTs the operator made so far (its push latency histogram's count)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics") as answer:
        text = answer.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("gremlinlb_operator_push_duration_seconds_count")
    )


def settled_pushes(operator: OperatorProcess) -> float:
    """The PUT count once no PUT is still on its way: a push that started before the sidecar
    was counted as watching may end (and be counted) after it was."""
    last = [pushes(operator)]

    def unchanged() -> bool:
        now = pushes(operator)
        steady, last[0] = now == last[0], now
        return steady

    wait_for(unchanged, SETTLE, "no push in flight", interval=1.0)
    return last[0]


def poll(
    operator: OperatorProcess, graph: Cluster, token: str, body: dict[str, Any]
) -> tuple[int, dict[str, str], Any]:
    """One poll by hand, verifying the operator as a sidecar does."""
    context = ssl.create_default_context(cadata=push_ca(graph.api))
    request = urllib.request.Request(
        f"{operator.distribution_url}/v1/watch/{graph.namespace}/graph",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=40, context=context) as answer:
            text = answer.read().decode()
            return answer.status, dict(answer.headers), json.loads(text) if text else None
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read().decode())


def set_max_attempts(graph: Cluster, attempts: int) -> None:
    patch = {"spec": {"maxAttempts": attempts}}
    k8s.CustomObjectsApi(graph.api).patch_namespaced_custom_object(
        "gremlinlb.io", "v1alpha1", graph.namespace, "gremlinclusters", "graph", patch
    )


def settings_of(sidecar: SidecarProcess) -> dict[str, Any]:
    status, body = http("GET", f"{sidecar.admin}/v1/hosts")
    assert status == 200, body
    return dict(body["settings"])


def test_a_change_reaches_a_watching_sidecar_without_any_push(
    cluster: Cluster,  # noqa: F811
    operator: OperatorProcess,
) -> None:
    cluster.apply()
    sidecar = watcher(cluster, operator, "app-0")
    first = wait_for(lambda: cluster.holds_the_list(sidecar), SETTLE, "the first list")
    wait_for(
        lambda: (cluster.status().get("sidecars") or {}).get("watching") == 1 or None,
        SETTLE,
        "the sidecar counted as watching",
    )
    before = settled_pushes(operator)
    set_max_attempts(cluster, 7)
    wait_for(lambda: settings_of(sidecar).get("max_attempts") == 7 or None, SETTLE, "the change")
    assert sidecar.host_list()[0] > first
    time.sleep(2.0)  # several resync intervals (0.5 s): a periodic re-push would show
    assert pushes(operator) == before


def test_a_stopped_operator_leaves_the_watching_sidecars_list_in_place(
    cluster: Cluster,  # noqa: F811
    operator: OperatorProcess,
) -> None:
    cluster.apply()
    sidecar = watcher(cluster, operator, "app-0")
    generation = wait_for(lambda: cluster.holds_the_list(sidecar), SETTLE, "the first list")
    operator.stop()
    time.sleep(3.0)  # polls fail and back off meanwhile
    assert cluster.holds_the_list(sidecar) == generation
    operator.start()
    set_max_attempts(cluster, 6)
    wait_for(
        lambda: settings_of(sidecar).get("max_attempts") == 6 or None,
        SETTLE,
        "the list after the operator came back",
    )


def test_a_poll_with_a_wrong_token_gets_401_and_no_list(
    cluster: Cluster,  # noqa: F811
    operator: OperatorProcess,
) -> None:
    cluster.apply()
    wait_for(lambda: cluster.status().get("hosts") or None, SETTLE, "the first host list")
    status, _headers, body = poll(operator, cluster, "wrong", {"generation": 0, "pod": "x"})
    assert status == 401
    assert "bearer token" in body["error"]
    assert "hosts" not in body
    sidecar = watcher(cluster, operator, "app-0", token="wrong")
    time.sleep(3.0)
    assert sidecar.host_list() == (0, [])


def test_a_poll_answers_a_newer_list_at_once_and_says_what_a_bad_body_lacks(
    cluster: Cluster,  # noqa: F811
    operator: OperatorProcess,
) -> None:
    cluster.apply()
    wait_for(lambda: cluster.status().get("hosts") or None, SETTLE, "the first host list")
    status, _, body = poll(operator, cluster, cluster.token, {"generation": 0, "pod": "x"})
    assert status == 200
    assert body["hosts"] == [f"{cluster.server}:8182"]
    status, _, body = poll(operator, cluster, cluster.token, {"pod": "x"})
    assert status == 400
    assert "generation must be" in body["error"]


def test_health_reported_over_the_watch_shows_in_the_cluster_status(
    cluster: Cluster,  # noqa: F811
    operator: OperatorProcess,
) -> None:
    cluster.apply()
    watcher(cluster, operator, "app-0")
    address = f"{cluster.server}:8182"

    def seen_healthy() -> dict[str, Any] | None:
        backends = cluster.status().get("backends") or {}
        return backends if backends.get("sidecarsServing") == 1 else None

    backends = wait_for(seen_healthy, SETTLE, "the sidecar's health in the status")
    assert backends["sidecarsReporting"] == 1
    assert [(h["address"], h["healthy"]) for h in backends["hosts"]] == [(address, 1)]


def test_a_standby_answers_503_and_the_sidecar_gets_its_list_from_the_next_leader(
    cluster: Cluster,  # noqa: F811
    manifests: ControlPlane,  # noqa: F811
    tmp_path: Path,
) -> None:
    with running_operator(manifests, tmp_path / "a.log", *WATCH_FLAGS) as leader:
        cluster.apply()
        wait_for(lambda: cluster.status().get("hosts") or None, SETTLE, "the first host list")
        with running_operator(manifests, tmp_path / "b.log", *WATCH_FLAGS) as standby:
            status, headers, body = poll(
                standby, cluster, cluster.token, {"generation": 0, "pod": "x"}
            )
            assert status == 503
            assert "standby" in body["error"]
            assert int(headers["Retry-After"]) >= 1
            sidecar = watcher(cluster, standby, "app-0")
            leader.stop()
            wait_for(
                lambda: cluster.holds_the_list(sidecar), SETTLE, "the list from the new leader"
            )
