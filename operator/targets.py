"""Which sidecar a client pod is pushed to, and what in it means "it may have restarted" (pure).

Whatever the source of the host list (a Service's EndpointSlices or a Neptune cluster), the
list goes to the sidecars of the selected client pods: this reads each pod's admin address.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gremlinlb.operator.spec import ADMIN_PORT_NAME, SIDECAR_CONTAINER
from gremlinlb.operator.webhook import ADMIN_TLS_ANNOTATION, pod_zone


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


@dataclass(frozen=True, slots=True)
class _Entry:
    key: str  # namespace/pod
    url: str
    pod_key: PodKey
    zone: str | None
    #: Plain HTTP while the cluster allows only TLS pushes: counted, never pushed to.
    refused: bool


@dataclass(frozen=True, slots=True)
class Change:
    """What one pod event changed, for the push group and the host list."""

    #: A push target gone (or replaced: its URL changed).
    removed: str | None = None
    #: A push target new or at a new URL: ``(key, url)``.
    added: tuple[str, str] | None = None
    #: A target whose sidecar may have restarted (pushed to again at once).
    poke: str | None = None
    zones_changed: bool = False
    refused_changed: bool = False


class ClientPods:
    """The selected client pods of one GremlinCluster, kept up to date per watch event.

    Every pod event costs the same whatever the number of pods (issue 27): the push targets,
    the ready pods per zone (by delta) and the pods refused for plain HTTP are updated in
    place instead of being rebuilt from every cached pod. Entries are keyed by the watch's key
    (the pod's uid), so a recreated pod of the same name never removes its successor.
    """

    def __init__(self, namespace: str, default_port: int, plain_allowed: bool) -> None:
        self.namespace = namespace
        self.default_port = default_port
        self.plain_allowed = plain_allowed
        self._entries: dict[str, _Entry] = {}
        #: namespace/pod -> the watch key whose entry it is.
        self._owner: dict[str, str] = {}
        #: Push targets, namespace/pod -> the sidecar's admin base URL.
        self.targets: dict[str, str] = {}
        self._zones: dict[str, int] = {}
        self._refused: set[str] = set()

    @property
    def zones(self) -> dict[str, int]:
        """Ready client pods per zone, sorted by zone."""
        return dict(sorted(self._zones.items()))

    @property
    def refused(self) -> tuple[str, ...]:
        """Names of the pods given no push for their plain HTTP admin API, sorted."""
        return tuple(sorted(self._refused))

    def pod_key(self, target: str) -> PodKey | None:
        owner = self._owner.get(target)
        return None if owner is None else self._entries[owner].pod_key

    def reset(self, pods: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """All pods at once (a list or relist, or new settings); the targets whose sidecar may
        have restarted meanwhile, to poke."""
        before = {key: self.pod_key(key) for key in self.targets}
        self._entries, self._owner, self.targets = {}, {}, {}
        self._zones, self._refused = {}, set()
        for watch_key, pod in pods.items():
            self.apply(watch_key, pod)
        return [
            key
            for key, pod_key in before.items()
            if key in self.targets and pod_key is not None and pod_key != self.pod_key(key)
        ]

    def apply(self, watch_key: str, pod: Mapping[str, Any] | None) -> Change:
        """One watch event: ``pod`` added or modified, or None for deleted."""
        old = self._entries.pop(watch_key, None)
        found = None if pod is None else push_target(self.namespace, pod, self.default_port)
        new = None
        if found is not None and pod is not None:
            key, url, pod_key = found
            zone = pod_zone(pod.get("metadata") or {})
            refused = url.startswith("http://") and not self.plain_allowed
            new = _Entry(key, url, pod_key, zone, refused)
        if old is None and new is None:
            return Change()
        if old is not None and self._owner.get(old.key) == watch_key:
            del self._owner[old.key]
        if new is not None:
            self._entries[watch_key] = new
            self._owner[new.key] = watch_key
        zones_changed = _counted(old) != _counted(new)
        if zones_changed:
            self._count(old, -1)
            self._count(new, +1)
        refused_changed = _refused_name(old) != _refused_name(new)
        if refused_changed:
            self._refused.discard(_refused_name(old) or "")
            if (name := _refused_name(new)) is not None:
                self._refused.add(name)
        old_url = None if old is None or old.refused else old.url
        new_url = None if new is None or new.refused else new.url
        removed = added = poke = None
        if (
            old is not None
            and old_url is not None
            and old_url != new_url
            and self.targets.get(old.key) == old_url
        ):
            del self.targets[old.key]
            removed = old.key
        if new is not None and new_url is not None:
            if self.targets.get(new.key) != new_url:
                self.targets[new.key] = new_url
                added = (new.key, new_url)
            elif old is not None and old.pod_key != new.pod_key:
                poke = new.key
        return Change(removed, added, poke, zones_changed, refused_changed)

    def _count(self, entry: _Entry | None, delta: int) -> None:
        zone = _counted(entry)
        if zone is None:
            return
        count = self._zones.get(zone, 0) + delta
        if count > 0:
            self._zones[zone] = count
        else:
            self._zones.pop(zone, None)


def _counted(entry: _Entry | None) -> str | None:
    """The zone a pod counts in (ready, with a zone), else None."""
    return entry.zone if entry is not None and entry.pod_key.ready else None


def _refused_name(entry: _Entry | None) -> str | None:
    return entry.key.rsplit("/", 1)[-1] if entry is not None and entry.refused else None
