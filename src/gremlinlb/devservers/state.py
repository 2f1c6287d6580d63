"""Bookkeeping for servers left running by ``gremlinlb dev-servers up --detach``.

The CLI process that started them exits, so ``status`` and ``down`` find them again through a
JSON state file (pid, port, work dir per server). Pids are checked against the JVM command line
before any signal is sent, so a recycled pid is never killed by mistake.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from gremlinlb.devservers.fetch import cache_dir
from gremlinlb.devservers.server import GremlinServerProcess

STATE_VERSION = 1


def default_state_file() -> Path:
    return cache_dir() / "dev-servers" / "state.json"


@dataclass(frozen=True)
class RecordedServer:
    """One detached server as written to the state file."""

    address: str
    port: int
    pid: int
    work_dir: str
    log: str
    started_at: float

    @classmethod
    def of(cls, server: GremlinServerProcess) -> RecordedServer:
        pid = server.pid
        if pid is None:
            raise ValueError(f"{server.address} has not been started")
        return cls(
            address=server.address,
            port=server.port,
            pid=pid,
            work_dir=str(server.work_dir),
            log=str(server.log_path),
            started_at=time.time(),
        )

    def handle(self) -> GremlinServerProcess:
        return GremlinServerProcess.attach(self.port, self.pid, Path(self.work_dir))


def read_state(path: Path) -> list[RecordedServer]:
    """Recorded servers, or an empty list when there is no (readable) state file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read dev-server state file {path}: {exc}") from exc
    return [RecordedServer(**entry) for entry in data.get("servers", [])]


def write_state(path: Path, servers: list[RecordedServer]) -> None:
    """Write atomically (temp file + rename) so a crash never leaves half a state file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"version": STATE_VERSION, "servers": [asdict(s) for s in servers]}
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    partial.replace(path)


def clear_state(path: Path) -> None:
    path.unlink(missing_ok=True)
