"""The containers of a devcluster pod: their processes and probe state, and the status the
agent reports for each (a kubelet's container runtime, cut down to what the specs use)."""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gremlinlb.devservers.server import GremlinServerProcess
from tests.devcluster.errors import DevClusterError

_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_TICK_S = 0.2
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


#: Runs first in each container's mount namespace (see its docstring): volumes, kept paths, exec.
_MOUNT_HELPER = Path(__file__).with_name("mount_helper.py")


class PodFailure(DevClusterError):
    """A pod the agent cannot run as specified (unknown image, unsupported volume, ...)."""


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
