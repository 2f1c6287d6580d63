"""A Kubernetes cluster without containers: the real control plane, kwok nodes, a node agent.

:class:`Cluster` starts, on loopback with free ports:

* etcd and kube-apiserver (:class:`ClusterControlPlane`: the test :class:`ControlPlane` with the
  ServiceAccount admission plugin on, webhooks routed to endpoint IPs, and a serving certificate
  that also names the ``kubernetes`` Service's cluster IP);
* kube-controller-manager (every default controller: Deployments, ReplicaSets, StatefulSets,
  EndpointSlices, garbage collection, namespaces, ServiceAccounts, ...) and kube-scheduler;
* kwok, managing only this cluster's node (by annotation), with the Stages in
  ``resources/kwok-stages.yaml``: it keeps the node Ready and gives each pod an IP from the
  node's pod CIDR, which is a block of the test subnet leased for this run (two runs on one
  machine never share addresses);
* :class:`~tests.devcluster.agent.NodeAgent`, the kubelet stand-in that makes those pods
  real processes in network namespaces at their IPs.

Everything dies with the test process (parent-death signal; namespaces are swept by the next
run). Needs root (network namespaces) and ``make k8s-bins``.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, cast

from kubernetes import client as k8s

from tests.devcluster.agent import ImageCatalog, NodeAgent
from tests.devcluster.binaries import Binaries, find_binaries
from tests.devcluster.controlplane import (
    SERVICE_CLUSTER_IP_RANGE,
    ControlPlane,
    _Process,
    free_port,
)
from tests.devcluster.errors import BinariesMissingError, ControlPlaneStartError
from tests.devcluster.netns import GATEWAY, NetnsNetwork
from tests.devcluster.pki import ControlPlaneCerts, generate_certs

log = logging.getLogger(__name__)

#: kwok manages nodes carrying this annotation, and only those.
KWOK_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
NODE_NAME = "gremlinlb-node"
#: A /27: 30 pod addresses, enough for the examples scaled up plus pods being replaced.
POD_CIDR_PREFIX = 27
#: The ``kubernetes`` Service's cluster IP (the first of the range), named in the serving cert.
KUBERNETES_SERVICE_IP = str(next(ipaddress.IPv4Network(SERVICE_CLUSTER_IP_RANGE).hosts()))


class ClusterControlPlane(ControlPlane):
    """The test control plane, configured as a cluster with pods needs it.

    * the ServiceAccount admission plugin runs: pods get their projected token volume;
    * ``--enable-aggregator-routing``: the apiserver calls webhooks (the operator's sidecar
      injector) at an endpoint IP of their Service, as there is no kube-proxy;
    * a request-header CA, so the controller-manager and scheduler find one.
    """

    def _generate_certs(self) -> ControlPlaneCerts:
        return generate_certs(self.workdir / "pki", ip_sans=("127.0.0.1", KUBERNETES_SERVICE_IP))

    def _apiserver_argv(self, binaries: Binaries) -> list[str]:
        assert self.certs is not None
        argv = [
            a
            for a in super()._apiserver_argv(binaries)
            if a != "--disable-admission-plugins=ServiceAccount"
        ]
        return [
            *argv,
            "--enable-aggregator-routing=true",
            f"--requestheader-client-ca-file={self.certs.ca_cert}",
            "--requestheader-allowed-names=front-proxy-client",
        ]


def _unverified_context() -> ssl.SSLContext:
    # The components' own /healthz on loopback, served with their self-signed certificates.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _healthz(port: int) -> Callable[[], tuple[bool, str]]:
    def probe() -> tuple[bool, str]:
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}),
            urllib.request.HTTPSHandler(context=_unverified_context()),
        )
        try:
            with opener.open(f"https://127.0.0.1:{port}/healthz", timeout=2) as response:
                body = response.read().decode("utf-8", "replace")
                return response.status == 200, body
        except OSError as exc:
            return False, str(exc)

    return probe


def kwok_stages_text() -> str:
    return (Path(__file__).parent / "resources" / "kwok-stages.yaml").read_text(encoding="utf-8")


class Cluster:
    """The whole cluster of the end-to-end test; see the module docstring.

    ``images`` says which container images the node agent can run and how.
    """

    def __init__(
        self,
        network: NetnsNetwork,
        images: ImageCatalog,
        *,
        workdir: Path | None = None,
        start_timeout_s: float = 90.0,
    ) -> None:
        self.network = network
        self.images = images
        self.plane = ClusterControlPlane(workdir, start_timeout_s=start_timeout_s)
        self._start_timeout_s = start_timeout_s
        self.pod_cidr: ipaddress.IPv4Network | None = None
        self.agent: NodeAgent | None = None
        self._components: list[_Process] = []
        self._started = False

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def workdir(self) -> Path:
        return self.plane.workdir

    def start(self) -> Cluster:
        if self._started:
            return self
        binaries = find_binaries()
        missing = binaries.missing_for_cluster()
        if missing:
            raise BinariesMissingError(
                f"{', '.join(str(p) for p in missing)} not built: run `make k8s-bins` "
                "(hack/k8s/build.sh builds the controller-manager, scheduler, kwok and helm too)"
            )
        self._started = True
        try:
            self.pod_cidr = self.network.lease_block(POD_CIDR_PREFIX)
            self.plane.start()
            self._start_component(
                "kube-controller-manager", self._controller_manager_argv(binaries)
            )
            self._start_component("kube-scheduler", self._scheduler_argv(binaries))
            self._start_kwok(binaries)
            with self.plane.api_client() as api:
                self._create_node(api)
                self._wait_node_ready(api)
            self.agent = NodeAgent(
                self.plane,
                NODE_NAME,
                self.network,
                self.pod_cidr,
                self.workdir / "node",
                self.images,
            )
            self.agent.start()
        except BaseException:
            self.stop()
            raise
        log.info("cluster up: node %s, pod CIDR %s", NODE_NAME, self.pod_cidr)
        return self

    def stop(self) -> None:
        """Stop the agent (and every pod's processes), kwok, the controllers, the control plane."""
        if not self._started:
            return
        self._started = False
        if self.agent is not None:
            self.agent.stop()
            self.agent = None
        for component in reversed(self._components):
            component.stop()
        self._components.clear()
        self.plane.stop()
        if self.pod_cidr is not None:
            self.network.release_block(self.pod_cidr)
            self.pod_cidr = None

    # -- components ----------------------------------------------------------------------------

    def _start_component(self, name: str, argv_for_port: Callable[[int], list[str]]) -> None:
        for attempt in range(3):
            port = free_port()
            proc = _Process(name, argv_for_port(port), self.workdir / f"{name}.log")
            proc.start()
            self._components.append(proc)
            try:
                self.plane._wait_ready(proc, _healthz(port))
                return
            except ControlPlaneStartError:
                proc.stop()
                self._components.remove(proc)
                if attempt == 2:
                    raise

    def _controller_manager_argv(self, binaries: Binaries) -> Callable[[int], list[str]]:
        certs = self.plane.certs
        assert certs is not None
        kubeconfig = self.plane.admin_kubeconfig

        def argv(port: int) -> list[str]:
            return [
                str(binaries.kube_controller_manager),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                "--leader-elect=false",
                f"--root-ca-file={certs.ca_cert}",
                f"--service-account-private-key-file={certs.sa_private_key}",
                "--use-service-account-credentials=false",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--v=1",
            ]

        return argv

    def _scheduler_argv(self, binaries: Binaries) -> Callable[[int], list[str]]:
        kubeconfig = self.plane.admin_kubeconfig

        def argv(port: int) -> list[str]:
            return [
                str(binaries.kube_scheduler),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                "--leader-elect=false",
                "--v=1",
            ]

        return argv

    def _start_kwok(self, binaries: Binaries) -> None:
        stages = self.workdir / "kwok-stages.yaml"
        stages.write_text(kwok_stages_text(), encoding="utf-8")
        key, value = KWOK_ANNOTATION
        argv = [
            str(binaries.kwok),
            f"--kubeconfig={self.plane.admin_kubeconfig}",
            f"--config={stages}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={key}={value}",
            f"--node-ip={GATEWAY}",
            "--node-lease-duration-seconds=40",
        ]
        proc = _Process("kwok", argv, self.workdir / "kwok.log")
        proc.start()
        self._components.append(proc)
        # kwok has no health endpoint unless it serves one; the node turning Ready shows it works.
        time.sleep(0.2)
        if not proc.running():
            raise ControlPlaneStartError(f"kwok exited at start; see {proc.log_path}")

    def _create_node(self, api: k8s.ApiClient) -> None:
        assert self.pod_cidr is not None
        key, value = KWOK_ANNOTATION
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE_NAME,
                "annotations": {key: value},
                "labels": {
                    "kubernetes.io/hostname": NODE_NAME,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                },
            },
            "spec": {"podCIDR": str(self.pod_cidr), "podCIDRs": [str(self.pod_cidr)]},
            "status": {"allocatable": {"cpu": "32", "memory": "64Gi", "pods": "110"}},
        }
        k8s.CoreV1Api(api).create_node(cast(Any, node))

    def _wait_node_ready(self, api: k8s.ApiClient) -> None:
        core = k8s.CoreV1Api(api)
        deadline = time.monotonic() + self._start_timeout_s
        while time.monotonic() < deadline:
            node = core.read_node(NODE_NAME)
            conditions = (node.status.conditions or []) if node.status else []
            if any(c.type == "Ready" and c.status == "True" for c in conditions):
                return
            if not all(c.running() for c in self._components):
                break
            time.sleep(0.2)
        ends = "\n".join(
            f"{c.name}: running={c.running()} log {c.log_path}" for c in self._components
        )
        raise ControlPlaneStartError(f"node {NODE_NAME} did not become Ready (kwok):\n{ends}")

    def kubectl(self, *args: str, check: bool = True, timeout: float = 120.0) -> str:
        """kubectl as the cluster admin; its standard output."""
        return self.plane.kubectl(*args, check=check, timeout=timeout).stdout
