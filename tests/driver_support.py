"""Helpers for the sidecar's tests with official non-Python drivers (Java, Go) run as programs.

The programs live in tests/drivers/<language>/ and are built into the cache by `make java-driver`
and `make go-driver` (both part of `make setup`). They print JSON on stdout and take commands
("mark", "stop", or any line to let go of a held connection) on stdin; :class:`DriverProcess`
runs one with bounded waits and kills it if a test leaves early.
"""

from __future__ import annotations

import contextlib
import json
import queue
import re
import subprocess
import threading
import urllib.request
from collections.abc import Iterator, Sequence
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
from tests.helpers import wait_until

CACHE = Path(__file__).resolve().parent.parent / ".cache"


class DriverProcess:
    """A driver program as a subprocess: stdout read line by line by a thread, stderr to a file."""

    def __init__(self, command: Sequence[str], log: Path) -> None:
        self.command = list(command)
        self.log = log
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr = log.open("w")
        self._process = subprocess.Popen(
            self.command,
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
    down, let 150 more requests through, then stop; returns the program's summary."""
    assert driver.line(timeout=90) == "started"
    victim.kill()
    wait_until(
        lambda: sidecar.balancer.state_of(victim.address) is HostState.DOWN, 15, "the kill noticed"
    )
    driver.send("mark")
    served = sum(requests_per_host(sidecar).values())
    wait_until(
        lambda: sum(requests_per_host(sidecar).values()) >= served + 150,
        60,
        "150 more requests after the kill",
    )
    driver.send("stop")
    summary = driver.json(timeout=60)
    assert driver.wait(30) == 0, driver.stderr()
    return summary


def assert_even_spread(per_host: dict[str, int], total: int) -> None:
    """Every host got its share of `total` requests, within 5% of an even split."""
    assert sum(per_host.values()) == total
    even = total / len(per_host)
    assert all(abs(n - even) <= 0.05 * even for n in per_host.values()), per_host
