"""End to end on a cluster: the README's Kubernetes quick start, applied as written, then the
things a user relies on, checked with real traffic.

The module's fixture runs every command of the README's "Quick start: Kubernetes" block
verbatim (only the image build is the back end's business), so crds/, manifests/ and
manifests/examples/ are applied exactly as they are in the repository, and the operator runs
under exactly the ServiceAccount and RBAC of manifests/10-rbac.yaml. The checks then run in the
order below against that one installation, each leaving three Gremlin Servers behind.

Back ends (tests/e2e_backends.py): the container-less cluster (default; ``make test`` and
``make cluster-e2e``) and kind (``make kind-e2e`` on a machine with Docker).

Traffic: the app's own loop (manifests/examples/app.yaml) plus a load generator exec'd in an app
pod's ``app`` container, a gremlinpython client of the sidecar at 127.0.0.1:8182, bounded in
time and count. Requests are counted by the Gremlin Servers themselves.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client as k8s

from tests.devcluster import NetnsNetwork
from tests.e2e_backends import REPO, Backend, DevClusterBackend, KindBackend, backend_name

T = TypeVar("T")
NS = "demo"  # the README's namespace
OPERATOR_NS = "gremlinlb-system"
GROUP, VERSION, PLURAL = "gremlinlb.io", "v1alpha1", "gremlinclusters"
APP_SELECTOR = "app.kubernetes.io/name=gremlin-app"
SERVER_SELECTOR = "app.kubernetes.io/name=gremlin-server"
OPERATOR_SELECTOR = "app.kubernetes.io/name=gremlinlb-operator"
SIDECAR = "gremlinlb-sidecar"
#: The quick start's commands get this long in all (its `rollout status` alone may wait 300 s),
#: and the first check waits up to WAIT_SHOWN_S more in the same pytest item (the module
#: fixture is set up within it): together under the module's pytest timeout, so a hang is
#: reported by the code that knows what hung, with the cluster's own account of why.
INSTALL_BUDGET_S = 420.0
WAIT_SHOWN_S = 300.0
pytestmark = pytest.mark.timeout(INSTALL_BUDGET_S + WAIT_SHOWN_S + 120)

#: Run in an app pod's `app` container: a gremlinpython client of the sidecar, `threads` loops
#: for `seconds` (at most 20 requests a second each), then one JSON line with the outcome.
LOAD_SCRIPT = r"""
import json, sys, threading, time
from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.process.anonymous_traversal import traversal
seconds, threads = float(sys.argv[1]), int(sys.argv[2])
conn = DriverRemoteConnection("ws://127.0.0.1:8182/gremlin", "g", pool_size=threads)
g = traversal().with_(conn)
lock = threading.Lock()
result = {"ok": 0, "failed": 0, "errors": []}
end = time.monotonic() + seconds
def work():
    while time.monotonic() < end:
        try:
            assert g.inject(1).count().next() == 1
            with lock: result["ok"] += 1
        except Exception as error:
            with lock:
                result["failed"] += 1
                if len(result["errors"]) < 5: result["errors"].append(repr(error)[:300])
        time.sleep(0.05)
