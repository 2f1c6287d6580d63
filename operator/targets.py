"""Which sidecar a client pod is pushed to, and what in it means "it may have restarted" (pure).

Whatever the source of the host list (a Service's EndpointSlices or a Neptune cluster), the
list goes to the sidecars of the selected client pods: this reads each pod's admin address.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gremlinlb.operator.spec import ADMIN_PORT_NAME, SIDECAR_CONTAINER
from gremlinlb.operator.webhook import ADMIN_TLS_ANNOTATION


@dataclass(frozen=True)
class PodKey:
    """What, in a pod's status, means "its sidecar may have (re)started"."""

    ip: str
    ready: bool
    restarts: int
    container_id: str


def push_target(
    namespace: str, pod: Mapping[str, Any], default_port: int
) -> tuple[str, str, PodKey] | None:
    """(``namespace/pod``, the sidecar's admin base URL, its restart key); None for a pod
    without an IP, being deleted or finished."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    ip = status.get("podIP")
    if not ip or meta.get("deletionTimestamp") or status.get("phase") in ("Succeeded", "Failed"):
        return None
    spec = pod.get("spec") or {}
    port = None
    for group in ("initContainers", "containers"):
        for container in spec.get(group) or ():
            for p in container.get("ports") or ():
                if p.get("name") == ADMIN_PORT_NAME:
                    port = p.get("containerPort")
    if port is None:
        port = default_port
    host = f"[{ip}]" if ":" in str(ip) else str(ip)
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or ()
    )
    restarts, container_id = 0, ""
    for group in ("initContainerStatuses", "containerStatuses"):
        for cs in status.get(group) or ():
            if cs.get("name") == SIDECAR_CONTAINER:
                restarts = int(cs.get("restartCount") or 0)
                container_id = str(cs.get("containerID") or "")
    key = f"{namespace}/{meta.get('name')}"
    scheme = "https" if (meta.get("annotations") or {}).get(ADMIN_TLS_ANNOTATION) else "http"
    url = f"{scheme}://{host}:{port}"
    return key, url, PodKey(str(ip), ready, restarts, container_id)
