"""Helpers for the sidecar's tests with official non-Python drivers (Go, Java, JavaScript) run
as programs.

The programs live in tests/drivers/<language>/; the Go and Java ones are built into the cache by
`make go-driver` and `make java-driver`, the JavaScript one runs on the driver `make js-driver`
installs (all part of `make setup`). They share one command line (sidecar, serializer, mode,
count), print JSON on stdout and take commands ("mark", "stop", or any line to let go of a held
connection) on stdin; :class:`DriverProcess` runs one with bounded waits and kills it if a test
leaves early. :data:`DRIVERS` says how to start each.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.process.anonymous_traversal import traversal
from gremlinlb.sidecar.config import SidecarConfig
from gremlinlb.sidecar.testing import SidecarThread

from gremlinlb.core import (
    BalancerSettings,
    HealthCheckSettings,
    HedgeSettings,
    HostState,
    OutlierSettings,
    parse_endpoint,
)
from gremlinlb.devservers import GremlinServerProcess
from gremlinlb.devservers.errors import ToolMissingError
from gremlinlb.devservers.fetch import find_java
from tests.helpers import wait_until

CACHE = Path(__file__).resolve().parent.parent / ".cache"
PROGRAMS = Path(__file__).resolve().parent / "drivers"


class DriverProcess:
    """A driver program as a subprocess: stdout read line by line by a thread, stderr to a file."""

    def __init__(
        self, command: Sequence[str], log: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.command = list(command)
        self.log = log
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr = log.open("w")
        self._process = subprocess.Popen(
            self.command,
            env={**os.environ, **env} if env is not None else None,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def line(self, timeout: float) -> str:
        """The next stdout line; fails the test with the program's stderr on EOF or timeout."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no output from {self.command[0]} within {timeout}s\n{self.stderr()}")
        if line is None:
            code = self._process.wait(10)
            pytest.fail(f"{self.command[0]} ended (exit {code}) early\n{self.stderr()}")
        return line

    def json(self, timeout: float) -> dict[str, Any]:
        line = self.line(timeout)
        try:
            result: dict[str, Any] = json.loads(line)
        except ValueError:
            pytest.fail(f"not JSON: {line[:500]!r}\n{self.stderr()}")
        return result

    def send(self, line: str) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(line + "\n")
        self._process.stdin.flush()

    def wait(self, timeout: float) -> int:
        """Exit code, once stdout is read to its end (stdin is closed first: EOF means stop)."""
        if self._process.stdin is not None and not self._process.stdin.closed:
            self._process.stdin.close()
        code = self._process.wait(timeout)
        self._reader.join(timeout)
        return code

    def stderr(self) -> str:
        self._stderr.flush()
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])

    def __enter__(self) -> DriverProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait(10)
        if self._process.stdin is not None and not self._process.stdin.closed:
            self._process.stdin.close()
        self._stderr.close()


def count_on_each(servers: Sequence[GremlinServerProcess], label: str) -> dict[str, int]:
    """Vertices labelled `label` on each server, asked directly (not through the sidecar)."""
    counts: dict[str, int] = {}
    for server in servers:
        connection = DriverRemoteConnection(server.url, "g")
        try:
            counts[server.address] = (
                traversal().with_(connection).V().has_label(label).count().next()
            )
        finally:
            connection.close()
    return counts


