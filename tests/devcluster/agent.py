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
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import datetime
import http.client
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from gremlinlb.devservers.server import GremlinServerProcess
from tests.devcluster.controlplane import _die_with_parent
from tests.devcluster.errors import DevClusterError, NetnsError
from tests.devcluster.netns import NetnsHost, NetnsNetwork, find_ip_tool

if TYPE_CHECKING:
    from gremlinlb.devservers.fetch import ServerRuntime
    from tests.devcluster.controlplane import ControlPlane

log = logging.getLogger(__name__)

_CLONE_NEWNET = 0x40000000
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_TICK_S = 0.2
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


#: Runs first in each container's mount namespace (see its docstring): volumes, kept paths, exec.
_MOUNT_HELPER = Path(__file__).with_name("mount_helper.py")


class PodFailure(DevClusterError):
    """A pod the agent cannot run as specified (unknown image, unsupported volume, ...)."""


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


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock, how in ((sink, socket.SHUT_WR), (source, socket.SHUT_RD)):
            with contextlib.suppress(OSError):
                sock.shutdown(how)


class ServiceForwarder:
    """Inside one pod's namespace, ``service_ip:port`` leads to ``127.0.0.1:target_port`` on
    the host: the one Service (``kubernetes``) in-cluster clients need, without kube-proxy."""

    def __init__(self, host: NetnsHost, service_ip: str, port: int, target_port: int) -> None:
        self.host = host
        self.service_ip = service_ip
        self.port = port
        self.target_port = target_port
        self._listener: socket.socket | None = None
        self._closed = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> None:
        subprocess.run(
            [
                find_ip_tool(),
                "-n",
                self.host.name,
                "addr",
                "add",
                f"{self.service_ip}/32",
                "dev",
                "lo",
            ],
            check=True,
            capture_output=True,
            timeout=20,
        )
        thread = threading.Thread(target=self._serve, name=f"svc-{self.host.name}", daemon=True)
        thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise NetnsError(f"service forwarder in {self.host.name}: {self._error}")

    def _serve(self) -> None:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.host.name}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind((self.service_ip, self.port))
                listener.listen(64)
                listener.settimeout(0.5)
            finally:
                _setns(own)  # connections to the apiserver leave from the host's namespace
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        finally:
            os.close(own)
            os.close(target)
        self._listener = listener
        self._ready.set()
        with listener:
            while not self._closed.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    break
                try:
                    upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                except OSError:
                    conn.close()
                    continue
                conn.settimeout(None)
                upstream.settimeout(None)
                for a, b in ((conn, upstream), (upstream, conn)):
                    threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self._closed.set()


# -- containers ----------------------------------------------------------------------------------


class Process(Protocol):
    def poll(self) -> int | None: ...

    def send(self, signum: int) -> None: ...


class _Popen:
    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen

    def poll(self) -> int | None:
        return self.popen.poll()

    def send(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signum)


class _Jvm:
    def __init__(self, server: GremlinServerProcess) -> None:
        self.server = server

    def poll(self) -> int | None:
        if self.server.is_running():
            return None
        code = self.server.returncode
        return code if code is not None else -1

    def send(self, signum: int) -> None:
        pid = self.server.pid
        if pid is not None and self.server.is_running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)


@dataclass
class ProbeState:
    spec: dict[str, Any]
    successes: int = 0
    failures: int = 0
    result: bool = False
    next_due: float = 0.0


@dataclass
class Container:
    spec: dict[str, Any]
    role: str  # "init", "sidecar" or "main"
    directory: Path
    process: Process | None = None
    restart_count: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    waiting: tuple[str, str] | None = ("ContainerCreating", "")
    started: bool = False
    ready: bool = False
    restart_at: float = 0.0
    probes: dict[str, ProbeState] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def status(self, pod_uid: str) -> dict[str, Any]:
        state: dict[str, Any]
        if self.running():
            state = {"running": {"startedAt": self.started_at}}
        elif self.exit_code is not None:
            state = {
                "terminated": {
                    "exitCode": self.exit_code,
                    "reason": "Completed" if self.exit_code == 0 else "Error",
                    "startedAt": self.started_at,
                    "finishedAt": self.finished_at,
                }
            }
        else:
            reason, message = self.waiting or ("ContainerCreating", "")
            state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        status: dict[str, Any] = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": state,
        }
        if self.process is not None:
            status["containerID"] = f"gremlinlb-agent://{pod_uid}/{self.name}/{self.restart_count}"
        return status


# -- one pod -------------------------------------------------------------------------------------