workers = [threading.Thread(target=work) for _ in range(threads)]
for w in workers: w.start()
for w in workers: w.join()
conn.close()
print(json.dumps(result), flush=True)
"""


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.5) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except Exception as error:  # things settle
            last = error
        else:
            if last:
                found: T = last
                return found
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")


# -- the README ------------------------------------------------------------------------------


def readme_quick_start(variant: str = "", block: int = 0) -> list[str]:
    """The command lines of a ``sh`` block of the README's Kubernetes quick start (the first
    one), or of its ``### <variant>`` part (e.g. "The same with Helm")."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quick start: Kubernetes", 1)[1].split("\n## ", 1)[0]
    if variant:
        assert f"### {variant}\n" in section, f"README's Kubernetes quick start has no {variant}"
        section = section.split(f"### {variant}\n", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert len(blocks) > block, (
        f"README's Kubernetes quick start {variant} lacks ```sh block {block}"
    )
    return [line for line in blocks[block].splitlines() if line.strip()]


def readme_expected_table(lines: list[str]) -> list[list[str]]:
    """The output the README shows as comments after its last command."""
    shown: list[list[str]] = []
    for line in reversed(lines):
        if not line.startswith("# "):
            break
        shown.insert(0, line[2:].split())
    return shown


# -- the installation ------------------------------------------------------------------------


@dataclass
class Install:
    backend: Backend
    api: k8s.ApiClient
    readme: list[str]

    @property
    def core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self.api)

    def pods(self, selector: str, namespace: str = NS) -> list[Any]:
        return list(self.core.list_namespaced_pod(namespace, label_selector=selector).items)

    def ready_pods(self, selector: str, namespace: str = NS) -> list[str]:
        names = []
        for pod in self.pods(selector, namespace):
            if pod.metadata.deletion_timestamp:
                continue
            conditions = (pod.status.conditions or []) if pod.status else []
            if any(c.type == "Ready" and c.status == "True" for c in conditions):
                names.append(pod.metadata.name)
        return sorted(names)

    def cluster(self) -> dict[str, Any]:
        found = k8s.CustomObjectsApi(self.api).get_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, "graph"
        )
        assert isinstance(found, dict)
        return found

    def endpoints(self) -> list[dict[str, Any]]:
        slices = k8s.DiscoveryV1Api(self.api).list_namespaced_endpoint_slice(
            NS, label_selector="kubernetes.io/service-name=gremlin"
        )
        out = []
        for item in slices.items:
            for endpoint in item.endpoints or ():
                conditions = endpoint.conditions
                out.append(
                    {
                        "pod": endpoint.target_ref.name if endpoint.target_ref else None,
                        "ready": bool(conditions and conditions.ready),
                        "serving": bool(conditions and conditions.serving),
                        "terminating": bool(conditions and conditions.terminating),
                    }
                )
        return out

    def wait_for(
        self, probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.5
    ) -> T:
        """:func:`wait_for`, and on a timeout what the cluster says (pods, events, the
        operator's last log lines) beside the last value seen."""
        try:
            return wait_for(probe, timeout, what, interval)
        except AssertionError as error:
            report = self.backend.diagnostics(OPERATOR_SELECTOR, (OPERATOR_NS, NS))
            raise AssertionError(f"{error}\n{report}") from None

    def ready_endpoints(self) -> int:
        return int((self.cluster().get("status") or {}).get("readyEndpoints") or 0)

    def scale_servers(self, replicas: int) -> None:
        self.backend.kubectl("scale", "-n", NS, "statefulset/gremlin", f"--replicas={replicas}")

    def wait_servers(self, replicas: int, timeout: float = 180.0) -> list[str]:
        """Until exactly ``replicas`` servers are ready, in the endpoints and in the cluster."""

        def settled() -> list[str] | None:
            ready = self.ready_pods(SERVER_SELECTOR)
            endpoints = [e for e in self.endpoints() if e["ready"]]
            status = self.cluster().get("status") or {}
            if (
                len(ready) == replicas
                and len(self.pods(SERVER_SELECTOR)) == replicas
                and len(endpoints) == replicas
                and status.get("readyEndpoints") == replicas
                and status.get("totalEndpoints") == replicas
            ):
                return ready
            return None

        return self.wait_for(settled, timeout, f"{replicas} Gremlin Servers, ready and listed")

    def wait_apps(self, replicas: int = 2) -> list[str]:
        """The example app's pods, once all of them are ready."""

        def ready() -> list[str] | None:
            pods = self.ready_pods(APP_SELECTOR)
            return pods if len(pods) == replicas else None

        return self.wait_for(ready, 120, f"{replicas} ready app pods")

    def app_pod(self) -> str:
        return self.ready_pods(APP_SELECTOR)[0]

    def load(self, seconds: float, threads: int = 4) -> Load:
        return Load(self, self.app_pod(), seconds, threads)

    def served(self) -> dict[str, int]:
        pods = [
            p.metadata.name for p in self.pods(SERVER_SELECTOR) if not p.metadata.deletion_timestamp
        ]
        return self.backend.served(NS, pods)

    def served_since(self, before: dict[str, int], at_least: int) -> dict[str, int]:
        """What each server counted since `before`, once they count `at_least` requests in all
        (the servers write their counters once a second)."""

        def counted() -> dict[str, int] | None:
            after = self.served()
            since = {pod: after[pod] - before.get(pod, 0) for pod in after}
            return since if sum(since.values()) >= at_least else None

        return self.wait_for(counted, 30, f"the servers to count {at_least} requests")

    def sidecar_hosts(self, pod: str) -> list[str]:
        script = (
            # The injected sidecar serves its admin API over TLS (the push CA's certificate);
            # this read only wants what it holds.
            "import json,ssl,urllib.request;"
            "c=ssl._create_unverified_context();"
            "print(json.dumps(json.load("
            "urllib.request.urlopen('https://127.0.0.1:9901/v1/hosts',context=c))))"
        )
        process = self.backend.exec_popen(NS, pod, "app", ["python", "-c", script])
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        return sorted(h["address"] for h in json.loads(out)["hosts"] if h["state"] != "draining")


