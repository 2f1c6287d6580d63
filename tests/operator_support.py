"""Helpers for the operator's tests and benchmark: the operator and sidecars as real processes.

* :class:`OperatorProcess`: ``gremlinlb operator`` with the operator's own kubeconfig (the
  ServiceAccount identity: only what manifests/10-rbac.yaml grants), its webhook on loopback.
* :class:`SidecarProcess`: ``gremlinlb sidecar`` on free loopback ports with a token file.
* :func:`create_client_pod`: the pod object of a client whose sidecar is such a process (no
  kubelet here: the pod's IP is 127.0.0.1 and its admin port is declared by name, exactly as the
  injected sidecar declares it).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from gremlinlb.devservers import GremlinServerProcess, ServerRuntime
from tests.devcluster import ControlPlane, NetnsHost, NetnsNetwork, create_running_pod

REPO = Path(__file__).resolve().parent.parent
GREMLINLB = [sys.executable, "-m", "gremlinlb.cli"]
GROUP, VERSION, PLURAL = "gremlinlb.io", "v1alpha1", "gremlinclusters"
T = TypeVar("T")

GREMLIN_PORT = 8182  # every Gremlin Server's port, each at its own network namespace's address


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http(
    method: str, url: str, body: Any = None, token: str | None = None, timeout: float = 5.0
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    # https: the tests read what a sidecar serves; who may trust it is the operator's concern.
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=unverified)
    )
    try:
        with opener.open(request, timeout=timeout) as response:
            text = response.read().decode()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as error:
        text = error.read().decode()
        try:
            return error.code, json.loads(text)
        except ValueError:
            return error.code, text


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll ``probe`` until it returns something truthy; bounded in time."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except Exception as error:  # a probe may fail while things settle
            last = error
        else:
            if last:
                found: T = last
                return found
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")


@contextlib.contextmanager
def applied_manifests(control_plane: ControlPlane) -> Iterator[ControlPlane]:
    """crds/ (established) and manifests/ applied with kubectl."""
    control_plane.kubectl("apply", "-f", str(REPO / "crds"))
    control_plane.wait_established("gremlinclusters.gremlinlb.io")
    control_plane.kubectl("apply", "-f", str(REPO / "manifests"))
    try:
        yield control_plane
    finally:
        # Leave no webhook behind for the rest of the session (it would refuse labelled pods).
        control_plane.kubectl(
            "delete",
            "mutatingwebhookconfiguration",
            "gremlinlb-sidecar-injector",
            "--ignore-not-found",
            check=False,
        )


@contextlib.contextmanager
def netns_servers(
    network: NetnsNetwork, runtime: ServerRuntime, run_dir: Path, count: int
) -> Iterator[list[tuple[NetnsHost, GremlinServerProcess]]]:
    """`count` Gremlin Servers, each alone in a network namespace, started in parallel and
    ready; killed, and their namespaces removed, on the way out."""
    hosts = [network.add_host() for _ in range(count)]
    processes = [
        GremlinServerProcess(
            GREMLIN_PORT,
            run_dir / f"server-{i}",
            runtime=runtime,
            host=host.ip,
            launcher=host.argv([]),
        )
        for i, host in enumerate(hosts)
    ]
    try:
        for process in processes:
            process.start()
        for process in processes:
            process.wait_ready(timeout=120)
        yield list(zip(hosts, processes, strict=True))
    finally:
        for process in processes:
            process.kill()
        for host in hosts:
            network.remove_host(host)


def token_files(api: k8s.ApiClient, namespace: str) -> dict[str, str]:
    """The token Secret's keys as its mounted volume shows them ({} while it is absent)."""
    try:
        secret = k8s.CoreV1Api(api).read_namespaced_secret("graph-gremlinlb-token", namespace)
    except ApiException:
        return {}
    return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}


