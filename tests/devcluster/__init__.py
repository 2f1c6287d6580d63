"""A real Kubernetes control plane (etcd + kube-apiserver) and pod networks for tests.

* :class:`ControlPlane` starts etcd and kube-apiserver (built by ``make k8s-bins``) on loopback,
  with RBAC, an admin token and a least-privilege operator token, and writes kubeconfigs.
* :mod:`tests.devcluster.objects` stands in for the missing kubelet and controllers: running
  pods with IPs, EndpointSlices, fresh namespaces.
* :class:`NetnsNetwork` gives "pods" real addresses in 10.213.0.0/24 through network namespaces
  on a private bridge, so the apiserver accepts them in EndpointSlices and the host reaches them.
* :class:`Cluster` is the whole cluster without containers: the control plane plus
  kube-controller-manager, kube-scheduler, a kwok node, and :class:`NodeAgent` (a kubelet
  stand-in) running each pod's containers as real processes in a namespace at the pod's IP.
"""

from __future__ import annotations

from tests.devcluster.agent import ImageCatalog, NodeAgent
from tests.devcluster.binaries import Binaries, find_binaries, pinned_versions
from tests.devcluster.cluster import Cluster
from tests.devcluster.controlplane import ControlPlane, free_port, write_kubeconfig
from tests.devcluster.errors import (
    BinariesMissingError,
    ControlPlaneStartError,
    DevClusterError,
    NetnsError,
)
from tests.devcluster.netns import (
    BRIDGE,
    GATEWAY,
    SUBNET,
    NetnsHost,
    NetnsNetwork,
    subnet_conflicts,
    sweep_stale,
)
from tests.devcluster.objects import (
    EndpointSpec,
    RawApi,
    apply_endpoint_slice,
    begin_pod_termination,
    can_i,
    create_namespace,
    create_running_pod,
    create_service,
    delete_endpoint_slice,
    delete_pod,
    endpoint_slice,
    purge_namespace,
    service_account_token,
    set_pod_ready,
)
from tests.devcluster.pki import TokenUser

__all__ = [
    "BRIDGE",
    "GATEWAY",
    "SUBNET",
    "Binaries",
    "BinariesMissingError",
    "Cluster",
    "ControlPlane",
    "ControlPlaneStartError",
    "DevClusterError",
    "EndpointSpec",
    "ImageCatalog",
    "NetnsError",
    "NetnsHost",
    "NetnsNetwork",
    "NodeAgent",
    "RawApi",
    "TokenUser",
    "apply_endpoint_slice",
    "begin_pod_termination",
    "can_i",
    "create_namespace",
    "create_running_pod",
    "create_service",
    "delete_endpoint_slice",
    "delete_pod",
    "endpoint_slice",
    "find_binaries",
    "free_port",
    "pinned_versions",
    "purge_namespace",
    "service_account_token",
    "set_pod_ready",
    "subnet_conflicts",
    "sweep_stale",
    "write_kubeconfig",
]