class Load:
    """A load generator running in an app container while a check does something else."""

    def __init__(self, install: Install, pod: str, seconds: float, threads: int) -> None:
        self.process = install.backend.exec_popen(
            NS, pod, "app", ["python", "-c", LOAD_SCRIPT, str(seconds), str(threads)]
        )
        self.seconds = seconds

    def result(self) -> dict[str, Any]:
        out, err = self.process.communicate(timeout=self.seconds + 60)
        assert self.process.returncode == 0, f"load generator failed: {err[-2000:]}"
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    if backend_name() == "kind":
        import os

        yield KindBackend(Path(os.environ["KUBECONFIG"]))
        return
    network = NetnsNetwork()
    network.open()
    try:
        dev = DevClusterBackend(network)
        try:
            yield dev
        finally:
            dev.close()
    finally:
        network.close()


def run_quick_start(backend: Backend, lines: list[str], budget: float) -> None:
    """Every command of the quick start in order, all within ``budget`` seconds. A command that
    fails or does not finish is reported with its output so far and what the cluster says
    (pods, events, the operator's last log lines), before pytest's own timeout could fire."""
    deadline = time.monotonic() + budget
    for line in lines:
        if line.startswith("#") or backend.skip_readme_line(line):
            continue
        remaining = deadline - time.monotonic()
        try:
            done = backend.run_readme_line(line, timeout=max(remaining, 1.0))
        except subprocess.TimeoutExpired as expired:
            output = _text(expired.stdout) + _text(expired.stderr)
            problem = f"did not finish within the install's {budget:g} s"
        else:
            if done.returncode == 0:
                continue
            output = done.stdout + done.stderr
            problem = f"exited with {done.returncode}"
        report = backend.diagnostics(OPERATOR_SELECTOR, (OPERATOR_NS, NS))
        pytest.fail(
            f"README command {problem}: {line}\n--- its output so far ---\n"
            f"{output.rstrip() or '(none)'}\n{report}",
            pytrace=False,
        )