class OperatorProcess:
    """``gremlinlb operator`` as its own process, restartable, logging into ``log_path``."""

    def __init__(
        self,
        control_plane: ControlPlane,
        log_path: Path,
        *extra: str,
        env: Mapping[str, str] = {},
        kubeconfig: Path | None = None,
        log_level: str = "INFO",
        distribution: bool = True,
    ) -> None:
        """``kubeconfig``: another way to the apiserver (a proxy) with the operator's identity;
        ``log_level``: DEBUG also logs every push and status write."""
        self.control_plane = control_plane
        self.kubeconfig = kubeconfig or control_plane.operator_kubeconfig
        self.log_level = log_level
        self.log_path = log_path
        self.webhook_port = free_port()
        self.health_port = free_port()
        self.metrics_port = free_port()
        #: Where watching sidecars poll (its certificate names localhost).
        taken = {self.webhook_port, self.health_port, self.metrics_port}
        self.distribution_port = next(p for p in iter(free_port, None) if p not in taken)
        self.extra = extra
        #: Serve the sidecars' watch (False: an operator from before it, a benchmark baseline).
        self.distribution = distribution
        self.env = dict(env)
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            *GREMLINLB,
            "--log-level",
            self.log_level,
            "operator",
            "--kubeconfig",
            str(self.kubeconfig),
            "--webhook-listen",
            f"127.0.0.1:{self.webhook_port}",
            "--webhook-url",
            f"https://127.0.0.1:{self.webhook_port}",
            "--liveness",
            f"http://127.0.0.1:{self.health_port}/healthz",
            "--metrics-listen",
            f"127.0.0.1:{self.metrics_port}",
            *(
                ("--distribution-listen", f"127.0.0.1:{self.distribution_port}")
                if self.distribution
                else ()
            ),
            *(("--distribution-url", self.distribution_url) if self.distribution else ()),
            *self.extra,
        ]

    @property
    def distribution_url(self) -> str:
        return f"https://localhost:{self.distribution_port}"

    def start(self, timeout: float = 60.0) -> None:
        with open(self.log_path, "ab") as log:
            log.write(f"\n--- starting operator at {time.ctime()}\n".encode())
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
                start_new_session=True,
            )
        wait_for(self._alive, timeout, f"the operator's liveness endpoint\n{self.log_tail()}")

    def _alive(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"operator exited {self.process.returncode}:\n{self.log_tail()}")
        try:
            return http("GET", f"http://127.0.0.1:{self.health_port}/healthz", timeout=1)[0] == 200
        except OSError:
            return False

    def stop(self, timeout: float = 30.0) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def running_operator(
    control_plane: ControlPlane, log_path: Path, *extra: str
) -> Iterator[OperatorProcess]:
    """An OperatorProcess started with `extra` flags, stopped on the way out."""
    process = OperatorProcess(control_plane, log_path, *extra)
    process.start()
    try:
        yield process
    finally:
        process.stop()


def project_secret(volume: Path, files: Mapping[str, str]) -> None:
    """Write ``files`` into ``volume`` as the kubelet updates a mounted Secret: a new timestamped
    directory, a ``..data`` symlink swapped to it atomically, and per key a symlink through
    ``..data`` (so a file's path never changes while its content does)."""
    volume.mkdir(parents=True, exist_ok=True)
    version = volume / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    version.mkdir()
    for key, text in files.items():
        (version / key).write_text(text)
    temporary = volume / "..data_tmp"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(version.name)
    data = volume / "..data"
    previous = data.resolve() if data.is_symlink() else None
    temporary.rename(data)  # the atomic swap
    for key in files:
        link = volume / key
        if not link.is_symlink():
            link.symlink_to(f"..data/{key}")
    if previous is not None and previous != version:
        for old in previous.iterdir():
            old.unlink()
        previous.rmdir()


