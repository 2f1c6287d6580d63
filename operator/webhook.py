"""Sidecar injection: what the mutating admission webhook adds to a pod (pure, no I/O).

A pod labelled ``gremlinlb.io/inject: <cluster>`` gets the sidecar as a *native sidecar*: an
init container with ``restartPolicy: Always``, so it starts (and passes its startup probe)
before the application's containers and stops after them. It is placed first among the init
containers, so other init containers can use Gremlin too. The pod also gets the cluster's
token Secret as a volume (the admin API's bearer token), an emptyDir for the last host list
(a restarted sidecar serves at once), and, when configured, the servers' CA and credentials.

The sidecar is also told the live hosts known at admission time (``GREMLINLB_ENDPOINTS``) and
the cluster's settings, so it is useful before the operator's first push reaches it, and what it
may be pushed: only ``wss://`` hosts for a TLS cluster, only hosts within the allowed patterns.

Before Kubernetes 1.29 an init container with ``restartPolicy: Always`` is not a sidecar (1.28
needs a feature gate, older versions refuse it), so there the sidecar is injected as the first
regular container instead (see :class:`Injection`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gremlinlb.operator.spec import (
    ADMIN_PORT_NAME,
    GROUP,
    INJECT_LABEL,
    SIDECAR_CONTAINER,
    SIDECAR_MEMORY,
    TOKEN_KEY,
    ClusterSpec,
)
from gremlinlb.sidecar.options import PASSWORD_ENV, MemoryLimits, MiB, env_name

from gremlinlb.schema import to_env

INJECTED_ANNOTATION = f"{GROUP}/injected"
#: Set on injected pods: their sidecar's admin API serves HTTPS (the operator pushes over TLS).
ADMIN_TLS_ANNOTATION = f"{GROUP}/admin-tls"
SCRAPE_PREFIX = "prometheus.io/"
#: A pod annotation naming the sidecar's zone, for clusters that do not copy the node's zone
#: label onto pods (PodTopologyLabelsAdmission, on by default from Kubernetes 1.35).
ZONE_ANNOTATION = f"{GROUP}/zone"
#: The node's zone, as Kubernetes copies it onto a pod when it is bound to the node.
ZONE_LABEL = "topology.kubernetes.io/zone"
TOKEN_VOLUME = "gremlinlb-token"
STATE_VOLUME = "gremlinlb-state"
CA_VOLUME = "gremlinlb-ca"
TOKEN_DIR = "/var/run/gremlinlb/token"
STATE_DIR = "/var/run/gremlinlb/state"
CA_DIR = "/var/run/gremlinlb/ca"
#: The image's entrypoint is `gremlinlb`; this is the sub-command.
SIDECAR_ARGS = ("sidecar",)
#: The sidecar at rest plus room for frames in transit; its memory budget comes on top.
SIDECAR_BASE_MEMORY_MI = 160


def pod_zone(metadata: Mapping[str, Any]) -> str | None:
    """A pod's zone as its sidecar learns it: the gremlinlb.io/zone annotation, else the
    topology.kubernetes.io/zone label (None when neither names one)."""
    for key, where in ((ZONE_ANNOTATION, "annotations"), (ZONE_LABEL, "labels")):
        zone = str((metadata.get(where) or {}).get(key) or "").strip()
        if zone:
            return zone
    return None


def default_resources(memory_budget_bytes: int = MemoryLimits().budget_bytes) -> dict[str, Any]:
    """Resources sized from the sidecar's memory bounds (256Mi with the default budget)."""
    limit = SIDECAR_BASE_MEMORY_MI + -(-memory_budget_bytes // MiB)
    return {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": f"{limit}Mi"}}


#: Pod addresses in nearly every cluster: what a host list may name unless told otherwise.
PRIVATE_NETWORKS = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "fc00::/7",
)
#: The pod's namespace (downward API), for --operator-cluster's $(...) expansion.
POD_NAMESPACE_ENV = "GREMLINLB_POD_NAMESPACE"
#: The first Kubernetes version with native sidecars on by default.
NATIVE_SIDECARS_SINCE = (1, 29)


@dataclass(frozen=True, slots=True)
class Injection:
    """How the operator injects, the same for every cluster."""

    #: An init container with restartPolicy Always (Kubernetes >= 1.29); else a plain container.
    native: bool = True
    #: GREMLINLB_ALLOWED_HOSTS of every sidecar (empty: any host).
    allowed_hosts: tuple[str, ...] = PRIVATE_NETWORKS
    #: The admin API serves HTTPS with the certificate in the token Secret (the operator has a
    #: push CA); the pod is annotated so that the operator pushes over TLS.
    admin_tls: bool = False
    #: Annotate the pod for Prometheus without the Prometheus Operator (prometheus.io/*: the
    #: sidecar's /metrics), unless the pod has prometheus.io annotations of its own.
    scrape_annotations: bool = False
    #: The operator's watch URL: injected sidecars watch it for their lists (``--operator-url``)
    #: instead of waiting for pushes; None: pushed to only.
    operator_url: str | None = None


def native_sidecars(version: Mapping[str, Any]) -> bool:
    """Whether the apiserver's ``/version`` answer is 1.29 or later (``gitVersion`` wins:
    ``minor`` carries suffixes such as ``28+`` on some distributions)."""
    text = str(version.get("gitVersion") or "").lstrip("v")
    parts = text.split(".")
    try:
        found = (int(parts[0]), int("".join(c for c in parts[1] if c.isdigit())))
    except (IndexError, ValueError):
        try:
            minor = "".join(c for c in str(version.get("minor", "")) if c.isdigit())
            found = (int(str(version.get("major"))), int(minor))
        except ValueError:
            return True  # unknown: assume a current cluster, the apiserver will say otherwise
    return found >= NATIVE_SIDECARS_SINCE


def token_secret_name(cluster: str) -> str:
    """The Secret holding the admin API token of ``cluster``'s sidecars (created by the
    operator, deleted with the cluster)."""
    return f"{cluster}-gremlinlb-token"


def unknown_cluster_message(namespace: str, name: str, known: Sequence[str]) -> str:
    listing = ", ".join(sorted(known)) if known else "none"
    return (
        f"label {INJECT_LABEL}={name!r}: there is no GremlinCluster named {name!r} in namespace "
        f"{namespace!r} (GremlinClusters there: {listing}). Create it first "
        f"(kubectl apply -f gremlincluster.yaml -n {namespace}) or fix the label."
    )


def watch_url(how: Injection, spec: ClusterSpec) -> str | None:
    """The URL the cluster's injected sidecars watch (None: they wait for pushes). A plain
    ``http://`` one (``--no-push-tls``) only with the cluster's plain-HTTP opt-in, as for
    pushes: without it the token would travel in clear, so the sidecars get no watch and are
    pushed to or refused, and the status says why, as any plain-HTTP sidecar."""
    url = how.operator_url
    if url is None or url.startswith("https://") or spec.sidecar.allow_plain_http_push:
        return url
    return None


def sidecar_container(
    cluster: str,
    spec: ClusterSpec,
    hosts: Sequence[str],
    how: Injection = Injection(),
    zone: str | None = None,
) -> dict[str, Any]:
    """The sidecar container. Its zone is `zone` (the pod's gremlinlb.io/zone annotation) or
    else the pod's topology.kubernetes.io/zone label through the downward API: the label is
    set when the pod is bound to a node, after this webhook ran, and the kubelet resolves it
    when the container starts (empty, so zone unknown, where the label is not copied)."""
    sidecar = spec.sidecar
    env: list[dict[str, Any]] = []

    def put(option: str, value: object) -> None:
        """Set the sidecar's ``option`` (its own name for it; see gremlinlb.sidecar.config)."""
        env.append({"name": env_name(option), "value": str(value)})

    put("listen", f"127.0.0.1:{sidecar.gremlin_port}")
    put("admin", f"0.0.0.0:{sidecar.admin_port}")
    put("token_file", f"{TOKEN_DIR}/{TOKEN_KEY}")
    put("state_dir", STATE_DIR)
    put("log_format", sidecar.log_format)
    put("traversal_source", spec.traversal_source)
    if spec.traversal_sources:
        put("traversal_sources", ",".join(spec.traversal_sources))
    if hosts:
        put("endpoints", ",".join(hosts))
    if spec.tls:
        put("backend_tls", "true")
    if how.allowed_hosts:
        put("allowed_hosts", ",".join(how.allowed_hosts))
    if how.admin_tls:
        put("admin_tls_cert_file", f"{TOKEN_DIR}/tls.crt")
        put("admin_tls_key_file", f"{TOKEN_DIR}/tls.key")
    url = watch_url(how, spec)
    if url is not None:
        put("operator_url", url)
        if not url.startswith("https://"):
            put("allow_plain_http_watch", "true")
        if how.admin_tls:  # the push CA, which issued the operator's certificate
            put("operator_ca_file", f"{TOKEN_DIR}/ca.crt")
        # $(VAR) is expanded by the kubelet from the variable set just before it.
        env.append(
            {
                "name": POD_NAMESPACE_ENV,
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
            }
        )
        put("operator_cluster", f"$({POD_NAMESPACE_ENV})/{cluster}")
        env.append(
            {
                "name": env_name("pod_name"),
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
            }
        )
    if zone:
        put("zone", zone)
    else:
        env.append(
            {
                "name": env_name("zone"),
                "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{ZONE_LABEL}']"}},
            }
        )
    env += to_env(spec.settings)
    for option in SIDECAR_MEMORY:
        if (value := getattr(sidecar, option.flat)) is not None:
            put(option.flat, value)
    mounts: list[dict[str, Any]] = [
        {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True},
        {"name": STATE_VOLUME, "mountPath": STATE_DIR},
    ]
    if spec.credentials is not None:
        creds = spec.credentials
        for variable, key in (
            (env_name("backend_username"), creds.username_key),
            (PASSWORD_ENV, creds.password_key),
        ):
            env.append(
                {
                    "name": variable,
                    "valueFrom": {"secretKeyRef": {"name": creds.secret, "key": key}},
                }
            )
    if spec.ca is not None:
        mounts.append({"name": CA_VOLUME, "mountPath": CA_DIR, "readOnly": True})
        put("backend_ca_file", f"{CA_DIR}/ca.crt")

    scheme = "HTTPS" if how.admin_tls else "HTTP"

    def probe(path: str, period: int, failures: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": ADMIN_PORT_NAME, "scheme": scheme},
            "periodSeconds": period,
            "failureThreshold": failures,
            "timeoutSeconds": 2,
        }

    container: dict[str, Any] = {
        "name": SIDECAR_CONTAINER,
        "image": sidecar.image,
        "imagePullPolicy": sidecar.image_pull_policy,
        "args": list(SIDECAR_ARGS),
        "env": env,
        "ports": [
            {"name": ADMIN_PORT_NAME, "containerPort": sidecar.admin_port, "protocol": "TCP"}
        ],
        "startupProbe": probe("/healthz", 1, 30),
        "livenessProbe": probe("/healthz", 10, 3),
        "readinessProbe": probe("/readyz", 5, 2),
        "resources": dict(sidecar.resources)
        if sidecar.resources
        else default_resources(sidecar.memory_budget_bytes or MemoryLimits().budget_bytes),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
    }
    if how.native:
        # A native sidecar: starts before the app's containers, restarted whenever it exits.
        container["restartPolicy"] = "Always"
    return container


