"""The two clusters the end-to-end checks (tests/integration/test_cluster_e2e.py) run on.

* ``devcluster`` (default, ``make test`` / ``make cluster-e2e``): :class:`DevClusterBackend`, the
  container-less cluster of :mod:`tests.devcluster.cluster`: real etcd, kube-apiserver,
  controller-manager, scheduler, kwok for the node, and the node agent running each pod's
  containers as real processes in a network namespace at the pod's IP.
* ``kind`` (``make kind-e2e``, needs Docker): :class:`KindBackend`, any cluster ``KUBECONFIG``
  points at, with the ``gremlinlb:0.1.0`` image already loaded (hack/kind-e2e.sh does that).

Chosen with ``GREMLINLB_E2E_BACKEND``. Both give the checks the same few verbs: run a README
command line, ``kubectl``, exec in a container, read a container's log, and count the requests
each Gremlin Server served.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from gremlinlb.devservers.server import ensure_runtime
from tests.devcluster import Cluster, ImageCatalog, NetnsNetwork, NodeAgent

REPO = Path(__file__).resolve().parent.parent
BACKEND_ENV = "GREMLINLB_E2E_BACKEND"
#: Keep the cluster's directory (logs of every component, each container's output): a path.
KEEP_ENV = "GREMLINLB_CLUSTER_DIR"
GREMLIN_CONTAINER = "gremlin-server"
#: The Gremlin Server request counter the checks read (bytecode requests, the app's and the
#: sidecars' health checks alike), written once a second by the servers themselves.
TRAVERSAL_METRIC = "org.apache.tinkerpop.gremlin.server.GremlinServer.op.traversal.csv"
GREMLIN_SERVER_METRICS = """
metrics: {
  csvReporter: {enabled: true, interval: 1000, fileName: "@WORK_DIR@/metrics"}}