class SidecarProcess:
    """``gremlinlb sidecar`` on loopback with the cluster's token; restartable on its ports.

    The token is read from a volume laid out as the kubelet mounts a Secret, so
    :meth:`project_token` is exactly what a Secret update looks like to the sidecar."""

    def __init__(
        self, token: str, work_dir: Path, *extra: str, files: Mapping[str, str] = {}
    ) -> None:
        self.port, self.admin_port = free_port(), free_port()
        self.work_dir = work_dir
        self.extra = extra
        self.token_volume = work_dir / "token-volume"
        self.token_file = self.token_volume / "token"
        #: The Secret's other keys; with tls.crt and tls.key the admin API serves HTTPS.
        self.files = {**files, "token": token}
        self.project(self.files)
        self.tls = "tls.crt" in files
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def project(self, files: Mapping[str, str]) -> None:
        """What the kubelet does when the token Secret changes: every key, at once."""
        self.files = dict(files)
        project_secret(self.token_volume, self.files)

    def project_token(self, token: str) -> None:
        self.project({**self.files, "token": token})

    def start(self, timeout: float = 30.0) -> SidecarProcess:
        self.starts += 1
        state = self.work_dir / f"state-{self.starts}"  # a fresh container: no saved list
        with open(self.work_dir / "sidecar.log", "ab") as log:
            self.process = subprocess.Popen(
                [
                    *GREMLINLB,
                    "sidecar",
                    "--listen",
                    f"127.0.0.1:{self.port}",
                    "--admin",
                    f"127.0.0.1:{self.admin_port}",
                    "--token-file",
                    str(self.token_file),
                    "--state-dir",
                    str(state),
                    *self.tls_flags(),
                    *self.extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        wait_for(self._alive, timeout, "the sidecar's /healthz")
        return self

    def tls_flags(self) -> list[str]:
        if not self.tls:
            return []
        return [
            *("--admin-tls-cert-file", str(self.token_volume / "tls.crt")),
            *("--admin-tls-key-file", str(self.token_volume / "tls.key")),
        ]

    def _alive(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            log = (self.work_dir / "sidecar.log").read_text(errors="replace")[-2000:]
            raise AssertionError(f"sidecar exited {self.process.returncode}: {log}")
        try:
            return http("GET", f"{self.admin}/healthz", timeout=1)[0] == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    @property
    def admin(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.admin_port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def host_list(self) -> tuple[int, list[str]]:
        """(generation, addresses of the hosts it will send new requests to)."""
        status, body = http("GET", f"{self.admin}/v1/hosts")
        assert status == 200, body
        hosts = [h["address"] for h in body["hosts"] if h["state"] != "draining"]
        return int(body["generation"]), sorted(hosts)


def sidecar_container(admin_port: int) -> k8s.V1Container:
    """The container a client pod declares for its sidecar (the admin port is found by name)."""
    return k8s.V1Container(
        name="gremlinlb-sidecar",
        image="gremlinlb:test",
        ports=[k8s.V1ContainerPort(name="gremlinlb-admin", container_port=admin_port)],
    )


def create_client_pod(
    api: k8s.ApiClient,
    namespace: str,
    name: str,
    admin_port: int,
    *,
    cluster: str = "graph",
    ip: str = "127.0.0.1",
    admin_tls: bool = False,
    zone: str | None = None,
) -> k8s.V1Pod:
    """A client pod whose sidecar is already declared; ``zone`` is its node's zone label."""
    labels = {"gremlinlb.io/inject": cluster}
    if zone is not None:
        labels["topology.kubernetes.io/zone"] = zone
    return create_running_pod(
        api,
        namespace,
        name,
        ip,
        labels=labels,
        annotations={"gremlinlb.io/admin-tls": "true"} if admin_tls else None,
        containers=[
            k8s.V1Container(name="app", image="app:test"),
            sidecar_container(admin_port),
        ],
    )


def restart_sidecar_container(api: k8s.ApiClient, namespace: str, name: str) -> None:
    """What a kubelet reports when a container restarted: restartCount + 1, a new containerID."""
    core = k8s.CoreV1Api(api)
    pod = core.read_namespaced_pod(name, namespace)
    statuses = []
    for status in (pod.status.container_statuses or []) if pod.status else []:
        item: dict[str, Any] = api.sanitize_for_serialization(status)  # type: ignore[no-untyped-call]
        if status.name == "gremlinlb-sidecar":
            item["restartCount"] = (status.restart_count or 0) + 1
            item["containerID"] = f"fake://{name}/gremlinlb-sidecar/{item['restartCount']}"
        statuses.append(item)
    core.patch_namespaced_pod_status(
        name,
        namespace,
        {"status": {"containerStatuses": statuses}},
    )


OPERATOR_USER = "system:serviceaccount:gremlinlb-system:gremlinlb-operator"


def operator_may(
    api: k8s.ApiClient,
    verb: str,
    resource: str,
    *,
    namespace: str | None = None,
    group: str = "",
    name: str | None = None,
    subresource: str | None = None,
) -> bool:
    """Whether RBAC lets the operator's ServiceAccount do this: a SubjectAccessReview asked by
    ``api`` (an admin), what ``kubectl auth can-i --as=<the ServiceAccount>`` asks."""
    review = k8s.AuthorizationV1Api(api).create_subject_access_review(
        k8s.V1SubjectAccessReview(
            spec=k8s.V1SubjectAccessReviewSpec(
                user=OPERATOR_USER,
                groups=[
                    "system:serviceaccounts",
                    "system:serviceaccounts:gremlinlb-system",
                    "system:authenticated",
                ],
                resource_attributes=k8s.V1ResourceAttributes(
                    verb=verb,
                    resource=resource,
                    group=group,
                    namespace=namespace,
                    name=name,
                    subresource=subresource,
                ),
            )
        )
    )
    return bool(review.status is not None and review.status.allowed)


def cluster_object(api: k8s.ApiClient, namespace: str, name: str = "graph") -> dict[str, Any]:
    found = k8s.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )
    assert isinstance(found, dict)
    return found


def condition(obj: Mapping[str, Any], kind: str) -> dict[str, Any]:
    for item in (obj.get("status") or {}).get("conditions") or ():
        if item.get("type") == kind:
            return dict(item)
    return {}


def served_by(address: str, count: int, timeout: float = 60.0) -> list[str]:
    """Run ``count`` reads through ``address`` (one client connection); the servers' names."""
    from gremlinlb.devservers import with_traversal_source

    def work(g: Any) -> list[str]:
        return [str(g.V().has_label("server").values("name").next()) for _ in range(count)]

    return with_traversal_source(address, work, timeout)


def kill_quietly(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
