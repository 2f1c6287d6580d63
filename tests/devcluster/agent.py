"""A node agent: the kubelet stand-in that makes kwok's pods real processes.

kwok keeps the node Ready and gives each pod on it an IP from the node's pod CIDR (its
``pod-create`` Stage); it runs nothing. For each such pod the agent, like a kubelet:

* brings up a network namespace at the pod's IP on the test bridge
  (:class:`~tests.devcluster.netns.NetnsNetwork`), and inside it makes the ``kubernetes``
  Service's cluster IP reach the apiserver (a one-Service kube-proxy: in-cluster clients work);
* materialises the pod's volumes from the API (Secrets, ConfigMaps, emptyDirs, the projected
  ServiceAccount token from a real TokenRequest bound to the pod) and bind-mounts them at their
  mount paths in the container's own mount namespace;
* starts the containers the pod spec names, with their command, args and environment as
  admitted, for the images it knows (:class:`ImageCatalog`): native sidecars (init containers
  with ``restartPolicy: Always``) first, each after the previous one started;
* runs the pods' own startup, readiness and liveness probes against the pod IP and reports
  ``Ready``/``ContainersReady`` and the container statuses; restarts exited containers;
* on deletion: preStop hooks, SIGTERM, the grace period, SIGKILL; sidecars after the app's
  containers; then removes the namespace and deletes the pod object (grace 0), which is what
  lets kwok hand the IP out again.

What it does not do: pull images (only known images run, mapped to this checkout's
executables), cgroups and resource limits, users (every process runs as the test's user),
read-only root filesystems, ``kubectl logs``/``exec`` (see :meth:`NodeAgent.logs` and
:meth:`NodeAgent.exec_command`). The machine's own filesystem stands in for the image's: mount
points missing on it (such as ``/var/run/secrets/kubernetes.io/serviceaccount``) exist only
inside the container's mount namespace, and a volume over ``/tmp`` does not hide the checkout,
its virtualenv or the cluster directory (``mount_helper.py`` says how).

The pod worker is split along a kubelet's seams: its state and status reports
(``pod_status.py``), volumes and mounts (``pod_volumes.py``), probes (``pod_probes.py``), and
here the lifecycle that runs them (:class:`PodWorker`); ``containers.py`` holds the container
records, ``forwarder.py`` the in-pod path to the apiserver.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from gremlinlb.devservers.server import GremlinServerProcess
from tests.devcluster.containers import (
    _TICK_S,
    Container,
    PodFailure,
    ProbeState,
    Process,
    _Jvm,
    _now,
    _Popen,
)
from tests.devcluster.controlplane import _die_with_parent
from tests.devcluster.errors import DevClusterError, NetnsError
from tests.devcluster.forwarder import ServiceForwarder
from tests.devcluster.netns import NetnsNetwork
from tests.devcluster.pod_probes import PodProbes

if TYPE_CHECKING:
    from gremlinlb.devservers.fetch import ServerRuntime
    from tests.devcluster.controlplane import ControlPlane

log = logging.getLogger(__name__)


# -- images --------------------------------------------------------------------------------------


def image_repository(image: str) -> str:
    """``tinkerpop/gremlin-server`` of ``docker.io/tinkerpop/gremlin-server:3.8.2@sha256:..``."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: name.rindex(":")]
    for prefix in ("docker.io/", "index.docker.io/", "library/"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    return name


@dataclass(frozen=True)
class ImageCatalog:
    """The images this node can run, and what stands in for each.

    * ``python_images`` (e.g. ``gremlinlb``): this checkout's virtualenv is the image's
      filesystem: entrypoint ``entrypoint``, ``PATH`` starting with ``bin_dir`` (so ``python``
      and ``gremlinlb`` are the checkout's).
    * ``gremlin_server_images`` (e.g. ``tinkerpop/gremlin-server``): a real Gremlin Server JVM
      from the cached TinkerPop runtime, on the container's port, ``JAVA_OPTIONS`` honoured.
    """

    bin_dir: Path
    python_images: tuple[str, ...] = ("gremlinlb",)
    entrypoint: tuple[str, ...] = ("gremlinlb",)
    default_args: tuple[str, ...] = ("--help",)
    image_env: tuple[tuple[str, str], ...] = (
        ("PYTHONDONTWRITEBYTECODE", "1"),
        ("PYTHONUNBUFFERED", "1"),
    )
    gremlin_server_images: tuple[str, ...] = ("tinkerpop/gremlin-server",)
    #: Host paths the image's executables read besides ``bin_dir``'s virtualenv and its
    #: interpreter (e.g. the checkout a strict editable install links into). Kept reachable
    #: in every container, whatever its volumes hide.
    host_paths: tuple[Path, ...] = ()
    gremlin_runtime: ServerRuntime | None = None
    #: Appended to each Gremlin Server's YAML (``@WORK_DIR@`` = the container's directory).
    gremlin_server_config: str = ""

    def kind(self, image: str) -> str | None:
        repository = image_repository(image)
        if repository in self.python_images:
            return "python"
        if repository in self.gremlin_server_images:
            return "gremlin-server"
        return None

    def describe(self) -> str:
        return ", ".join(f"{name}:*" for name in (*self.python_images, *self.gremlin_server_images))

    def image_paths(self) -> tuple[Path, ...]:
        """What stands in for the image's own filesystem: the virtualenv, the interpreter it
        links to, and ``host_paths``."""
        venv = self.bin_dir.parent
        interpreter = Path(os.path.realpath(self.bin_dir / "python"))
        return (venv, interpreter.parent.parent, *self.host_paths)


# -- helpers -------------------------------------------------------------------------------------


# -- containers ----------------------------------------------------------------------------------


# -- one pod -------------------------------------------------------------------------------------


class PodWorker(PodProbes):
    """Runs one pod from its IP to its deletion, in a thread of its own."""

    # -- plumbing --

    # -- main sequence --

    def _main(self) -> None:
        try:
            try:
                self._run()
            except PodFailure as failure:
                self._fail(str(failure))
        except Exception as error:
            log.exception("pod %s/%s: node agent failure", self.namespace, self.name)
            with contextlib.suppress(Exception):
                self._fail(f"node agent failure: {error!r}")
        finally:
            self._teardown(kill=True)
            self.finished.set()

    def _fail(self, message: str) -> None:
        """A pod this node cannot run as specified: say why (an event, each container's waiting
        reason), as a kubelet does for a bad volume or image, and stay so until deleted."""
        self._event("Failed", message)
        for container in self.containers:
            if container.process is not None and container.running():
                container.process.send(signal.SIGKILL)
            container.waiting = ("CreateContainerConfigError", message)
        self._patch_status()
        self._wait(self._deleting)
        self._finish()

    def _run(self) -> None:
        if not self._wait(
            lambda: bool((self.pod.get("status") or {}).get("podIP")) or self._deleting()
        ):
            return
        if self._deleting() and not (self.pod.get("status") or {}).get("podIP"):
            self._delete_pod_object()
            return
        ip = ipaddress.IPv4Address(self.pod["status"]["podIP"])
        if ip not in self.agent.pod_cidr:
            raise PodFailure(f"pod IP {ip} is outside this node's pod CIDR {self.agent.pod_cidr}")
        self.directory.mkdir(parents=True, exist_ok=True)
        spec = self.pod["spec"]
        for c in spec.get("initContainers") or ():
            role = "sidecar" if c.get("restartPolicy") == "Always" else "init"
            self.containers.append(Container(c, role, self.directory / c["name"]))
        for c in spec.get("containers") or ():
            self.containers.append(Container(c, "main", self.directory / c["name"]))
        self.host = self.agent.network.add_host(ip)
        if self.agent.service is not None:
            service_ip, service_port = self.agent.service
            self._forwarder = ServiceForwarder(
                self.host, service_ip, service_port, self.agent.plane.apiserver_port
            )
            self._forwarder.start()
        self._write_hosts_file()
        volumes_ready = self._wait(lambda: self._prepare_volumes() or self._deleting())
        if volumes_ready and not self._deleting() and self._start_init_containers():
            for container in [c for c in self.containers if c.role == "main"]:
                self._start_container(container)
        self._finish()

    def _start_init_containers(self) -> bool:
        """In order: a native sidecar must have started (passed its startup probe), a classic
        init container must have completed, before the next one starts."""
        self._patch_status()
        for container in [c for c in self.containers if c.role != "main"]:
            if self._deleting() or not self._start_container(container):
                return False

            def done(c: Container = container) -> bool:
                self._tick()
                return c.started if c.role == "sidecar" else c.exit_code == 0

            if not self._wait(lambda: done() or self._deleting()) or self._deleting():
                return False
        return True

    def _finish(self) -> None:
        """Keep the pod going (probes, restarts, status) until it is deleted; then terminate
        it and delete the pod object. Also after a failure: a deleted pod must always go."""
        if not self._wait(lambda: self._tick() or self._deleting()):
            return
        self._terminate()
        self._teardown(kill=True)
        self._delete_pod_object()

    # -- volumes --

    # -- environment and launch --

    def _start_container(self, container: Container) -> bool:
        try:
            kind = self.agent.images.kind(str(container.spec.get("image", "")))
            if kind is None:
                raise PodFailure(
                    f"image {container.spec.get('image')!r}: this node has no runtime for it "
                    f"(it runs {self.agent.images.describe()})"
                )
            container.directory.mkdir(parents=True, exist_ok=True)
            env = self._env(container)
            if kind == "gremlin-server":
                container.process = self._start_gremlin_server(container, env)
            else:
                argv = self._argv(container, env)
                log_file = open(container.directory / "output.log", "ab")  # noqa: SIM115
                with log_file:
                    popen = subprocess.Popen(
                        self.container_command(container, argv),
                        cwd=container.spec.get("workingDir") or "/",
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=log_file,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                        preexec_fn=_die_with_parent,  # gone with the test process, whatever happens
                    )
                container.process = _Popen(popen)
        except (PodFailure, ApiException, OSError) as exc:
            container.waiting = ("CreateContainerError", str(exc))
            self._event("Failed", f"container {container.name}: {exc}")
            self._patch_status()
            return False
        container.started_at = _now()
        container.exit_code = None
        container.waiting = None
        container.ready = False
        container.started = "startupProbe" not in container.spec
        now = time.monotonic()
        container.probes = {
            kind: ProbeState(
                container.spec[key],
                next_due=now + float(container.spec[key].get("initialDelaySeconds", 0)),
            )
            for kind, key in (
                ("startup", "startupProbe"),
                ("readiness", "readinessProbe"),
                ("liveness", "livenessProbe"),
            )
            if key in container.spec
        }
        self._event("Started", f"Started container {container.name}", "Normal")
        self._patch_status()
        return True

    def _start_gremlin_server(self, container: Container, env: Mapping[str, str]) -> Process:
        assert self.host is not None
        ports = container.spec.get("ports") or [{"containerPort": 8182}]
        port = int(ports[0]["containerPort"])
        server = GremlinServerProcess(
            port,
            container.directory / f"run-{container.restart_count}",
            runtime=self.agent.images.gremlin_runtime,
            extra_jvm_options=env.get("JAVA_OPTIONS", "").split(),
            host=str(self.host.address),
            launcher=self.host.argv([]),
            extra_config=self.agent.images.gremlin_server_config,
        )
        server.start()
        return _Jvm(server)

    # -- probes, restarts, status --

    def _tick(self) -> bool:
        """One round: reap, restart, probe, report. Always False (for use in _wait)."""
        now = time.monotonic()
        restart_policy = self.pod["spec"].get("restartPolicy", "Always")
        for container in self.containers:
            process = container.process
            if process is None:
                continue
            code = process.poll()
            if code is not None and container.exit_code is None:
                container.exit_code = code
                container.finished_at = _now()
                container.ready = False
                container.started = False
                policy = "Always" if container.role == "sidecar" else restart_policy
                restart = policy == "Always" or (policy == "OnFailure" and code != 0)
                if restart and not self._deleting() and (container.role != "init" or code != 0):
                    backoff = min(10.0, 2.0 ** min(container.restart_count, 4))
                    container.restart_at = now + backoff
                    self._event("BackOff", f"container {container.name} exited {code}; restarting")
            if (
                container.exit_code is not None
                and container.restart_at
                and now >= container.restart_at
                and not self._deleting()
            ):
                container.restart_at = 0.0
                container.restart_count += 1
                self._start_container(container)
            elif container.running():
                self._run_probes(container, now)
        self._patch_status()
        return False

    # -- termination --

    def _pre_stop(self, container: Container, deadline: float) -> None:
        hook = ((container.spec.get("lifecycle") or {}).get("preStop")) or {}
        if not hook or not container.running():
            return
        try:
            if "sleep" in hook:
                end = min(deadline, time.monotonic() + float(hook["sleep"]["seconds"]))
                while time.monotonic() < end and container.running():
                    self._tick()
                    time.sleep(_TICK_S)
            elif "exec" in hook:
                subprocess.run(
                    self.container_command(container, hook["exec"]["command"]),
                    env=self._env(container),
                    capture_output=True,
                    timeout=max(0.1, deadline - time.monotonic()),
                    check=False,
                )
            elif "httpGet" in hook:
                self._probe_once(
                    container, {**hook, "timeoutSeconds": max(0.1, deadline - time.monotonic())}
                )
        except (subprocess.TimeoutExpired, PodFailure) as exc:
            self._event("FailedPreStopHook", f"container {container.name}: {exc}")

    def _terminate(self) -> None:
        """preStop, SIGTERM, grace period, SIGKILL: the app's containers, then the sidecars."""
        meta = self.pod["metadata"]
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        deadline = time.monotonic() + float(grace)
        mains = [c for c in self.containers if c.role == "main"]
        hooks = [
            threading.Thread(target=self._pre_stop, args=(c, deadline), daemon=True) for c in mains
        ]
        for thread in hooks:
            thread.start()
        while any(t.is_alive() for t in hooks) and time.monotonic() < deadline:
            self._tick()
            time.sleep(_TICK_S)
        for group in (mains, [c for c in reversed(self.containers) if c.role == "sidecar"]):
            for container in group:
                container.restart_at = 0.0
                if container.process is not None and container.running():
                    container.process.send(signal.SIGTERM)
            # Sidecars always get a couple of seconds, even when the app used the whole grace.
            end = max(deadline, time.monotonic() + 2.0) if group is not mains else deadline
            while any(c.running() for c in group) and time.monotonic() < end:
                self._tick()
                time.sleep(_TICK_S)
            for container in group:
                if container.process is not None and container.running():
                    container.process.send(signal.SIGKILL)
            while any(c.running() for c in group) and time.monotonic() < end + 5:
                time.sleep(0.05)
            for container in group:
                container.restart_at = 0.0
        self._tick()

    def _teardown(self, kill: bool) -> None:
        for container in self.containers:
            container.restart_at = 0.0
            if kill and container.process is not None and container.running():
                container.process.send(signal.SIGKILL)
        if self._forwarder is not None:
            self._forwarder.close()
            self._forwarder = None
        if self.host is not None:
            try:
                self.agent.network.remove_host(self.host)
            except NetnsError as exc:
                log.warning("pod %s/%s: %s", self.namespace, self.name, exc)
            self.host = None

    def _delete_pod_object(self) -> None:
        try:
            self.core.delete_namespaced_pod(
                self.name,
                self.namespace,
                body=k8s.V1DeleteOptions(
                    grace_period_seconds=0, preconditions=k8s.V1Preconditions(uid=self.uid)
                ),
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    # -- for tests: what `kubectl exec` and `kubectl logs` would give --


# -- the agent -----------------------------------------------------------------------------------


class NodeAgent:
    """Watches the pods bound to ``node_name`` and runs each in a :class:`PodWorker`."""

    def __init__(
        self,
        plane: ControlPlane,
        node_name: str,
        network: NetnsNetwork,
        pod_cidr: ipaddress.IPv4Network,
        workdir: Path,
        images: ImageCatalog,
    ) -> None:
        self.plane = plane
        self.node_name = node_name
        self.network = network
        self.pod_cidr = pod_cidr
        self.workdir = workdir
        self.images = images
        config = plane.client_configuration("admin")
        config.connection_pool_maxsize = 64
        self.api = k8s.ApiClient(config)
        self.stopping = threading.Event()
        self.workers: dict[str, PodWorker] = {}
        self._lock = threading.Lock()
        self.service: tuple[str, int] | None = None
        self._thread = threading.Thread(target=self._watch, name="node-agent", daemon=True)

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        service: Any = k8s.CoreV1Api(self.api).read_namespaced_service("kubernetes", "default")
        self.service = (str(service.spec.cluster_ip), int(service.spec.ports[0].port))
        self._thread.start()

    def stop(self) -> None:
        """Kill every pod's processes and remove their namespaces (the cluster is going away)."""
        self.stopping.set()
        with self._lock:
            workers = list(self.workers.values())
        for worker in workers:
            worker.finished.wait(30)
        self._thread.join(10)
        self.api.close()  # type: ignore[no-untyped-call]

    def _watch(self) -> None:
        core = k8s.CoreV1Api(self.api)
        selector = f"spec.nodeName={self.node_name}"
        version = ""
        while not self.stopping.is_set():
            try:
                if not version:
                    listing: Any = core.list_pod_for_all_namespaces(field_selector=selector)
                    version = listing.metadata.resource_version
                    for pod in listing.items:
                        self._dispatch("ADDED", self._as_dict(pod))
                stream = k8s_watch.Watch().stream(  # type: ignore[no-untyped-call]
                    core.list_pod_for_all_namespaces,
                    field_selector=selector,
                    resource_version=version,
                    timeout_seconds=5,
                    allow_watch_bookmarks=True,
                )
                for event in stream:
                    if self.stopping.is_set():
                        break
                    obj = event["object"]
                    if event["type"] == "ERROR":
                        version = ""
                        break
                    pod = self._as_dict(obj)
                    version = pod["metadata"].get("resourceVersion", version)
                    if event["type"] != "BOOKMARK":
                        self._dispatch(event["type"], pod)
            except ApiException as exc:
                if exc.status == 410:
                    version = ""
                else:
                    log.warning("node agent: watch failed: %s", exc.reason)
                    time.sleep(1)
            except Exception:
                if self.stopping.is_set():
                    break
                log.exception("node agent: watch failed")
                time.sleep(1)

    def _as_dict(self, pod: Any) -> dict[str, Any]:
        """The pod as the API's JSON (camelCase keys), as the pod spec is written."""
        found: dict[str, Any] = self.api.sanitize_for_serialization(pod)  # type: ignore[no-untyped-call]
        return found

    def _dispatch(self, kind: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            worker = self.workers.get(uid)
            if kind == "DELETED":
                if worker is not None:
                    worker.update(pod)
                    worker.gone.set()
                return
            if worker is None:
                worker = PodWorker(self, pod)
                self.workers[uid] = worker
                worker.start()
            else:
                worker.update(pod)

    # -- what tests use instead of `kubectl exec` and `kubectl logs` --

    def worker(self, namespace: str, name: str) -> PodWorker:
        with self._lock:
            found = [
                w
                for w in self.workers.values()
                if w.namespace == namespace and w.name == name and not w.finished.is_set()
            ]
        if not found:
            raise DevClusterError(f"no running pod {namespace}/{name} on {self.node_name}")
        return found[-1]

    def exec_command(
        self, namespace: str, name: str, container: str, argv: Sequence[str]
    ) -> tuple[list[str], dict[str, str]]:
        """Command line and environment that run ``argv`` in the container's network namespace,
        mounts and environment (what ``kubectl exec`` would do)."""
        worker = self.worker(namespace, name)
        target = worker.container(container)
        return worker.container_command(target, argv), worker._env(target)

    def logs(self, namespace: str, name: str, container: str) -> str:
        target = self.worker(namespace, name).container(container)
        path = target.directory / "output.log"
        if not path.exists():
            candidates = sorted(target.directory.glob("run-*/server.log"))
            if not candidates:
                return ""
            path = candidates[-1]
        return path.read_text(encoding="utf-8", errors="replace")

    def container_dir(self, namespace: str, name: str, container: str) -> Path:
        return self.worker(namespace, name).container(container).directory
