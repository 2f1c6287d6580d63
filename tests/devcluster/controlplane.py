"""A real Kubernetes control plane for tests: etcd plus kube-apiserver on loopback.

No kubelet, scheduler or controller-manager run, so (see :mod:`tests.devcluster.objects`)
pods stay Pending until a test patches their status, nothing writes EndpointSlices, and deleted
namespaces stay Terminating. Everything else is the real apiserver: validation, defaulting,
CRDs with OpenAPI schemas, status subresources, watches, admission webhooks and RBAC.

Authentication uses a static token file with two users:

* ``admin`` in ``system:masters`` (tests set up the world with it);
* the operator, named like the ServiceAccount ``gremlinlb-system/gremlinlb-operator``, in no
  privileged group: it can do exactly what the RBAC manifests grant that ServiceAccount.

Example::

    with ControlPlane() as cp:
        api = cp.api_client()            # admin; cp.api_client("operator") for the operator
        cp.kubectl("apply", "-f", "crds/")
        os.environ["KUBECONFIG"] = str(cp.operator_kubeconfig)
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Literal

from kubernetes import client as k8s

from tests.devcluster.binaries import Binaries, find_binaries
from tests.devcluster.errors import ControlPlaneStartError, DevClusterError
from tests.devcluster.pki import ControlPlaneCerts, TokenUser, generate_certs, token_file_text

log = logging.getLogger(__name__)

User = Literal["admin", "operator"]

#: Only API data: no traffic is ever sent to these addresses (there is no kube-proxy).
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
OPERATOR_NAMESPACE = "gremlinlb-system"
OPERATOR_SERVICE_ACCOUNT = "gremlinlb-operator"
_PR_SET_PDEATHSIG = 1
_WORKDIR_PREFIX = "gremlinlb-cp-"


def sweep_stale_workdirs() -> list[Path]:
    """Remove temporary workdirs left by test processes that died without stopping (SIGKILL).

    Their etcd and kube-apiserver died with them (they are started with a parent-death signal).
    """
    removed: list[Path] = []
    for path in Path(tempfile.gettempdir()).glob(f"{_WORKDIR_PREFIX}*-*"):
        try:
            pid = int(path.name[len(_WORKDIR_PREFIX) :].split("-", 1)[0])
        except ValueError:
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        except PermissionError:
            pass
    return removed


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask the kernel to SIGKILL the child when the thread that started it exits."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _port_clash(log_path: Path, offset: int) -> bool:
    """Whether the log, from ``offset`` on, says a port was taken (then retrying may help)."""
    try:
        with open(log_path, "rb") as handle:
            handle.seek(offset)
            return b"address already in use" in handle.read()
    except OSError:
        return False


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class _Process:
    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self, env: Mapping[str, str] | None = None) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, grace_s: float = 15.0) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                log.warning("%s ignored SIGTERM for %.0f s; killing it", self.name, grace_s)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=grace_s)
        if self._log is not None:
            self._log.close()
            self._log = None


class ControlPlane:
    """etcd + kube-apiserver, started in :meth:`start` and stopped in :meth:`stop`.

    ``workdir`` holds data, certificates, logs and kubeconfigs; a temporary directory (removed on
    stop unless ``keep_workdir``) if not given. Ports are free loopback ports chosen at start.
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        binaries: Binaries | None = None,
        operator_namespace: str = OPERATOR_NAMESPACE,
        operator_service_account: str = OPERATOR_SERVICE_ACCOUNT,
        extra_users: Sequence[TokenUser] = (),
        extra_apiserver_flags: Sequence[str] = (),
        keep_workdir: bool = False,
        start_timeout_s: float = 90.0,
    ) -> None:
        self._binaries = binaries
        self._given_workdir = workdir
        self._keep_workdir = keep_workdir or workdir is not None
        self._start_timeout_s = start_timeout_s
        self._extra_flags = list(extra_apiserver_flags)
        self.admin = TokenUser.create("admin", groups=("system:masters",))
        self.operator = TokenUser.service_account(operator_namespace, operator_service_account)
        self.extra_users = list(extra_users)
        self.workdir: Path = Path()
        self.certs: ControlPlaneCerts | None = None
        self.etcd_port = 0
        self.apiserver_port = 0
        self._etcd: _Process | None = None
        self._apiserver: _Process | None = None
        self._started = False

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> ControlPlane:
        """Start etcd and kube-apiserver, wait for ``/readyz``, write the kubeconfigs."""
        if self._started:
            return self
        binaries = self._binaries or find_binaries()
        self._binaries = binaries
        if self._given_workdir is not None:
            self.workdir = self._given_workdir
            self.workdir.mkdir(parents=True, exist_ok=True)
        else:
            sweep_stale_workdirs()
            self.workdir = Path(tempfile.mkdtemp(prefix=f"{_WORKDIR_PREFIX}{os.getpid()}-"))
        self._started = True
        try:
            self.certs = self._generate_certs()
            (self.workdir / "tokens.csv").write_text(
                token_file_text([self.admin, self.operator, *self.extra_users]), encoding="utf-8"
            )
            (self.workdir / "tokens.csv").chmod(0o600)
            self._start_etcd(binaries)
            self.start_apiserver()
            self._write_kubeconfigs()
        except BaseException:
            self.stop()
            raise
        log.info("control plane ready at %s (workdir %s)", self.url, self.workdir)
        return self

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd; remove the workdir if it was a temporary one."""
        if not self._started:
            return
        self._started = False
        if self._apiserver is not None:
            self._apiserver.stop()
            self._apiserver = None
        if self._etcd is not None:
            self._etcd.stop()
            self._etcd = None
        if not self._keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def stop_apiserver(self) -> None:
        """Stop only kube-apiserver (etcd and its data stay): clients see the API disappear."""
        if self._apiserver is not None:
            self._apiserver.stop()
            self._apiserver = None

    def start_apiserver(self) -> None:
        """(Re)start kube-apiserver on the same port with the same data; waits for readiness."""
        if self._apiserver is not None and self._apiserver.running():
            return
        assert self._binaries is not None
        assert self.certs is not None
        # A restart keeps the port (clients and kubeconfigs point at it); a first start picks a
        # free one and, should another process grab it first, another.
        restarting = self.apiserver_port != 0
        for attempt in range(3):
            if not restarting:
                self.apiserver_port = free_port()
            elif attempt > 0:
                time.sleep(1.0)
            log_path = self.workdir / "apiserver.log"
            offset = _size(log_path)
            proc = _Process("kube-apiserver", self._apiserver_argv(self._binaries), log_path)
            proc.start()
            self._apiserver = proc
            try:
                self._wait_ready(proc, self._apiserver_ready)
                return
            except ControlPlaneStartError:
                proc.stop()
                self._apiserver = None
                if not _port_clash(log_path, offset) or attempt == 2:
                    raise

    def restart_apiserver(self) -> None:
        self.stop_apiserver()
        self.start_apiserver()

    @property
    def running(self) -> bool:
        return bool(
            self._etcd and self._etcd.running() and self._apiserver and self._apiserver.running()
        )

    # -- where things are ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    @property
    def ca_file(self) -> Path:
        if self.certs is None:
            raise DevClusterError("control plane not started")
        return self.certs.ca_cert

    @property
    def admin_kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def operator_kubeconfig(self) -> Path:
        return self.workdir / "operator.kubeconfig"

    @property
    def binaries(self) -> Binaries:
        if self._binaries is None:
            self._binaries = find_binaries()
        return self._binaries

    def token(self, user: User = "admin") -> str:
        return self.admin.token if user == "admin" else self.operator.token

    def kubeconfig(self, user: User = "admin") -> Path:
        return self.admin_kubeconfig if user == "admin" else self.operator_kubeconfig

    # -- clients -------------------------------------------------------------------------------

    def client_configuration(self, user: User | TokenUser = "admin") -> k8s.Configuration:
        token = user.token if isinstance(user, TokenUser) else self.token(user)
        config = k8s.Configuration(
            host=self.url,
            api_key={"BearerToken": token},
            api_key_prefix={"BearerToken": "Bearer"},
            ssl_ca_cert=str(self.ca_file),
            no_proxy="127.0.0.1,localhost",
        )
        return config

    def api_client(self, user: User | TokenUser = "admin") -> k8s.ApiClient:
        """A synchronous ``kubernetes`` client authenticated as ``user`` (close it when done)."""
        return k8s.ApiClient(self.client_configuration(user))

    def kubectl(
        self,
        *args: str,
        user: User = "admin",
        input_text: str | None = None,
        check: bool = True,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against this control plane as ``user``."""
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig(user))}
        done = subprocess.run(
            [str(self.binaries.kubectl), *args],
            input=input_text,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise DevClusterError(
                f"kubectl {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}"
            )
        return done

    def wait_established(self, crd: str, limit: float = 60.0) -> None:
        """Wait until the CustomResourceDefinition ``crd`` serves its kind. Not ``kubectl wait
        --for=condition=Established``: straight after the apply the CRD may have no status yet,
        and kubectl then fails at once (".status.conditions accessor error") instead of waiting."""
        jsonpath = '{.status.conditions[?(@.type=="Established")].status}'
        deadline = time.monotonic() + limit
        while True:
            done = self.kubectl("get", "crd", crd, "-o", f"jsonpath={jsonpath}", check=False)
            if done.returncode == 0 and done.stdout.strip() == "True":
                return
            if time.monotonic() > deadline:
                raise DevClusterError(
                    f"CRD {crd} not Established within {limit:g} s "
                    f"(last: {done.stdout.strip() or done.stderr.strip() or 'no condition'})"
                )
            time.sleep(0.2)

    # -- internals -----------------------------------------------------------------------------

    def _start_etcd(self, binaries: Binaries) -> None:
        for attempt in range(3):
            self.etcd_port = free_port()
            peer_port = free_port()
            data = self.workdir / "etcd-data"
            shutil.rmtree(data, ignore_errors=True)
            peer = f"http://127.0.0.1:{peer_port}"
            argv = [
                str(binaries.etcd),
                "--name=gremlinlb-test",
                f"--data-dir={data}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=gremlinlb-test={peer}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ]
            log_path = self.workdir / "etcd.log"
            offset = _size(log_path)
            proc = _Process("etcd", argv, log_path)
            proc.start()
            self._etcd = proc
            try:
                self._wait_ready(proc, self._etcd_ready)
                return
            except ControlPlaneStartError:
                proc.stop()
                self._etcd = None
                if not _port_clash(log_path, offset) or attempt == 2:
                    raise

    def _apiserver_argv(self, binaries: Binaries) -> list[str]:
        assert self.certs is not None
        certs = self.certs
        return [
            str(binaries.kube_apiserver),
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.apiserver_port}",
            f"--cert-dir={self.workdir / 'pki'}",
            f"--tls-cert-file={certs.serving_cert}",
            f"--tls-private-key-file={certs.serving_key}",
            f"--client-ca-file={certs.ca_cert}",
            f"--token-auth-file={self.workdir / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={certs.sa_public_key}",
            f"--service-account-signing-key-file={certs.sa_private_key}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true",
            # The apiserver's own endpoint would be 127.0.0.1, which Endpoints refuse.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            "--v=1",
            *self._extra_flags,
        ]

    def _generate_certs(self) -> ControlPlaneCerts:
        return generate_certs(self.workdir / "pki")

    def _wait_ready(self, proc: _Process, probe: Callable[[], tuple[bool, str]]) -> None:
        deadline = time.monotonic() + self._start_timeout_s
        last = ""
        while time.monotonic() < deadline:
            if not proc.running():
                raise ControlPlaneStartError(
                    f"{proc.name} exited during start-up; end of {proc.log_path}:\n"
                    f"{_tail(proc.log_path)}"
                )
            ok, last = probe()
            if ok:
                return
            time.sleep(0.2)
        raise ControlPlaneStartError(
            f"{proc.name} not ready after {self._start_timeout_s:.0f} s (last: {last}); "
            f"end of {proc.log_path}:\n{_tail(proc.log_path)}"
        )

    def _etcd_ready(self) -> tuple[bool, str]:
        status, body = _get(f"{self.etcd_url}/health", None)
        return status == 200 and '"health":"true"' in body.replace(" ", ""), f"{status} {body}"

    def _apiserver_ready(self) -> tuple[bool, str]:
        status, body = _get(f"{self.url}/readyz", _ssl_context(self.ca_file))
        return status == 200, f"{status} {body[:300]}"

    def _write_kubeconfigs(self) -> None:
        for user, path in (
            ("admin", self.admin_kubeconfig),
            ("operator", self.operator_kubeconfig),
        ):
            token_user = self.admin if user == "admin" else self.operator
            write_kubeconfig(path, self.url, self.ca_file, token_user.token, user=user)


def _ssl_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def _get(url: str, context: ssl.SSLContext | None, timeout: float = 3.0) -> tuple[int, str]:
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(url, timeout=timeout) as response:
            return int(response.status), response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except (OSError, ValueError) as exc:
        return 0, str(exc)


def write_kubeconfig(path: Path, server: str, ca_file: Path, token: str, *, user: str) -> Path:
    """A kubeconfig with one cluster, user and (current) context. JSON, which is valid YAML."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "gremlinlb-test",
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {
                "name": user,
                "context": {"cluster": "gremlinlb-test", "user": user, "namespace": "default"},
            }
        ],
        "current-context": user,
        "preferences": {},
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=2)
        handle.write("\n")
    return path
