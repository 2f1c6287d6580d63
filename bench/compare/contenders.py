"""The contenders: what stands between the clients and the Gremlin Servers.

| name | balances | what it is |
|---|---|---|
| direct | nothing | every client connects to server 1 (the ceiling: no hop, no spreading) |
| haproxy-rr | connections | HAProxy (Debian package), mode http (WebSocket), balance roundrobin |
| haproxy-lc | connections | the same with balance leastconn |
| tcp-rr | connections | HAProxy mode tcp, balance roundrobin: what kube-proxy does for a Service |
| in-process | requests | gremlinlb's RoundRobinClientRemoteConnection inside each client process |
| sidecar | requests | the `gremlinlb sidecar` process |
| sidecar-1 | nothing | the sidecar with server 1 only: against direct, the hop alone |
| in-process-1 | nothing | the in-process client with server 1 only: against direct, its own cost |

Health checks get the same numbers wherever a contender has them (HEALTH: every 2 s, 1 s
timeout, down after 2 failures, up after 1 pass): HAProxy probes with the HTTP endpoint of the
servers (`GET /?gremlin=g.V().limit(1)`), gremlinlb with a `g.V().limit(1)` traversal. The
kube-proxy-like contender has what a Service gives: a TCP readiness probe with the kubelet's
defaults (every 10 s, 3 failures, 1 pass), applied to new connections only.

HAProxy's runtime API (a unix socket) adds a server mid-run the way an EndpointSlice update
reaches kube-proxy: a pre-declared, disabled slot is enabled. The sidecar gets `PUT /v1/hosts`;
the in-process client `add_host()` inside each client process (see load.py).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Health:
    interval: float = 2.0
    timeout: float = 1.0
    rise: int = 1
    fall: int = 2


HEALTH = Health()
#: kubelet readiness-probe defaults (periodSeconds 10, failureThreshold 3, successThreshold 1).
READINESS = Health(interval=10.0, timeout=1.0, rise=1, fall=3)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(check: Any, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return True
        time.sleep(step)
    return False


class Contender:
    name = ""
    level = ""  # "none", "connection" or "request"
    description = ""
    #: steady-state mixes this contender runs: "js-read" is the read mix from the JavaScript
    #: driver (one multiplexed connection); sidecar-1 only measures the hop, on reads
    mixes: tuple[str, ...] = ("read", "write", "js-read")

    def __init__(self) -> None:
        self.servers: list[str] = []
        self.spare = ""

    def start(self, servers: list[str], spare: str, run_dir: Path) -> None:
        self.servers, self.spare = list(servers), spare

    def stop(self) -> None:
        pass

    def target(self) -> dict[str, Any]:
        raise NotImplementedError

    def pids(self) -> list[int]:
        """Processes of the balancer itself (none for direct and in-process)."""
        return []

    def supports(self, scenario: str) -> bool:
        return True

    def add_server(self) -> None:
        """Put the spare server into rotation (parent side)."""

    def add_host_spec(self, offset: float) -> dict[str, Any] | None:
        """For balancers living in the client processes: what they do at `offset`."""
        return None

    def remove_spare(self) -> None:
        pass

    def reroute(self, index: int, address: str) -> None:
        """Send server `index`'s share to `address` from now on (the slow scenario puts a fault
        proxy there, and the server back afterwards); new client connections follow."""
        self.servers[index] = address

    def healthy(self) -> bool:
        return True


class Direct(Contender):
    name = "direct"
    level = "none"
    description = "every client connects to server 1 (no balancing: the ceiling)"

    def target(self) -> dict[str, Any]:
        return {"url": f"ws://{self.servers[0]}/gremlin"}

    def supports(self, scenario: str) -> bool:
        return scenario == "steady"


class HAProxy(Contender):
    level = "connection"

    def __init__(self, name: str, mode: str, balance: str, health: Health) -> None:
        super().__init__()
        self.name = name
        self.mode = mode
        self.balance = balance
        self.health = health
        self.description = (
            f"HAProxy {_haproxy_version()}, mode {mode}, balance {balance}, "
            + (
                "HTTP health check GET /?gremlin=g.V().limit(1)"
                if mode == "http"
                else "TCP connect check"
            )
            + f" every {health.interval:g} s (fall {health.fall}, rise {health.rise})"
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.socket_path = Path()

    def config(self) -> str:
        h = self.health
        lines = [
            "global",
            "    maxconn 4096",
            f"    stats socket {self.socket_path} mode 600 level admin",
            "defaults",
            f"    mode {self.mode}",
            "    timeout connect 2s",
            "    timeout client 60s",
            "    timeout server 60s",
            "    timeout tunnel 1h",
            f"    timeout check {h.timeout:g}s",
            "frontend fe",
            f"    bind 127.0.0.1:{self.port}",
            "    default_backend be",
            "backend be",
            f"    balance {self.balance}",
        ]
        if self.mode == "http":
            lines += [
                "    option httpchk",
                '    http-check send meth GET uri "/?gremlin=g.V().limit(1)"',
                "    http-check expect status 200",
            ]
        lines.append(f"    default-server inter {h.interval:g}s fall {h.fall} rise {h.rise}")
        for number, address in enumerate(self.servers, 1):
            lines.append(f"    server s{number} {address} check")
        lines.append(f"    server spare {self.spare} check disabled")
        return "\n".join(lines) + "\n"

    def start(self, servers: list[str], spare: str, run_dir: Path) -> None:
        super().start(servers, spare, run_dir)
        self.port = free_port()
        self.socket_path = run_dir / f"{self.name}.sock"
        path = run_dir / f"{self.name}.cfg"
        path.write_text(self.config(), encoding="utf-8")
        check = subprocess.run([haproxy_binary(), "-c", "-q", "-f", str(path)], check=False)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy rejected {path}")
        with (run_dir / f"{self.name}.log").open("ab") as log:
            self.process = subprocess.Popen(
                [haproxy_binary(), "-db", "-f", str(path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        if not wait_until(self.healthy, 30):
            raise RuntimeError(f"{self.name}: servers not UP within 30 s: {self.states()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGUSR1)  # soft stop
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def pids(self) -> list[int]:
        return [self.process.pid] if self.process is not None else []

    def target(self) -> dict[str, Any]:
        return {"url": f"ws://127.0.0.1:{self.port}/gremlin"}

    def command(self, text: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.socket_path))
            sock.sendall(text.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def states(self) -> dict[str, str]:
        """Server name -> HAProxy status (UP, DOWN, MAINT, `UP 1/2`...)."""
        lines = self.command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        name, server, status = (
            header.index("pxname"),
            header.index("svname"),
            header.index("status"),
        )
        result: dict[str, str] = {}
        for line in lines[1:]:
            cells = line.split(",")
            if len(cells) > status and cells[name] == "be" and cells[server] not in ("BACKEND",):
                result[cells[server]] = cells[status]
        return result

    def healthy(self) -> bool:
        states = self.states()
        return all(states.get(f"s{n}") == "UP" for n in range(1, len(self.servers) + 1))

    def add_server(self) -> None:
        self.command("enable server be/spare")

    def reroute(self, index: int, address: str) -> None:
        super().reroute(index, address)
        host, port = address.rsplit(":", 1)
        answer = self.command(f"set server be/s{index + 1} addr {host} port {port}")
        if "changed" not in answer and "no need to change" not in answer:
            raise RuntimeError(f"{self.name}: could not point s{index + 1} at {address}: {answer}")

    def remove_spare(self) -> None:
        self.command("disable server be/spare")


class InProcess(Contender):
    name = "in-process"
    level = "request"
    # a Python client: the JavaScript driver cannot use it
    mixes: tuple[str, ...] = ("read", "write")
    description = (
        "RoundRobinClientRemoteConnection (one per client process, pool of 8 per server), "
        "health probe every 2 s (timeout 1 s, fall 2, rise 1)"
    )

    def target(self) -> dict[str, Any]:
        return {
            "addresses": list(self.servers),
            "health": {
                "interval": HEALTH.interval,
                "timeout": HEALTH.timeout,
                "rise": HEALTH.rise,
                "fall": HEALTH.fall,
            },
        }

    def add_host_spec(self, offset: float) -> dict[str, Any] | None:
        return {"offset": offset, "address": self.spare}


class InProcessOne(InProcess):
    """The in-process client with server 1 only: against direct (the same server, the same
    pool of 8), the client's own cost per request, without the cost of spreading over three
    servers that share the machine's two cores with the clients."""

    name = "in-process-1"
    level = "none"
    mixes = ("read",)
    description = (
        "the same in-process client with server 1 as its only endpoint: compared with direct, "
        "the client's own cost (steady read cells only)"
    )

    def target(self) -> dict[str, Any]:
        return {**super().target(), "addresses": self.servers[:1]}

    def supports(self, scenario: str) -> bool:
        return scenario == "steady"


