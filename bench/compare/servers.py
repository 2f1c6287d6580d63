"""The Gremlin Servers every contender shares, and CPU/RSS readings from /proc.

Each server loads the same data set in its init script, before it answers its first request, so
a server that is killed and started again (or added mid-run) serves the same reads at once.
Every person vertex carries `srv`, the address of the server holding it, and the vertex with id
-1 is named after its server: every query of the load returns that tag, so the per-server share
of requests is measured from the answers, not assumed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from gremlinlb.devservers import Fleet, GremlinServerProcess

#: People in each server's graph; each knows 3 others.
PEOPLE = 1000
#: Vertex id of the vertex naming its server (writes return its name).
SERVER_VERTEX_ID = -1

_SEED = """
// gremlinlb bench (bench/compare/servers.py): the same data set on every server, loaded before
// the server answers its first request. `srv` tags every answer with the server that ran it.
def srvAddress = System.getProperty('gremlinlb.server.address')
// Indices for the lookups. An edge index too: without one, TinkerTransactionGraph's rollback
// (after any failed or interrupted request) fails with a NullPointerException on the missing
// edge index and leaves the graph locked.
['uid', 'k'].each { key -> graph.createIndex(key, Vertex.class) }
graph.createIndex('since', Edge.class)
graph.addVertex(T.id, %(server_id)dL, T.label, 'server', 'name', srvAddress)
def people = (0..<%(people)d).collect { i ->
    graph.addVertex(T.label, 'person', 'uid', i, 'name', 'p' + i, 'srv', srvAddress)
}
people.eachWithIndex { v, i ->
    [7, 101, 331].each { step -> v.addEdge('knows', people[(i + step) %% %(people)d]) }
}
graph.tx().commit()
// The script's last value is the map of global bindings (`g`), as in the original script.
globals
"""


class SeededServer(GremlinServerProcess):
    """A dev Gremlin Server whose init script also loads the bench data set."""

    def _write_config(self) -> None:
        super()._write_config()
        init = self.work_dir / "init.groovy"
        seed = _SEED % {"people": PEOPLE, "server_id": SERVER_VERTEX_ID}
        init.write_text(init.read_text(encoding="utf-8") + seed, encoding="utf-8")


class SeededFleet(Fleet):
    """`Fleet` of SeededServer: same ports, start-up and fault controls as the tests use."""

    def _new_server(self, port: int) -> GremlinServerProcess:
        return SeededServer(port, self.run_dir / str(port), runtime=self.runtime)


# -- /proc readings ------------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of `pid` so far (threads included), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3 of the file): utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    first = Path("/proc/stat").read_text(encoding="utf-8").splitlines()[0].split()
    values = [int(v) for v in first[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


def load_average() -> tuple[float, float, float]:
    one, five, fifteen = Path("/proc/loadavg").read_text(encoding="utf-8").split()[:3]
    return float(one), float(five), float(fifteen)


@dataclass
class CpuWindow:
    """CPU used by some processes and by the whole machine between start() and stop()."""

    pids: list[int]
    started: float = 0.0
    seconds: float = 0.0
    cpu: float = 0.0
    machine_busy: float = 0.0
    peak_rss: int = 0
    _cpu0: float = 0.0
    _busy0: float = 0.0

    def _cpu_now(self) -> float:
        return sum(cpu_seconds(pid) or 0.0 for pid in self.pids)

    def start(self) -> None:
        self.started = time.monotonic()
        self._cpu0 = self._cpu_now()
        self._busy0 = machine_busy_seconds()[0]
        self.sample_rss()

    def sample_rss(self) -> None:
        rss = sum(rss_bytes(pid) or 0 for pid in self.pids)
        self.peak_rss = max(self.peak_rss, rss)

    def stop(self) -> None:
        self.seconds = time.monotonic() - self.started
        self.cpu = self._cpu_now() - self._cpu0
        self.machine_busy = machine_busy_seconds()[0] - self._busy0
        self.sample_rss()

    @property
    def cpu_percent(self) -> float:
        """Percent of one core."""
        return 100.0 * self.cpu / self.seconds if self.seconds > 0 else 0.0