def _text(output: str | bytes | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


@pytest.fixture(scope="module")
def install(backend: Backend) -> Iterator[Install]:
    """The README's Kubernetes quick start, every command as written, in order."""
    lines = readme_quick_start()
    run_quick_start(backend, lines, INSTALL_BUDGET_S)
    with backend.api_client() as api:
        yield Install(backend, api, lines)


# -- the checks, in order ----------------------------------------------------------------------


def test_readme_quick_start_brings_the_cluster_ready_with_3_endpoints(install: Install) -> None:
    check_ready_with_3_endpoints(install)


def test_app_pods_get_the_sidecar_injected_as_a_native_sidecar(install: Install) -> None:
    check_sidecars_injected(install)


def test_app_requests_are_answered_and_spread_over_all_3_servers(install: Install) -> None:
    check_traffic_spread(install)


def check_ready_with_3_endpoints(install: Install) -> None:
    expected = readme_expected_table(install.readme)
    assert expected, "the README shows no output of `kubectl get gremlinclusters`"
    assert expected[0] == ["NAME", "READY", "TOTAL", "SIDECARS", "STATUS", "SERVING", "AGE"]
    command = [line for line in install.readme if line.startswith("kubectl get gremlinclusters")]

    def shown() -> list[list[str]] | None:
        out = install.backend.run_readme_line(command[-1]).stdout
        table = [row.split() for row in out.strip().splitlines()]
        # Every column the README shows but AGE, which depends on when you look.
        return table if [r[:-1] for r in table] == [r[:-1] for r in expected] else None

    table = install.wait_for(shown, WAIT_SHOWN_S, f"`{command[-1]}` to show {expected}", interval=2)
    # Both app pods' sidecars hold the list and see a healthy backend.
    assert table[1][:6] == ["graph", "3", "3", "2", "EndpointsAvailable", "2"]


def check_sidecars_injected(install: Install) -> None:
    pods = install.wait_apps()
    assert len(pods) == 2
    for pod in install.pods(APP_SELECTOR):
        sidecars = [c for c in pod.spec.init_containers or () if c.name == SIDECAR]
        assert len(sidecars) == 1, pod.spec.init_containers
        assert sidecars[0].restart_policy == "Always"
        assert pod.metadata.annotations.get("gremlinlb.io/injected") == "graph"


def check_traffic_spread(install: Install) -> None:
    pods = install.wait_apps()
    install.wait_for(
        lambda: all("count 1" in install.backend.logs(NS, p, "app") for p in pods),
        60,
        "the example app's own loop to print `count 1` in every app pod",
    )
    before = install.served()
    result = install.load(seconds=8).result()
    served = install.served_since(before, result["ok"])
    assert result["failed"] == 0, result
    assert len(served) == 3
    # Health checks are a few per server in this window; the load is hundreds of requests.
    assert all(n >= result["ok"] / 6 for n in served.values()), (served, result)
    assert sum(served.values()) >= result["ok"]


def test_scaling_up_to_4_the_new_server_takes_traffic(install: Install) -> None:
    install.scale_servers(4)
    ready = install.wait_servers(4)
    new = "gremlin-3"
    assert new in ready
    install.wait_for(
        lambda: all(len(install.sidecar_hosts(p)) == 4 for p in install.ready_pods(APP_SELECTOR)),
        60,
        "every sidecar to list 4 servers",
    )
    before = install.served()
    result = install.load(seconds=6).result()
    served = install.served_since(before, result["ok"])
    assert result["failed"] == 0, result
    assert served[new] >= result["ok"] / 8, (before, served, result)


def test_scaling_down_to_2_drains_the_removed_servers_with_no_failed_request(
    install: Install,
) -> None:
    install.wait_servers(4)
    ips = {p.status.pod_ip: p.metadata.name for p in install.pods(SERVER_SELECTOR)}
    seen_terminating: set[str] = set()
    reported_draining: set[str] = set()
    stop = threading.Event()

    def watch_endpoints() -> None:
        while not stop.is_set():
            for endpoint in install.endpoints():
                if endpoint["terminating"] and endpoint["serving"]:
                    seen_terminating.add(str(endpoint["pod"]))
            status = install.cluster().get("status") or {}
            for endpoint in status.get("endpoints") or ():
                if endpoint.get("state") == "draining":
                    ip = str(endpoint["address"]).rsplit(":", 1)[0]
                    reported_draining.add(endpoint.get("pod") or ips.get(ip, ip))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch_endpoints, daemon=True)
    watcher.start()
    before = install.served()
    load = install.load(seconds=25)
    install.served_since(before, 100)  # the load is being served
    install.scale_servers(2)
    install.wait_servers(2)
    result = load.result()
    stop.set()
    watcher.join(5)
    assert result["failed"] == 0, result
    assert result["ok"] > 0
    assert seen_terminating >= {"gremlin-2", "gremlin-3"}
    assert reported_draining >= {"gremlin-2", "gremlin-3"}  # in the GremlinCluster's status
    install.scale_servers(3)
    install.wait_servers(3)