def sidecar_volumes(cluster: str, spec: ClusterSpec) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [
        {
            "name": TOKEN_VOLUME,
            "secret": {"secretName": token_secret_name(cluster), "defaultMode": 0o444},
        },
        {"name": STATE_VOLUME, "emptyDir": {"sizeLimit": "1Mi"}},
    ]
    if spec.ca is not None:
        volumes.append(
            {
                "name": CA_VOLUME,
                "secret": {
                    "secretName": spec.ca.name,
                    "items": [{"key": spec.ca.key, "path": "ca.crt"}],
                },
            }
        )
    return volumes


def already_injected(pod: Mapping[str, Any]) -> bool:
    pod_spec = pod.get("spec") or {}
    names = {
        c.get("name") for key in ("initContainers", "containers") for c in pod_spec.get(key) or ()
    }
    return SIDECAR_CONTAINER in names


def injection(
    pod: Mapping[str, Any],
    cluster: str,
    spec: ClusterSpec,
    hosts: Sequence[str],
    how: Injection = Injection(),
) -> dict[str, Any] | None:
    """The pod fields to set (a merge patch of ``spec`` and ``metadata``), or None when the
    pod already has the sidecar (injection is idempotent)."""
    if already_injected(pod):
        return None
    pod_spec = pod.get("spec") or {}
    taken = {v.get("name") for v in pod_spec.get("volumes") or ()}
    volumes = [v for v in sidecar_volumes(cluster, spec) if v["name"] not in taken]
    annotations = dict((pod.get("metadata") or {}).get("annotations") or {})
    annotations[INJECTED_ANNOTATION] = cluster
    if how.admin_tls:
        annotations[ADMIN_TLS_ANNOTATION] = "true"
    if how.scrape_annotations and not any(k.startswith(SCRAPE_PREFIX) for k in annotations):
        annotations.update(scrape_annotations(spec.sidecar.admin_port, how.admin_tls))
    container = sidecar_container(cluster, spec, hosts, how, annotations.get(ZONE_ANNOTATION))
    # Native: first init container (it serves the other init containers too). Otherwise the
    # first container: the kubelet starts containers in order, so it starts before the app.
    group = "initContainers" if how.native else "containers"
    return {
        "metadata": {"annotations": annotations},
        "spec": {
            group: [container, *(pod_spec.get(group) or ())],
            "volumes": [*(pod_spec.get("volumes") or ()), *volumes],
        },
    }