class Sidecar(Contender):
    name = "sidecar"
    level = "request"
    description = (
        "`gremlinlb sidecar` subprocess (defaults: 2 multiplexed connections per server), "
        "health probe every 2 s (timeout 1 s, fall 2, rise 1)"
    )

    def __init__(self) -> None:
        super().__init__()
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.admin = 0
        self.token = secrets.token_urlsafe(24)
        self.token_file = Path()

    def endpoints(self) -> list[str]:
        return list(self.servers)

    def command_line(self) -> list[str]:
        gremlinlb = str(Path(sys.executable).with_name("gremlinlb"))
        return [
            gremlinlb,
            "--log-level",
            "WARNING",
            "sidecar",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--admin",
            f"127.0.0.1:{self.admin}",
            "--endpoints",
            ",".join(self.endpoints()),
            "--token-file",
            str(self.token_file),
            "--health-interval",
            f"{HEALTH.interval:g}",
            "--health-timeout",
            f"{HEALTH.timeout:g}",
            "--rise",
            str(HEALTH.rise),
            "--fall",
            str(HEALTH.fall),
        ]

    def start(self, servers: list[str], spare: str, run_dir: Path) -> None:
        super().start(servers, spare, run_dir)
        self.port, self.admin = free_port(), free_port()
        self.token_file = run_dir / f"{self.name}.token"  # the host-list pushes carry it
        self.token_file.write_text(self.token)
        self.token_file.chmod(0o600)
        with (run_dir / f"{self.name}.log").open("ab") as log:
            self.process = subprocess.Popen(
                self.command_line(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        if not wait_until(self.healthy, 30):
            code = self.process.poll()
            raise RuntimeError(
                f"the sidecar did not report its servers healthy within 30 s (exit code {code}); "
                f"see {run_dir / (self.name + '.log')}"
            )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def pids(self) -> list[int]:
        return [self.process.pid] if self.process is not None else []

    def target(self) -> dict[str, Any]:
        return {"url": f"ws://127.0.0.1:{self.port}/gremlin"}

    def _admin(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.admin}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=5) as answer:
            return json.loads(answer.read() or b"null")

    def hosts(self) -> dict[str, Any]:
        answer: dict[str, Any] = self._admin("GET", "/v1/hosts")
        return answer

    def healthy(self) -> bool:
        hosts = self.hosts()["hosts"]
        states = {h["address"]: h["state"] for h in hosts}
        return set(states) == set(self.endpoints()) and all(s == "healthy" for s in states.values())

    def _put(self, hosts: list[str]) -> None:
        generation = int(self.hosts()["generation"]) + 1
        self._admin("PUT", "/v1/hosts", {"generation": generation, "hosts": hosts})

    def add_server(self) -> None:
        self._put([*self.servers, self.spare])

    def reroute(self, index: int, address: str) -> None:
        super().reroute(index, address)
        self._put(self.endpoints())

    def remove_spare(self) -> None:
        self._put(list(self.servers))


class SidecarOne(Sidecar):
    """The sidecar with server 1 only: against direct, the cost of the extra hop alone."""

    name = "sidecar-1"
    level = "none"
    mixes = ("read",)
    description = (
        "the same sidecar command with server 1 as its only endpoint: compared with direct, "
        "the cost of the extra hop alone (steady read cells only)"
    )

    def endpoints(self) -> list[str]:
        return self.servers[:1]

    def supports(self, scenario: str) -> bool:
        return scenario == "steady"


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or shutil.which("/usr/sbin/haproxy")
    if found is None:
        raise RuntimeError("haproxy is not installed: run `make haproxy` (Debian package)")
    return found


def _haproxy_version() -> str:
    try:
        out = subprocess.run(
            [haproxy_binary(), "-v"], capture_output=True, text=True, check=False
        ).stdout
    except (OSError, RuntimeError):
        return "(not installed)"
    words = out.split()
    return words[2] if len(words) > 2 else "?"


def all_contenders() -> list[Contender]:
    return [
        Direct(),
        HAProxy("haproxy-rr", "http", "roundrobin", HEALTH),
        HAProxy("haproxy-lc", "http", "leastconn", HEALTH),
        HAProxy("tcp-rr", "tcp", "roundrobin", READINESS),
        InProcess(),
        InProcessOne(),
        Sidecar(),
        SidecarOne(),
    ]


def sidecar_runnable() -> str | None:
    """None when `gremlinlb sidecar --help` works, else why not."""
    gremlinlb = str(Path(sys.executable).with_name("gremlinlb"))
    try:
        done = subprocess.run(
            [gremlinlb, "sidecar", "--help"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return str(error)
    if done.returncode != 0:
        return (done.stderr or done.stdout).strip().splitlines()[-1:][0] if done.stderr else "?"
    return None