"""


class Backend(ABC):
    """A cluster the checks run on."""

    name: str
    kubeconfig: Path

    def api_client(self) -> k8s.ApiClient:
        api: k8s.ApiClient = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
            str(self.kubeconfig)
        )
        return api

    @abstractmethod
    def shell_env(self) -> dict[str, str]:
        """Environment in which ``kubectl`` on PATH talks to this cluster as its admin."""

    def run_readme_line(
        self, line: str, timeout: float = 330.0
    ) -> subprocess.CompletedProcess[str]:
        """One command line of the README, run by bash from the repository root."""
        return subprocess.run(
            ["bash", "-euo", "pipefail", "-c", line],
            cwd=REPO,
            env=self.shell_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def diagnostics(self, selector: str, namespaces: Sequence[str], tail: int = 30) -> str:
        """What a user would look at when something hangs: the pods and recent events of each
        namespace, and the last log lines of every container of the pods matching ``selector``
        (e.g. the operator's). Each read on its own, so one that fails hides nothing else."""
        sections: list[str] = []
        kubectl = partial(self.kubectl, timeout=20.0)

        def section(title: str, read: Callable[[], str]) -> None:
            try:
                body = read().rstrip() or "(empty)"
            except Exception as error:  # a report of what could be read
                body = f"(could not read: {error})"
            sections.append(f"--- {title} ---\n" + "\n".join(body.splitlines()[-tail:]))

        for ns in namespaces:
            section(f"pods in {ns}", partial(kubectl, "get", "pods", "-n", ns, "-o", "wide"))
            events = ("get", "events", "-n", ns, "--sort-by=.lastTimestamp")
            section(f"events in {ns}", partial(kubectl, *events))
            try:
                pods = json.loads(kubectl("get", "pods", "-n", ns, "-l", selector, "-o", "json"))
            except (AssertionError, ValueError, subprocess.SubprocessError):
                continue
            for pod in pods.get("items", ()):
                name = pod["metadata"]["name"]
                spec = pod.get("spec", {})
                for container in (*spec.get("initContainers", ()), *spec.get("containers", ())):
                    read = partial(self.logs, ns, name, container["name"])
                    section(f"last log lines of {ns}/{name}/{container['name']}", read)
        return "\n".join(sections)

    def kubectl(self, *args: str, timeout: float = 120.0) -> str:
        done = subprocess.run(
            ["kubectl", *args],
            env=self.shell_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    @abstractmethod
    def exec_popen(
        self, namespace: str, pod: str, container: str, argv: Sequence[str]
    ) -> subprocess.Popen[str]:
        """Start ``argv`` in the container (stdout and stderr piped, as text)."""

    @abstractmethod
    def logs(self, namespace: str, pod: str, container: str) -> str: ...

    @abstractmethod
    def served(self, namespace: str, pods: Sequence[str]) -> dict[str, int]:
        """Requests each Gremlin Server pod has served so far."""

    def skip_readme_line(self, line: str) -> bool:
        """README lines this back end does otherwise (the image build)."""
        return line.startswith("docker build")

    def close(self) -> None:
        return None


class DevClusterBackend(Backend):
    name = "devcluster"

    def __init__(self, network: NetnsNetwork) -> None:
        images = ImageCatalog(
            # The virtualenv's bin/ (not resolved: its python is a link to the system's).
            bin_dir=Path(sys.executable).parent,
            host_paths=(REPO,),  # the strict editable install links into the checkout
            gremlin_runtime=ensure_runtime(),
            gremlin_server_config=GREMLIN_SERVER_METRICS,
        )
        keep = os.environ.get(KEEP_ENV)
        self.cluster = Cluster(network, images, workdir=Path(keep) if keep else None).start()
        self.kubeconfig = self.cluster.plane.admin_kubeconfig

    @property
    def agent(self) -> NodeAgent:
        assert self.cluster.agent is not None
        return self.cluster.agent

    def shell_env(self) -> dict[str, str]:
        bin_dir = self.cluster.plane.binaries.kubectl.parent
        return {
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
            "KUBECONFIG": str(self.kubeconfig),
        }

    def exec_popen(
        self, namespace: str, pod: str, container: str, argv: Sequence[str]
    ) -> subprocess.Popen[str]:
        command, env = self.agent.exec_command(namespace, pod, container, argv)
        return subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def logs(self, namespace: str, pod: str, container: str) -> str:
        return str(self.agent.logs(namespace, pod, container))

    def served(self, namespace: str, pods: Sequence[str]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for pod in pods:
            directory = self.agent.container_dir(namespace, pod, GREMLIN_CONTAINER)
            total = 0
            for path in directory.glob(f"run-*/metrics/{TRAVERSAL_METRIC}"):
                rows = list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))
                if rows:
                    total += int(rows[-1]["count"])
            counts[pod] = total
        return counts

    def close(self) -> None:
        self.cluster.stop()


class KindBackend(Backend):
    """Any real cluster (kind): kubectl from PATH, ``KUBECONFIG`` from the environment."""

    name = "kind"

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig

    def shell_env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def exec_popen(
        self, namespace: str, pod: str, container: str, argv: Sequence[str]
    ) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["kubectl", "exec", "-n", namespace, pod, "-c", container, "--", *argv],
            env=self.shell_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def logs(self, namespace: str, pod: str, container: str) -> str:
        return self.kubectl("logs", "-n", namespace, pod, "-c", container)

    def served(self, namespace: str, pods: Sequence[str]) -> dict[str, int]:
        """On a real cluster the servers run the image's own configuration (no CSV metrics):
        count at the sidecars instead, summing each app pod's successful attempts per server."""
        ips = {
            json.loads(self.kubectl("get", "pod", "-n", namespace, p, "-o", "json"))["status"][
                "podIP"
            ]: p
            for p in pods
        }
        counts = dict.fromkeys(pods, 0)
        apps = self.kubectl(
            "get",
            "pod",
            "-n",
            namespace,
            "-l",
            "app.kubernetes.io/name=gremlin-app",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ).split()
        for app in apps:
            text = subprocess.run(
                [
                    "kubectl",
                    "exec",
                    "-n",
                    namespace,
                    app,
                    "-c",
                    "app",
                    "--",
                    "python",
                    "-c",
                    "import urllib.request;print(urllib.request.urlopen("
                    "'http://127.0.0.1:9901/metrics').read().decode())",
                ],
                env=self.shell_env(),
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout
            for line in text.splitlines():
                match = re.match(
                    r"gremlinlb_sidecar_backend_requests_total"
                    r"\{(?P<labels>[^}]*)\} (?P<n>[0-9.e+]+)",
                    line,
                )
                if not match:
                    continue
                labels: Mapping[str, str] = dict(
                    re.findall(r'(\w+)="([^"]*)"', match.group("labels"))
                )
                host = labels.get("host", "").rsplit(":", 1)[0]
                if host in ips:
                    counts[ips[host]] += int(float(match.group("n")))
        return counts


def backend_name() -> str:
    name = os.environ.get(BACKEND_ENV, "devcluster")
    if name not in ("devcluster", "kind"):
        raise ValueError(f"{BACKEND_ENV}={name!r}: use devcluster (default) or kind")
    return name