class PodWorker:
    """Runs one pod from its IP to its deletion, in a thread of its own."""

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

    # -- plumbing --

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

    def _wait(self, predicate: Callable[[], bool]) -> bool:
        """Tick until ``predicate`` holds (True) or the pod is going away (False)."""
        while not self._stopping():
            if predicate():
                return True
            time.sleep(_TICK_S)
        return False

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

    def _prepare_volumes(self) -> bool:
        """Write every volume; False (retry later) while a Secret or ConfigMap is missing."""
        volumes_dir = self.directory / "volumes"
        for volume in self.pod["spec"].get("volumes") or ():
            name = volume["name"]
            if name in self._mounts:
                continue
            target = volumes_dir / name
            try:
                self._write_volume(volume, target)
            except ApiException as exc:
                if exc.status == 404:
                    self._event("FailedMount", f"volume {name}: {exc.reason} (retrying)")
                    return False
                raise
            self._mounts[name] = target
        return True

    def _write_volume(self, volume: Mapping[str, Any], target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        if "emptyDir" in volume:
            return
        if "secret" in volume:
            source = volume["secret"]
            data = self._secret_data(source["secretName"], optional=bool(source.get("optional")))
            self._write_items(target, data, source.get("items"), source.get("defaultMode", 0o644))
            return
        if "configMap" in volume:
            source = volume["configMap"]
            data = self._config_map_data(source["name"], optional=bool(source.get("optional")))
            self._write_items(target, data, source.get("items"), source.get("defaultMode", 0o644))
            return
        if "projected" in volume:
            mode = volume["projected"].get("defaultMode", 0o644)
            for source in volume["projected"].get("sources") or ():
                if "serviceAccountToken" in source:
                    token = self._service_account_token(source["serviceAccountToken"])
                    self._write_file(target / source["serviceAccountToken"]["path"], token, mode)
                elif "configMap" in source:
                    data = self._config_map_data(source["configMap"]["name"])
                    self._write_items(target, data, source["configMap"].get("items"), mode)
                elif "secret" in source:
                    data = self._secret_data(source["secret"]["name"])
                    self._write_items(target, data, source["secret"].get("items"), mode)
                elif "downwardAPI" in source:
                    for item in source["downwardAPI"].get("items") or ():
                        value = self._field_ref(item.get("fieldRef") or {})
                        self._write_file(target / item["path"], value.encode(), mode)
                else:
                    raise PodFailure(f"unsupported projected volume source {sorted(source)}")
            return
        raise PodFailure(
            f"volume {volume['name']}: unsupported type {sorted(k for k in volume if k != 'name')} "
            "(the node agent knows emptyDir, secret, configMap and projected)"
        )

    def _secret_data(self, name: str, optional: bool = False) -> dict[str, bytes]:
        try:
            secret = self.core.read_namespaced_secret(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404 and optional:
                return {}
            raise
        return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}

    def _config_map_data(self, name: str, optional: bool = False) -> dict[str, bytes]:
        try:
            found = self.core.read_namespaced_config_map(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404 and optional:
                return {}
            raise
        return {k: v.encode() for k, v in (found.data or {}).items()}

    def _service_account_token(self, source: Mapping[str, Any]) -> bytes:
        account = self.pod["spec"].get("serviceAccountName") or "default"
        spec: dict[str, Any] = {
            "expirationSeconds": int(source.get("expirationSeconds", 3607)),
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": self.name,
                "uid": self.uid,
            },
        }
        if source.get("audience"):
            spec["audiences"] = [source["audience"]]
        else:
            spec["audiences"] = []
        response: Any = self.core.create_namespaced_service_account_token(
            account, self.namespace, cast(Any, {"spec": spec})
        )
        return str(response.status.token).encode()

    @staticmethod
    def _write_file(path: Path, data: bytes, mode: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode)

    def _write_items(
        self,
        target: Path,
        data: Mapping[str, bytes],
        items: Sequence[Mapping[str, Any]] | None,
        mode: int,
    ) -> None:
        if items:
            for item in items:
                if item["key"] in data:
                    self._write_file(
                        target / item["path"], data[item["key"]], item.get("mode", mode)
                    )
        else:
            for key, value in data.items():
                self._write_file(target / key, value, mode)

    def _field_ref(self, ref: Mapping[str, Any]) -> str:
        path = str(ref.get("fieldPath", ""))
        pod = self.pod
        simple = {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "metadata.uid": self.uid,
            "spec.nodeName": pod["spec"].get("nodeName", ""),
            "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
            "status.podIP": (pod.get("status") or {}).get("podIP", ""),
            "status.hostIP": (pod.get("status") or {}).get("hostIP", ""),
        }
        if path in simple:
            return str(simple[path])
        match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if match:
            return str((pod["metadata"].get(match.group(1)) or {}).get(match.group(2), ""))
        raise PodFailure(f"unsupported fieldRef {path!r}")

    # -- environment and launch --

    def _env(self, container: Container) -> dict[str, str]:
        catalog = self.agent.images
        env: dict[str, str] = {
            "PATH": f"{catalog.bin_dir}:{_DEFAULT_PATH}",
            "HOSTNAME": self.name,
            "HOME": "/",
            **dict(catalog.image_env),
        }
        if self.agent.service is not None:  # a kubelet sets these whatever enableServiceLinks says
            service_ip, port = self.agent.service
            env.update(
                {
                    "KUBERNETES_SERVICE_HOST": service_ip,
                    "KUBERNETES_SERVICE_PORT": str(port),
                    "KUBERNETES_SERVICE_PORT_HTTPS": str(port),
                    "KUBERNETES_PORT": f"tcp://{service_ip}:{port}",
                }
            )
        for source in container.spec.get("envFrom") or ():
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                data = self._config_map_data(
                    source["configMapRef"]["name"], bool(source["configMapRef"].get("optional"))
                )
            else:
                data = self._secret_data(
                    source["secretRef"]["name"], bool(source["secretRef"].get("optional"))
                )
            env.update({prefix + k: v.decode() for k, v in data.items()})
        for item in container.spec.get("env") or ():
            name = item["name"]
            if "value" in item:
                env[name] = _VAR_REF.sub(
                    lambda m: env.get(m.group(1), m.group(0)), str(item["value"])
                )
                continue
            value_from = item.get("valueFrom") or {}
            if "fieldRef" in value_from:
                env[name] = self._field_ref(value_from["fieldRef"])
            elif "secretKeyRef" in value_from or "configMapKeyRef" in value_from:
                secret = "secretKeyRef" in value_from
                ref = value_from["secretKeyRef" if secret else "configMapKeyRef"]
                optional = bool(ref.get("optional"))
                read = self._secret_data if secret else self._config_map_data
                data = read(ref["name"], optional)
                if ref["key"] not in data and not optional:
                    kind = "Secret" if secret else "ConfigMap"
                    raise PodFailure(
                        f"env {name}: {kind} {ref['name']!r} has no key {ref['key']!r}"
                    )
                env[name] = data.get(ref["key"], b"").decode()
            else:
                raise PodFailure(
                    f"env {name}: unsupported valueFrom {sorted(value_from)} (the node agent "
                    "knows fieldRef, secretKeyRef and configMapKeyRef)"
                )
        return env

    def _argv(self, container: Container, env: Mapping[str, str]) -> list[str]:
        catalog = self.agent.images
        spec = container.spec
        command = list(spec.get("command") or ())
        args = list(spec.get("args") or ())

        def expand(text: str) -> str:
            return _VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), text)

        argv = [
            expand(a)
            for a in (
                command + args
                if command
                else [*catalog.entrypoint, *(args or catalog.default_args)]
            )
        ]
        if not argv:
            raise PodFailure(f"container {container.name}: nothing to run")
        found = shutil.which(argv[0], path=env.get("PATH"))
        if found is None:
            raise PodFailure(
                f"container {container.name}: {argv[0]!r} not found in the image's PATH"
            )
        return [found, *argv[1:]]

    def _mounts_of(self, container: Container) -> list[list[Any]]:
        """[source, target, read-only] of each volume mount, parents before children."""
        mounts: list[list[Any]] = []
        for mount in container.spec.get("volumeMounts") or ():
            source = self._mounts.get(mount["name"])
            if source is None:
                raise PodFailure(f"container {container.name}: no volume named {mount['name']!r}")
            if mount.get("subPath"):
                source = source / mount["subPath"]
            mounts.append([str(source), str(mount["mountPath"]), bool(mount.get("readOnly"))])
        # The pod's /etc/hosts, as a kubelet mounts it into every container.
        mounts.append([str(self.directory / "etc-hosts"), "/etc/hosts", True])
        return sorted(mounts, key=lambda m: len(Path(m[1]).parts))

    def _write_hosts_file(self) -> None:
        """The pod's own name at its IP and, standing in for cluster DNS, the ``kubernetes``
        Service's names at its cluster IP (in-cluster clients such as kopf use the name)."""
        assert self.host is not None
        lines = [
            "127.0.0.1\tlocalhost",
            f"{self.host.address}\t{self.name}",
        ]
        if self.agent.service is not None:
            names = "kubernetes kubernetes.default kubernetes.default.svc"
            names += " kubernetes.default.svc.cluster.local"
            lines.append(f"{self.agent.service[0]}\t{names}")
        (self.directory / "etc-hosts").write_text("\n".join(lines) + "\n", encoding="utf-8")

    def container_command(self, container: Container, argv: Sequence[str]) -> list[str]:
        """``argv`` as it runs in ``container``: the pod's network namespace and its volumes
        bind-mounted at their mount paths (in the mount namespace ``ip netns exec`` makes)."""
        assert self.host is not None
        spec = {
            "mounts": self._mounts_of(container),
            "keep": [str(p) for p in (*self.agent.images.image_paths(), self.agent.workdir)],
        }
        helper = [sys.executable, "-S", str(_MOUNT_HELPER), json.dumps(spec)]
        return self.host.argv([*helper, *argv])

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

    def _port(self, container: Container, port: Any) -> int:
        if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
            return int(port)
        for item in container.spec.get("ports") or ():
            if item.get("name") == port:
                return int(item["containerPort"])
        raise PodFailure(f"container {container.name}: no port named {port!r}")

    def _probe_once(self, container: Container, spec: Mapping[str, Any]) -> bool:
        assert self.host is not None
        timeout = float(spec.get("timeoutSeconds", 1))
        ip = str(self.host.address)
        try:
            if "tcpSocket" in spec:
                port = self._port(container, spec["tcpSocket"]["port"])
                with socket.create_connection((ip, port), timeout=timeout):
                    return True
            if "httpGet" in spec:
                get = spec["httpGet"]
                port = self._port(container, get["port"])
                conn: http.client.HTTPConnection
                if str(get.get("scheme", "HTTP")).upper() == "HTTPS":
                    # As the kubelet does: TLS without verifying the certificate.
                    conn = http.client.HTTPSConnection(
                        ip, port, timeout=timeout, context=ssl._create_unverified_context()
                    )
                else:
                    conn = http.client.HTTPConnection(ip, port, timeout=timeout)
                try:
                    headers = {h["name"]: h["value"] for h in get.get("httpHeaders") or ()}
                    conn.request("GET", get.get("path", "/"), headers=headers)
                    return 200 <= conn.getresponse().status < 400
                finally:
                    conn.close()
            if "exec" in spec:
                done = subprocess.run(
                    self.container_command(container, spec["exec"]["command"]),
                    env=self._env(container),
                    capture_output=True,
                    timeout=timeout,
                    check=False,
                )
                return done.returncode == 0
        except (OSError, subprocess.TimeoutExpired, http.client.HTTPException):
            return False
        raise PodFailure(f"container {container.name}: unsupported probe {sorted(spec)}")

    def _run_probes(self, container: Container, now: float) -> None:
        for kind in ("startup", "readiness", "liveness"):
            state = container.probes.get(kind)
            if state is None or now < state.next_due:
                continue
            if kind != "startup" and not container.started:
                continue
            if kind == "startup" and container.started:
                continue
            spec = state.spec
            state.next_due = now + float(spec.get("periodSeconds", 10))
            ok = self._probe_once(container, spec)
            if ok:
                state.successes, state.failures = state.successes + 1, 0
                if state.successes >= int(spec.get("successThreshold", 1)):
                    state.result = True
            else:
                state.failures, state.successes = state.failures + 1, 0
                if state.failures >= int(spec.get("failureThreshold", 3)):
                    state.result = False
            if kind == "startup" and state.result:
                container.started = True
                for other in ("readiness", "liveness"):
                    if other in container.probes:
                        container.probes[other].next_due = now
            elif (
                kind == "liveness"
                and not ok
                and state.failures >= int(spec.get("failureThreshold", 3))
            ):
                if not self._deleting():
                    self._event(
                        "Unhealthy",
                        f"Liveness probe failed: container {container.name}; restarting",
                    )
                    self._kill_container(
                        container,
                        grace_s=float(self.pod["spec"].get("terminationGracePeriodSeconds", 30)),
                    )
                    return
            elif (
                kind == "startup"
                and not ok
                and state.failures >= int(spec.get("failureThreshold", 3))
            ):
                self._event(
                    "Unhealthy", f"Startup probe failed: container {container.name}; restarting"
                )
                self._kill_container(container, grace_s=2.0)
                return
        if "readiness" in container.probes:
            container.ready = container.started and container.probes["readiness"].result
        else:
            container.ready = container.started

    def _kill_container(self, container: Container, grace_s: float) -> None:
        process = container.process
        if process is None:
            return
        process.send(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if process.poll() is None:
            process.send(signal.SIGKILL)
            while process.poll() is None and time.monotonic() < deadline + 5:
                time.sleep(0.05)

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

    def container(self, name: str) -> Container:
        for container in self.containers:
            if container.name == name:
                return container
        raise DevClusterError(f"pod {self.namespace}/{self.name} has no container {name!r}")


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