def scrape_annotations(admin_port: int, tls: bool) -> dict[str, str]:
    """Where Prometheus's usual kubernetes-pods job finds the sidecar's metrics (its admin
    API: HTTPS with the push CA's certificate when the sidecar has admin TLS)."""
    found = {
        f"{SCRAPE_PREFIX}scrape": "true",
        f"{SCRAPE_PREFIX}port": str(admin_port),
        f"{SCRAPE_PREFIX}path": "/metrics",
    }
    if tls:
        found[f"{SCRAPE_PREFIX}scheme"] = "https"
    return found


def pod_cluster(pod: Mapping[str, Any]) -> str | None:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    value = labels.get(INJECT_LABEL)
    return str(value) if value else None


def webhook_configuration(
    name: str,
    client_config: Mapping[str, Any],
    *,
    exclude_namespaces: Sequence[str] = ("kube-system", "kube-public", "gremlinlb-system"),
    path: str = "/inject-sidecar",
) -> dict[str, Any]:
    """The MutatingWebhookConfiguration (also in manifests/webhook.yaml; a test compares).

    * ``objectSelector``: only pods carrying the inject label are ever sent, so a broken or
      absent webhook cannot block any other pod;
    * ``namespaceSelector``: never the control plane's or the operator's own namespaces;
    * ``failurePolicy: Fail`` for the labelled pods: such a pod without its sidecar would start
      and fail to reach Gremlin, so it is better refused (its ReplicaSet retries) until the
      operator answers again.
    """
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "gremlinlb-operator"}},
        "webhooks": [
            {
                "name": f"inject.{GROUP}",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "matchPolicy": "Equivalent",
                "reinvocationPolicy": "Never",
                "timeoutSeconds": 5,
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["pods"],
                        "operations": ["CREATE"],
                        "scope": "Namespaced",
                    }
                ],
                "objectSelector": {
                    "matchExpressions": [{"key": INJECT_LABEL, "operator": "Exists"}]
                },
                "namespaceSelector": {
                    "matchExpressions": [
                        {
                            "key": "kubernetes.io/metadata.name",
                            "operator": "NotIn",
                            "values": list(exclude_namespaces),
                        }
                    ]
                },
                "clientConfig": {**client_config, **_path(client_config, path)},
            }
        ],
    }


def _path(client_config: Mapping[str, Any], path: str) -> dict[str, Any]:
    if "service" in client_config:
        return {"service": {**client_config["service"], "path": path}}
    return {}