def test_deleting_a_gremlin_pod_under_load_fails_no_read(install: Install) -> None:
    install.wait_servers(3)
    before = install.served()
    load = install.load(seconds=25)
    install.served_since(before, 100)  # the load is being served
    install.backend.kubectl("delete", "pod", "-n", NS, "gremlin-0", "--wait=false")
    result = load.result()
    assert result["failed"] == 0, result
    assert result["ok"] > 0
    install.wait_servers(3)


def test_killing_the_operator_keeps_traffic_flowing_and_the_new_operator_resumes(
    install: Install,
) -> None:
    old = install.ready_pods(OPERATOR_SELECTOR, OPERATOR_NS)
    assert old
    before = install.served()
    load = install.load(seconds=20)
    install.served_since(before, 100)  # the load is being served
    install.backend.kubectl(
        "delete", "pod", "-n", OPERATOR_NS, "-l", OPERATOR_SELECTOR, "--wait=false"
    )
    result = load.result()
    assert result["failed"] == 0, result
    assert result["ok"] > 0

    def new_operator() -> list[str] | None:
        ready = install.ready_pods(OPERATOR_SELECTOR, OPERATOR_NS)
        return ready if ready and not set(ready) & set(old) else None

    install.wait_for(new_operator, 180, "a new, ready operator pod")
    # The new operator does its job: a server added now reaches every sidecar.
    install.scale_servers(4)
    install.wait_servers(4)
    install.wait_for(
        lambda: all(len(install.sidecar_hosts(p)) == 4 for p in install.ready_pods(APP_SELECTOR)),
        90,
        "every sidecar to hear of the 4th server from the new operator",
    )
    install.scale_servers(3)
    install.wait_servers(3)


def test_deleting_the_gremlincluster_removes_its_token_secret(install: Install) -> None:
    assert install.core.read_namespaced_secret("graph-gremlinlb-token", NS)
    install.backend.kubectl("delete", "gremlincluster", "-n", NS, "graph", "--timeout=60s")

    def secret_gone() -> bool:
        try:
            install.core.read_namespaced_secret("graph-gremlinlb-token", NS)
        except k8s.ApiException as error:
            return bool(error.status == 404)
        return False

    install.wait_for(secret_gone, 60, "the token Secret to be deleted")
    # The sidecars keep their last list: deleting the cluster never cuts traffic.
    result = install.load(seconds=4).result()
    assert result["failed"] == 0, result
    assert result["ok"] > 0


def test_a_pod_the_node_cannot_run_says_why_and_its_deletion_completes(install: Install) -> None:
    namespace = "unrunnable"
    install.backend.kubectl("create", "namespace", namespace)
    install.backend.kubectl(
        "run",
        "nowhere",
        "-n",
        namespace,
        "--image=gremlinlb.invalid/no-such-image:1",
        "--restart=Never",
    )

    def waiting_reason() -> str | None:
        pod = install.core.read_namespaced_pod("nowhere", namespace)
        statuses = (pod.status.container_statuses or []) if pod.status else []
        waiting = statuses[0].state.waiting if statuses and statuses[0].state else None
        return (
            waiting.reason
            if waiting is not None and waiting.reason != "ContainerCreating"
            else None
        )

    reason = install.wait_for(
        waiting_reason, 120, "the pod's container to say why it is not running"
    )
    assert reason
    install.backend.kubectl("delete", "namespace", namespace, "--wait=false")

    def gone() -> bool:
        try:
            install.core.read_namespace(namespace)
        except k8s.ApiException as error:
            return bool(error.status == 404)
        return False

    install.wait_for(gone, 180, f"namespace {namespace} to finish terminating", interval=1)


