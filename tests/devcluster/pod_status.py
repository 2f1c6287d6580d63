"""A pod worker's state and what it reports: the pod as last seen, its events, and the pod
status (conditions, container statuses) it patches onto the API object. The root of the pod
worker's parts: volumes (pod_volumes.py), probes (pod_probes.py), then the lifecycle that runs
them (agent.py's PodWorker)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tests.devcluster.containers import _TICK_S, Container, _now
from tests.devcluster.errors import DevClusterError
from tests.devcluster.forwarder import ServiceForwarder
from tests.devcluster.netns import NetnsHost

if TYPE_CHECKING:
    from tests.devcluster.agent import NodeAgent

log = logging.getLogger("tests.devcluster.agent")


class PodState:
    """One pod's identity, containers and API plumbing, and its status reports."""

    def __init__(self, agent: NodeAgent, pod: dict[str, Any]) -> None:
        self.agent = agent
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.name: str = meta["name"]
        self.namespace: str = meta["namespace"]
        self.directory = agent.workdir / "pods" / f"{self.namespace}_{self.name}_{self.uid[:8]}"
        self._latest = pod
        self._lock = threading.Lock()
        self.gone = threading.Event()  # the pod object is deleted
        self.host: NetnsHost | None = None
        self._forwarder: ServiceForwarder | None = None
        self.containers: list[Container] = []
        self._mounts: dict[str, Path] = {}
        self._env_cache: dict[str, dict[str, str]] = {}
        self._last_status: dict[str, Any] | None = None
        self._events_sent: set[str] = set()
        self.finished = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"pod-{self.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def update(self, pod: dict[str, Any]) -> None:
        with self._lock:
            self._latest = pod

    @property
    def pod(self) -> dict[str, Any]:
        with self._lock:
            return self._latest

    @property
    def core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self.agent.api)

    def _stopping(self) -> bool:
        return self.gone.is_set() or self.agent.stopping.is_set()

    def _deleting(self) -> bool:
        return bool(self.pod["metadata"].get("deletionTimestamp"))

    def _event(self, reason: str, message: str, kind: str = "Warning") -> None:
        key = f"{reason}:{message}"
        if key in self._events_sent:
            return
        self._events_sent.add(key)
        log.info("pod %s/%s: %s: %s", self.namespace, self.name, reason, message)
        body = {
            "metadata": {"generateName": f"{self.name}.", "namespace": self.namespace},
            "involvedObject": {
                "kind": "Pod",
                "namespace": self.namespace,
                "name": self.name,
                "uid": self.uid,
                "apiVersion": "v1",
            },
            "reason": reason,
            "message": message,
            "type": kind,
            "source": {"component": "gremlinlb-node-agent", "host": self.agent.node_name},
            "firstTimestamp": _now(),
            "lastTimestamp": _now(),
            "count": 1,
        }
        with contextlib.suppress(ApiException):
            self.core.create_namespaced_event(self.namespace, cast(Any, body))

    def _wait(self, predicate: Callable[[], bool]) -> bool:
        """Tick until ``predicate`` holds (True) or the pod is going away (False)."""
        while not self._stopping():
            if predicate():
                return True
            time.sleep(_TICK_S)
        return False

    def _gates_ready(self) -> bool:
        gates = [g["conditionType"] for g in self.pod["spec"].get("readinessGates") or ()]
        conditions = {
            c["type"]: c["status"] for c in (self.pod.get("status") or {}).get("conditions") or ()
        }
        return all(conditions.get(g) == "True" for g in gates)

    def _patch_status(self) -> None:
        if self.gone.is_set():
            return
        mains = [c for c in self.containers if c.role == "main"]
        sidecars = [c for c in self.containers if c.role == "sidecar"]
        inits = [c for c in self.containers if c.role != "main"]
        initialized = all((c.started if c.role == "sidecar" else c.exit_code == 0) for c in inits)
        containers_ready = bool(mains) and all(c.ready for c in [*mains, *sidecars])
        ready = containers_ready and self._gates_ready()
        any_started = any(c.started_at for c in self.containers)
        all_done = all(c.exit_code is not None and not c.restart_at for c in mains) and any_started
        phase = "Pending"
        if any_started and initialized:
            phase = "Running"
        if all_done and self._deleting():
            phase = "Succeeded" if all(c.exit_code == 0 for c in mains) else "Failed"

        def condition(kind: str, value: bool) -> dict[str, Any]:
            return {"type": kind, "status": "True" if value else "False"}

        status: dict[str, Any] = {
            "phase": phase,
            "conditions": [
                condition("Initialized", initialized),
                condition("ContainersReady", containers_ready),
                condition("Ready", ready),
            ],
            "containerStatuses": [c.status(self.uid) for c in mains],
        }
        if inits:
            status["initContainerStatuses"] = [c.status(self.uid) for c in inits]
        if status == self._last_status:
            return
        body = {
            "status": {
                **status,
                "conditions": [{**c, "lastTransitionTime": _now()} for c in status["conditions"]],
            }
        }
        if any_started and not (self.pod.get("status") or {}).get("startTime"):
            body["status"]["startTime"] = _now()
        # Only conditions whose value changed get a new transition time.
        previous = {c["type"]: c for c in (self.pod.get("status") or {}).get("conditions") or ()}
        for item in body["status"]["conditions"]:
            old = previous.get(item["type"])
            if old is not None and old.get("status") == item["status"]:
                item["lastTransitionTime"] = old.get("lastTransitionTime")
        try:
            self.core.patch_namespaced_pod_status(self.name, self.namespace, body)
            self._last_status = status
        except ApiException as exc:
            if exc.status == 404:
                self.gone.set()
            else:
                log.warning(
                    "pod %s/%s: status patch failed: %s", self.namespace, self.name, exc.reason
                )

    def container(self, name: str) -> Container:
        for container in self.containers:
            if container.name == name:
                return container
        raise DevClusterError(f"pod {self.namespace}/{self.name} has no container {name!r}")

    def _main(self) -> None:
        """The pod's thread (PodWorker: from its IP to its deletion)."""
        raise NotImplementedError