def client_connections(sidecar: SidecarThread) -> float:
    """The sidecar's open client WebSockets, from its Prometheus metrics."""
    with urllib.request.urlopen(f"{sidecar.admin_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = re.search(r"^gremlinlb_sidecar_client_connections (\S+)$", text, re.MULTILINE)
    assert found is not None, "no gremlinlb_sidecar_client_connections in /metrics"
    return float(found.group(1))


def requests_per_host(sidecar: SidecarThread) -> dict[str, int]:
    return {h.endpoint.address: h.requests for h in sidecar.balancer.hosts()}


# The driver specs check that requests are spread one by one. A burst on a busy 2-core machine
# can make one cold server answer 10x slower than its peers for a moment; ejecting it as slow is
# right (and has specs of its own), but would skew the exact counts these specs are about.
SPREAD_SPECS_OUTLIERS = OutlierSettings(slow_factor=1000.0)


@contextlib.contextmanager
def running_sidecar(
    servers: Sequence[GremlinServerProcess],
    *,
    fall: int = 2,
    endpoints: Sequence[str] | None = None,
    hedge: bool = True,
) -> Iterator[SidecarThread]:
    """A sidecar over `servers`, health probes every 0.5 s (`fall`: failures to take one out);
    `endpoints` lists them in the text form instead (with roles or zones); `hedge` False for
    specs that count who answered (a hedged read is answered by whichever host is first)."""
    texts = endpoints if endpoints is not None else [s.address for s in servers]
    config = SidecarConfig(
        endpoints=tuple(parse_endpoint(e) for e in texts),
        settings=BalancerSettings(
            health=HealthCheckSettings(interval=0.5, timeout=2.0, rise=1, fall=fall),
            request_timeout=10.0,
            connect_timeout=1.0,
            outlier=SPREAD_SPECS_OUTLIERS,
            hedge=HedgeSettings(enabled=hedge),
        ),
    )
    with SidecarThread(config) as running:
        yield running


def run_killed_server_load(
    driver: DriverProcess, sidecar: SidecarThread, victim: GremlinServerProcess
) -> dict[str, Any]:
    """Drive a program in `load` mode: kill `victim` mid-run, mark once the sidecar has seen it
    down; the program ends by itself 150 answers after the mark (counted by the program, so a
    slow or busy machine changes only how long it takes); returns the program's summary."""
    assert driver.line(timeout=90) == "started"
    victim.kill()
    wait_until(
        lambda: sidecar.balancer.state_of(victim.address) is HostState.DOWN, 15, "the kill noticed"
    )
    driver.send("mark")
    summary = driver.json(timeout=120)
    assert driver.wait(30) == 0, driver.stderr()
    return summary


def assert_even_spread(per_host: dict[str, int], total: int) -> None:
    """Every host got its share of `total` requests, within 5% of an even split."""
    assert sum(per_host.values()) == total
    even = total / len(per_host)
    assert all(abs(n - even) <= 0.05 * even for n in per_host.values()), per_host


# -- the driver programs ---------------------------------------------------------------------

GO_PROGRAM = CACHE / "go-driver" / "bin" / "sidecar-go-driver"
JAVA_DRIVER = CACHE / "java-driver"
#: A small, quick-starting client JVM: 2 cores are shared with 3 Gremlin Servers.
JVM_OPTIONS = ["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]
NODE_MODULES = CACHE / "js" / "node_modules"


@dataclass(frozen=True)
class Driver:
    """An official driver's program: `name` also labels what its transactions write."""

    name: str
    #: The serializers it speaks, the first its default.
    serializers: tuple[str, ...]

    def __str__(self) -> str:
        return self.name

    def start(
        self, sidecar: SidecarThread, serializer: str, mode: str, count: int, log: Path
    ) -> DriverProcess:
        """Runs the program in `mode` against `sidecar`; fails the test if it is not built."""
        if self.name == "go":
            if not GO_PROGRAM.is_file():
                pytest.fail("the Go driver program is missing: run `make go-driver`")
            assert serializer == "graphbinary", "gremlin-go speaks GraphBinary only"
            return DriverProcess([str(GO_PROGRAM), sidecar.url, mode, str(count)], log)
        if self.name == "java":
            try:
                java = find_java()
            except ToolMissingError as missing:
                pytest.fail(str(missing))
            if shutil.which("javac") is None or not (JAVA_DRIVER / "classes" / ".built").is_file():
                pytest.fail("the Java driver is missing: run `make java-driver`")
            host, port = sidecar.url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
            classpath = f"{JAVA_DRIVER / 'classes'}:{JAVA_DRIVER / 'lib' / '*'}"
            command = [java, *JVM_OPTIONS, "-cp", classpath, "SidecarClient"]
            return DriverProcess([*command, host, port, serializer, mode, str(count)], log)
        if shutil.which("node") is None:
            pytest.fail("node is not installed")
        if not (NODE_MODULES / "gremlin").is_dir():
            pytest.fail("the JavaScript driver is missing: run `make js-driver`")
        script = PROGRAMS / "js" / "sidecar_client.js"
        command = ["node", str(script), sidecar.url, serializer, mode, str(count)]
        return DriverProcess(command, log, env={"NODE_PATH": str(NODE_MODULES)})


#: gremlin-go v3.8.1 (GraphBinary only), gremlin-driver 3.8.1 (Java), gremlin 3.8.2 (npm).
DRIVERS = (
    Driver("go", ("graphbinary",)),
    Driver("java", ("graphbinary", "graphson")),
    Driver("js", ("graphbinary", "graphson")),
)