def test_deleting_the_namespace_completes(install: Install) -> None:
    install.backend.kubectl("delete", "namespace", NS, "--wait=false")

    def gone() -> bool:
        try:
            install.core.read_namespace(NS)
        except k8s.ApiException as error:
            return bool(error.status == 404)
        return False

    install.wait_for(gone, 180, f"namespace {NS} to finish terminating", interval=1)


# -- the same through the Helm chart -------------------------------------------------------------
# After the checks above: the manifests' install is removed, the README's Helm variant installs
# on the same cluster, and the first three checks run again on it.

HELM_VARIANT = "The same with Helm"


@pytest.fixture(scope="module")
def chart_install(backend: Backend) -> Iterator[Install]:
    """The README's Helm variant, every command as written, in order, on a cluster without
    gremlinlb (the demo namespace goes first, while an operator may still clear its
    finalizers)."""
    remove = ("delete", "--ignore-not-found", "--timeout=180s")
    backend.kubectl(*remove, "namespace", NS, timeout=200)
    backend.kubectl(*remove, "-f", str(REPO / "manifests"), "-f", str(REPO / "crds"), timeout=200)
    lines = readme_quick_start(HELM_VARIANT)
    run_quick_start(backend, lines, INSTALL_BUDGET_S)
    with backend.api_client() as api:
        yield Install(backend, api, lines)


def test_the_helm_install_brings_the_cluster_ready_with_3_endpoints(chart_install: Install) -> None:
    deployment = chart_install.backend.kubectl(
        "get", "deployment", "-n", OPERATOR_NS, "gremlinlb-operator", "-o", "json"
    )
    labels = json.loads(deployment)["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "Helm"  # the release's, not manifests/'s
    check_ready_with_3_endpoints(chart_install)


def test_the_helm_install_injects_the_sidecar(chart_install: Install) -> None:
    check_sidecars_injected(chart_install)


def test_the_helm_install_spreads_app_requests_over_all_3_servers(chart_install: Install) -> None:
    check_traffic_spread(chart_install)


def test_the_readme_helm_upgrade_with_sidecar_scrape_annotations_leads_to_the_metrics(
    chart_install: Install,
) -> None:
    """The README's upgrade commands (the CRD, then `helm upgrade`), with one value changed:
    app pods made afterwards carry prometheus.io annotations that lead to the sidecar's
    metrics."""
    for line in readme_quick_start(HELM_VARIANT, block=1):
        if line.startswith("helm upgrade"):
            line += " --set scrapeAnnotations.sidecars=true"
        done = chart_install.backend.run_readme_line(line)
        assert done.returncode == 0, f"{line}: {done.stdout}{done.stderr}"
    chart_install.backend.kubectl("rollout", "restart", "-n", NS, "deployment/gremlin-app")

    def annotated() -> list[dict[str, str]] | None:
        pods = [p for p in chart_install.pods(APP_SELECTOR) if not p.metadata.deletion_timestamp]
        ready = set(chart_install.ready_pods(APP_SELECTOR))
        found = [dict(p.metadata.annotations or {}) for p in pods]
        done = len(pods) == 2 == len(ready) and all("prometheus.io/scrape" in a for a in found)
        return found if done else None

    for found in chart_install.wait_for(annotated, 180, "2 new ready, annotated app pods"):
        scrape = {k.split("/")[1]: v for k, v in found.items() if k.startswith("prometheus.io/")}
        assert scrape == {
            "scrape": "true",
            "port": "9901",  # the GremlinCluster's spec.sidecar.adminPort (its default)
            "path": "/metrics",
            "scheme": "https",  # the operator has a push CA: the admin API serves HTTPS
        }
    url = "{scheme}://127.0.0.1:{port}{path}".format(**scrape)
    script = (
        "import ssl,sys,urllib.request;c=ssl._create_unverified_context();"
        "sys.stdout.write(urllib.request.urlopen(sys.argv[1],context=c).read().decode())"
    )
    process = chart_install.backend.exec_popen(
        NS, chart_install.app_pod(), "app", ["python", "-c", script, url]
    )
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "gremlinlb_sidecar_backend_requests" in out
