"""Helpers standing in for the parts of Kubernetes the test control plane does not run.

There is no kubelet, scheduler, EndpointSlice controller or namespace controller, so:

* :func:`create_running_pod` creates a pod already bound to a (fake) node and patches its status
  to Running and Ready with a pod IP, as a kubelet would; :func:`set_pod_ready` flips readiness;
  :func:`begin_pod_termination` leaves a pod terminating; :func:`delete_pod` removes it at once.
* :func:`apply_endpoint_slice` writes the EndpointSlice a controller would have written.
* :func:`create_namespace` makes a fresh namespace per test and :func:`purge_namespace` deletes
  everything in it (deleted namespaces themselves stay Terminating forever here).

Every function takes a ``kubernetes.client.ApiClient`` (from :meth:`ControlPlane.api_client`).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

FAKE_NODE = "gremlinlb-fake-node"
MANAGED_BY = "gremlinlb-tests"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
_MERGE_PATCH = "application/merge-patch+json"


# -- namespaces ------------------------------------------------------------------------------------


def create_namespace(
    api: k8s.ApiClient, prefix: str = "t-", labels: Mapping[str, str] | None = None
) -> str:
    """A new namespace named ``<prefix><random suffix>``; returns its name."""
    namespace = k8s.CoreV1Api(api).create_namespace(
        k8s.V1Namespace(metadata=k8s.V1ObjectMeta(generate_name=prefix, labels=dict(labels or {})))
    )
    assert namespace.metadata is not None
    assert namespace.metadata.name is not None
    return namespace.metadata.name


def purge_namespace(api: k8s.ApiClient, namespace: str) -> None:
    """Delete everything in ``namespace`` (pods at once), then the namespace itself.

    What the namespace controller would do: every namespaced resource type that supports
    ``deletecollection`` (custom resources included) is emptied. Objects held by finalizers
    stay until whoever owns the finalizer removes it. Best effort: errors are logged.
    """
    raw = RawApi(api)
    delete_options = {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "gracePeriodSeconds": 0,
        "propagationPolicy": "Background",
    }
    for base, resource in raw.namespaced_collections():
        status, body = raw.request(
            "DELETE", f"{base}/namespaces/{namespace}/{resource}", delete_options
        )
        if status >= 400 and status not in (404, 405):
            log.warning("purging %s/%s in %s: %s %s", base, resource, namespace, status, body)
    with contextlib.suppress(ApiException):
        k8s.CoreV1Api(api).delete_namespace(namespace)


# -- pods ------------------------------------------------------------------------------------------


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def _pod_status_patch(pod: k8s.V1Pod, ip: str, ready: bool, host_ip: str | None) -> dict[str, Any]:
    now = _now().isoformat().replace("+00:00", "Z")
    ready_text = "True" if ready else "False"
    spec = pod.spec
    assert spec is not None
    conditions = [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
        {"type": "Initialized", "status": "True", "lastTransitionTime": now},
        {"type": "ContainersReady", "status": ready_text, "lastTransitionTime": now},
        {"type": "Ready", "status": ready_text, "lastTransitionTime": now},
    ]
    statuses = [
        {
            "name": c.name,
            "image": c.image or "unknown",
            "imageID": "",
            "containerID": f"fake://{pod.metadata.uid if pod.metadata else ''}/{c.name}",
            "ready": ready,
            "started": True,
            "restartCount": 0,
            "state": {"running": {"startedAt": now}},
        }
        for c in spec.containers
    ]
    status: dict[str, Any] = {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": now,
        "conditions": conditions,
        "containerStatuses": statuses,
    }
    if host_ip is not None:
        status["hostIP"] = host_ip
        status["hostIPs"] = [{"ip": host_ip}]
    return {"status": status}


def create_running_pod(
    api: k8s.ApiClient,
    namespace: str,
    name: str,
    ip: str,
    *,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    containers: Sequence[k8s.V1Container] | None = None,
    ready: bool = True,
    node_name: str = FAKE_NODE,
    host_ip: str | None = None,
) -> k8s.V1Pod:
    """Create a pod bound to ``node_name`` and report it Running (and Ready) at ``ip``.

    The pod object is real (watchers see ADDED then MODIFIED, like with a kubelet); no container
    runs. ``containers`` defaults to one container named ``main``.
    """
    core = k8s.CoreV1Api(api)
    pod = k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(
            name=name,
            namespace=namespace,
            labels=dict(labels or {}),
            annotations=dict(annotations or {}),
        ),
        spec=k8s.V1PodSpec(
            node_name=node_name,
            containers=list(
                containers or [k8s.V1Container(name="main", image="fake.invalid/main")]
            ),
        ),
    )
    created = core.create_namespaced_pod(namespace, pod)
    return core.patch_namespaced_pod_status(
        name, namespace, _pod_status_patch(created, ip, ready, host_ip), _content_type=_MERGE_PATCH
    )


def set_pod_ready(api: k8s.ApiClient, namespace: str, name: str, ready: bool) -> k8s.V1Pod:
    """Flip the Ready and ContainersReady conditions (and container readiness) of a pod."""
    core = k8s.CoreV1Api(api)
    pod = core.read_namespaced_pod(name, namespace)
    status = pod.status
    ip = status.pod_ip if status is not None else None
    if ip is None:
        raise ValueError(f"pod {namespace}/{name} has no podIP: create it with create_running_pod")
    host_ip = status.host_ip if status is not None else None
    return core.patch_namespaced_pod_status(
        name, namespace, _pod_status_patch(pod, ip, ready, host_ip), _content_type=_MERGE_PATCH
    )


def begin_pod_termination(
    api: k8s.ApiClient, namespace: str, name: str, grace_period_s: int = 600
) -> None:
    """Delete gracefully: the pod gets a deletionTimestamp and, with no kubelet, stays there."""
    k8s.CoreV1Api(api).delete_namespaced_pod(name, namespace, grace_period_seconds=grace_period_s)


def delete_pod(api: k8s.ApiClient, namespace: str, name: str) -> None:
    """Remove a pod at once (grace period 0), even one left terminating."""
    with contextlib.suppress(ApiException):
        k8s.CoreV1Api(api).delete_namespaced_pod(name, namespace, grace_period_seconds=0)


# -- services and endpoint slices ------------------------------------------------------------------


def create_service(
    api: k8s.ApiClient,
    namespace: str,
    name: str,
    port: int,
    *,
    port_name: str = "gremlin",
    selector: Mapping[str, str] | None = None,
    headless: bool = True,
    labels: Mapping[str, str] | None = None,
) -> k8s.V1Service:
    """A Service for the Gremlin Servers (headless by default, like a StatefulSet's)."""
    service = k8s.V1Service(
        metadata=k8s.V1ObjectMeta(name=name, namespace=namespace, labels=dict(labels or {})),
        spec=k8s.V1ServiceSpec(
            selector=dict(selector) if selector is not None else None,
            cluster_ip="None" if headless else None,
            ports=[k8s.V1ServicePort(name=port_name, port=port, protocol="TCP")],
        ),
    )
    return k8s.CoreV1Api(api).create_namespaced_service(namespace, service)


@dataclass(frozen=True)
class EndpointSpec:
    """One endpoint of an EndpointSlice, with the three conditions consumers look at."""

    address: str
    ready: bool = True
    serving: bool | None = None
    terminating: bool = False
    pod_name: str | None = None
    hostname: str | None = None
    node_name: str | None = FAKE_NODE
    zone: str | None = None
    #: The zone a topology-aware-routing hint allots it to (``hints.forZones``).
    hint: str | None = None

    @classmethod
    def draining(cls, address: str, pod_name: str | None = None) -> EndpointSpec:
        """Serving but terminating: existing work may finish, new work should go elsewhere."""
        return cls(address, ready=False, serving=True, terminating=True, pod_name=pod_name)

    def to_model(self, namespace: str) -> k8s.V1Endpoint:
        serving = self.serving if self.serving is not None else self.ready
        return k8s.V1Endpoint(
            addresses=[self.address],
            conditions=k8s.V1EndpointConditions(
                ready=self.ready, serving=serving, terminating=self.terminating
            ),
            hostname=self.hostname,
            node_name=self.node_name,
            zone=self.zone,
            hints=(
                k8s.V1EndpointHints(for_zones=[k8s.V1ForZone(name=self.hint)])
                if self.hint is not None
                else None
            ),
            target_ref=(
                k8s.V1ObjectReference(kind="Pod", name=self.pod_name, namespace=namespace)
                if self.pod_name is not None
                else None
            ),
        )


def endpoint_slice(
    namespace: str,
    service: str,
    endpoints: Sequence[EndpointSpec],
    *,
    port: int,
    name: str | None = None,
    port_name: str = "gremlin",
    owner: k8s.V1Service | None = None,
) -> k8s.V1EndpointSlice:
    """The EndpointSlice object (not yet sent) for ``service`` with ``endpoints``."""
    owners = None
    if owner is not None and owner.metadata is not None and owner.metadata.uid is not None:
        owners = [
            k8s.V1OwnerReference(
                api_version="v1",
                kind="Service",
                name=owner.metadata.name or service,
                uid=owner.metadata.uid,
                controller=True,
                block_owner_deletion=True,
            )
        ]
    return k8s.V1EndpointSlice(
        api_version="discovery.k8s.io/v1",
        kind="EndpointSlice",
        address_type="IPv4",
        metadata=k8s.V1ObjectMeta(
            name=name or f"{service}-slice",
            namespace=namespace,
            labels={SERVICE_NAME_LABEL: service, MANAGED_BY_LABEL: MANAGED_BY},
            owner_references=owners,
        ),
        endpoints=[e.to_model(namespace) for e in endpoints],
        ports=[k8s.DiscoveryV1EndpointPort(name=port_name, port=port, protocol="TCP")],
    )


def apply_endpoint_slice(
    api: k8s.ApiClient,
    namespace: str,
    service: str,
    endpoints: Sequence[EndpointSpec],
    *,
    port: int,
    name: str | None = None,
    port_name: str = "gremlin",
    owner: k8s.V1Service | None = None,
) -> k8s.V1EndpointSlice:
    """Create the slice, or replace its endpoints if it exists (one write either way)."""
    discovery = k8s.DiscoveryV1Api(api)
    body = endpoint_slice(
        namespace, service, endpoints, port=port, name=name, port_name=port_name, owner=owner
    )
    assert body.metadata is not None
    assert body.metadata.name is not None
    slice_name = body.metadata.name
    for _ in range(5):
        try:
            current = discovery.read_namespaced_endpoint_slice(slice_name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            try:
                return discovery.create_namespaced_endpoint_slice(namespace, body)
            except ApiException as create_exc:
                if create_exc.status != 409:
                    raise
                continue
        assert current.metadata is not None
        body.metadata.resource_version = current.metadata.resource_version
        try:
            return discovery.replace_namespaced_endpoint_slice(slice_name, namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
    raise RuntimeError(f"EndpointSlice {namespace}/{slice_name} kept changing under us")


def delete_endpoint_slice(api: k8s.ApiClient, namespace: str, name: str) -> None:
    with contextlib.suppress(ApiException):
        k8s.DiscoveryV1Api(api).delete_namespaced_endpoint_slice(name, namespace)


# -- identity and RBAC -----------------------------------------------------------------------------


def can_i(
    api: k8s.ApiClient,
    verb: str,
    resource: str,
    *,
    namespace: str | None = None,
    group: str = "",
    subresource: str | None = None,
    name: str | None = None,
) -> bool:
    """``kubectl auth can-i`` for the identity of ``api`` (a SelfSubjectAccessReview)."""
    review = k8s.AuthorizationV1Api(api).create_self_subject_access_review(
        k8s.V1SelfSubjectAccessReview(
            spec=k8s.V1SelfSubjectAccessReviewSpec(
                resource_attributes=k8s.V1ResourceAttributes(
                    verb=verb,
                    resource=resource,
                    group=group,
                    namespace=namespace,
                    subresource=subresource,
                    name=name,
                )
            )
        )
    )
    return bool(review.status is not None and review.status.allowed)


def service_account_token(
    api: k8s.ApiClient,
    namespace: str,
    service_account: str,
    *,
    expiration_s: int = 3600,
    audiences: Sequence[str] = (),
) -> str:
    """A real, signed ServiceAccount token (TokenRequest API); the ServiceAccount must exist."""
    request = k8s.CoreV1Api(api).create_namespaced_service_account_token(
        service_account,
        namespace,
        k8s.AuthenticationV1TokenRequest(
            spec=k8s.V1TokenRequestSpec(audiences=list(audiences), expiration_seconds=expiration_s)
        ),
    )
    token = request.status.token if request.status is not None else None
    if not token:
        raise RuntimeError(f"no token issued for ServiceAccount {namespace}/{service_account}")
    return token


# -- raw REST --------------------------------------------------------------------------------------


class RawApi:
    """Plain JSON requests with the credentials of an ``ApiClient`` (for generic operations)."""

    _DISCOVERY_ACCEPT = (
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
    )

    def __init__(self, api: k8s.ApiClient) -> None:
        config = api.configuration
        self._host = str(config.host).rstrip("/")
        token = config.api_key.get("BearerToken") if config.api_key else None
        prefix = (config.api_key_prefix or {}).get("BearerToken", "Bearer")
        self._auth = f"{prefix} {token}" if token else None
        self._context = ssl.create_default_context(
            cafile=str(config.ssl_ca_cert) if config.ssl_ca_cert else None
        )
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=self._context)
        )

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        accept: str = "application/json",
        timeout: float = 30.0,
    ) -> tuple[int, Any]:
        """``(status, decoded JSON body or text)``; HTTP errors are returned, not raised."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self._host}{path}", data=data, method=method)
        request.add_header("Accept", accept)
        if data is not None:
            request.add_header("Content-Type", content_type)
        if self._auth is not None:
            request.add_header("Authorization", self._auth)
        try:
            with self._opener.open(request, timeout=timeout) as response:
                status, raw = int(response.status), response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        text = raw.decode("utf-8", "replace")
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def namespaced_collections(self) -> list[tuple[str, str]]:
        """``(api base path, resource)`` for every namespaced resource with deletecollection."""
        found: list[tuple[str, str]] = []
        for root in ("/api", "/apis"):
            status, body = self.request("GET", root, accept=self._DISCOVERY_ACCEPT)
            if status != 200 or not isinstance(body, dict):
                continue
            for group in body.get("items", []):
                group_name = group.get("metadata", {}).get("name", "")
                versions = group.get("versions", [])
                if not versions:
                    continue
                version = versions[0]  # the preferred version comes first
                base = (
                    f"/api/{version['version']}"
                    if root == "/api"
                    else f"/apis/{group_name}/{version['version']}"
                )
                for resource in version.get("resources", []):
                    if resource.get("scope") == "Namespaced" and "deletecollection" in resource.get(
                        "verbs", []
                    ):
                        found.append((base, str(resource["resource"])))
        return found
