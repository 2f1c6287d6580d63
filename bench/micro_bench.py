"""The data plane's own cost: direct vs HAProxy (TCP) vs the sidecar, with minimal requests.

`make bench-micro` runs it. A Go load generator (bench/micro/loadgen, built into .cache/bench)
replays one GraphBinary `g.inject(1)` request (so the server does almost nothing and the proxy's
own cost shows) in a closed loop at three shapes (connections x requests in flight per
connection), against each contender in turn, in one run, on loopback:

| contender | what the load generator connects to |
|---|---|
| direct | server 1 (the ceiling) |
| haproxy | HAProxy, mode tcp, in front of server 1 |
| haproxy-3 | HAProxy, mode tcp, `balance roundrobin` (per connection) over servers 1, 2, 3 |
| sidecar-1 | `gremlinlb sidecar --endpoints <server 1>` |
| sidecar-3 | `gremlinlb sidecar --endpoints <servers 1, 2, 3>` |
| NAME-1, NAME-3 | the same from another `gremlinlb` (`--baseline NAME=PATH`, `--baseline-rev`) |
| pure-1, pure-3 | this checkout's sidecar with GREMLINLB_PURE=1 (`--pure`: not the mypyc build) |

For each cell: req/s and p50/p99 in the measured window (from the load generator), and CPU
microseconds per request of the proxy process (utime + stime from /proc/<pid>/stat over the
whole cell, divided by every request answered in it) and wake-ups per request (see wakeups()).
The load generator's CPU and the machine's load are reported, so a bottleneck there would show.
Every cell is bounded by --warmup + --duration seconds and --max-requests.

With --profile, the sidecar over 1 and over 3 servers is sampled with py-spy at the last shape
for --duration seconds (a cell of its own each, not counted), and the functions with the most
samples are written into the results.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import json
import math
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gremlin_python.driver.request import RequestMessage
from gremlin_python.driver.serializer import GraphBinarySerializersV1
from gremlin_python.process.traversal import Bytecode

from gremlinlb.devservers import Fleet, port_is_free

ROOT = Path(__file__).resolve().parent.parent
LOADGEN = ROOT / ".cache" / "bench" / "micro-loadgen"
FLOORS = ROOT / "bench" / "micro" / "floors.py"
HAPROXY = "/usr/sbin/haproxy"
SHAPES = ((8, 1), (1, 16), (8, 8))
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TEMPLATE_ID = b"\x00" * 16


def request_template() -> tuple[bytes, int]:
    """A GraphBinary `g.inject(1)` request frame and the offset of its 16-byte request id."""
    bytecode = Bytecode()
    bytecode.add_step("inject", 1)
    message = RequestMessage("traversal", "bytecode", {"gremlin": bytecode, "aliases": {"g": "g"}})
    frame = GraphBinarySerializersV1().serialize_message(
        "00000000-0000-0000-0000-000000000000", message
    )
    offset = 1 + frame[0] + 1  # [mime length][mime][0x81][id]
    if frame[offset : offset + 16] != TEMPLATE_ID:
        raise RuntimeError("unexpected GraphBinary request layout")
    return bytes(frame), offset


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_base_port(count: int, start: int = 39181) -> int:
    for base in range(start, start + 2000, 10):
        if all(port_is_free(port) for port in range(base, base + count)):
            return base
    raise RuntimeError("no free loopback ports for the Gremlin Servers")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(utime, stime) of `pid` (all its threads) so far: user space and kernel apart, because
    on loopback the kernel's share (system calls, the receiver's side of TCP) is most of it."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def wakeups(pid: int) -> int:
    """Voluntary context switches of `pid`'s main thread: its event loop slept in epoll and a
    socket woke it (counted without slowing it down, as strace does)."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    return 0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def uptime_load() -> str:
    return " ".join(Path("/proc/loadavg").read_text(encoding="utf-8").split()[:3])


def _listens(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), 1):
        return True


def wait_until(check: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return True
        time.sleep(0.1)
    return False


class Contender:
    name = ""
    url = ""
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        pass

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


class Direct(Contender):
    def __init__(self, server: str) -> None:
        self.name = "direct"
        self.url = f"ws://{server}/gremlin"


class HAProxyTcp(Contender):
    """HAProxy in mode tcp: in front of one server (`haproxy`), or round-robin per connection
    over several (`haproxy-3`: the like-for-like contender of sidecar-3)."""

    def __init__(self, servers: list[str], run_dir: Path) -> None:
        self.name = "haproxy" if len(servers) == 1 else f"haproxy-{len(servers)}"
        self.servers = servers
        self.run_dir = run_dir

    def start(self) -> None:
        port = free_port()
        config = self.run_dir / f"{self.name}.cfg"
        config.write_text(
            "\n".join(
                [
                    "global",
                    "    maxconn 4096",
                    "defaults",
                    "    mode tcp",
                    "    timeout connect 2s",
                    "    timeout client 60s",
                    "    timeout server 60s",
                    "frontend fe",
                    f"    bind 127.0.0.1:{port}",
                    "    default_backend be",
                    "backend be",
                    "    balance roundrobin",
                    *(f"    server s{i} {server}" for i, server in enumerate(self.servers, 1)),
                ]
            )
            + "\n",
            encoding="utf-8",
        )
        with (self.run_dir / f"{self.name}.log").open("ab") as log:
            self.process = subprocess.Popen(
                [HAPROXY, "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
            )
        self.url = f"ws://127.0.0.1:{port}/gremlin"
        if not wait_until(lambda: _listens(port), 10):
            raise RuntimeError(f"{self.name} did not listen within 10 s")


class Floor(Contender):
    """A bare relay in Python (bench/micro/floors.py) in front of server 1: the least a proxy
    built on that library can cost on this machine."""

    def __init__(self, kind: str, server: str, run_dir: Path) -> None:
        self.name = f"floor-{kind}"
        self.kind = kind
        self.server = server
        self.run_dir = run_dir

    def start(self) -> None:
        port = free_port()
        with (self.run_dir / f"{self.name}.log").open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(FLOORS), self.kind, str(port), self.server],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.url = f"ws://127.0.0.1:{port}/gremlin"
        if not wait_until(lambda: _listens(port), 20):
            raise RuntimeError(f"{self.name} did not listen within 20 s")


class Sidecar(Contender):
    def __init__(
        self, name: str, executable: str, servers: list[str], run_dir: Path, extra: list[str]
    ) -> None:
        self.name = name
        self.extra = extra
        self.executable = executable
        self.servers = servers
        self.run_dir = run_dir
        self.admin = 0
        self.rss_at_rest = 0.0

    def start(self) -> None:
        port, self.admin = free_port(), free_port()
        command = [
            self.executable,
            "--log-level",
            "WARNING",
            "sidecar",
            "--listen",
            f"127.0.0.1:{port}",
            "--admin",
            f"127.0.0.1:{self.admin}",
            "--endpoints",
            ",".join(self.servers),
            *self.extra,
        ]
        with (self.run_dir / f"{self.name}.log").open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self.url = f"ws://127.0.0.1:{port}/gremlin"
        if not wait_until(self.healthy, 30):
            raise RuntimeError(f"{self.name}: backends not healthy within 30 s")
        time.sleep(0.5)
        assert self.pid is not None
        self.rss_at_rest = rss_mib(self.pid)

    def healthy(self) -> bool:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.admin}/readyz/backends", timeout=2
        ) as r:
            body = json.load(r)
        return len(body["healthy"]) == len(self.servers)


@dataclass
class Cell:
    contender: str
    shape: tuple[int, int]
    req_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    total: int
    proxy_cpu_us: float | None
    proxy_sys_us: float | None
    loadgen_cpu_us: float
    proxy_wakeups: float | None = None  # per request (see wakeups)
    rep: int = 0


def run_cell(contender: Contender, shape: tuple[int, int], args: argparse.Namespace) -> Cell:
    frame, offset = request_template()
    conns, inflight = shape
    command = [
        str(LOADGEN),
        "-url",
        contender.url,
        "-conns",
        str(conns),
        "-inflight",
        str(inflight),
        "-warmup",
        f"{args.warmup}s",
        "-duration",
        f"{args.duration}s",
        "-max",
        str(args.max_requests),
        "-template",
        frame.hex(),
        "-idoffset",
        str(offset),
    ]
    pid = contender.pid
    user0, sys0 = cpu_seconds(pid) if pid is not None else (0.0, 0.0)
    woken0 = wakeups(pid) if pid is not None else 0
    loadgen = subprocess.Popen(command, stdout=subprocess.PIPE)
    assert loadgen.stdout is not None
    out = loadgen.stdout.read()  # it exits by itself after warm-up + duration (or -max)
    # wait4: the CPU of this child alone (os.times() would add every reaped child's).
    _, status, usage = os.wait4(loadgen.pid, 0)
    loadgen.returncode = os.waitstatus_to_exitcode(status)
    if loadgen.returncode != 0:
        raise RuntimeError(f"the load generator failed (exit {loadgen.returncode})")
    user1, sys1 = cpu_seconds(pid) if pid is not None else (0.0, 0.0)
    woken1 = wakeups(pid) if pid is not None else 0
    result = json.loads(out)
    total = max(1, int(result["total"]))
    loadgen_cpu = usage.ru_utime + usage.ru_stime
    return Cell(
        contender.name,
        shape,
        float(result["req_per_s"]),
        float(result["p50_ms"]),
        float(result["p99_ms"]),
        int(result["errors"]),
        total,
        (user1 - user0 + sys1 - sys0) / total * 1e6 if pid is not None else None,
        (sys1 - sys0) / total * 1e6 if pid is not None else None,
        loadgen_cpu / total * 1e6,
        (woken1 - woken0) / total if pid is not None else None,
    )


def profile(contender: Sidecar, args: argparse.Namespace, out: Path) -> str:
    """Sample the sidecar with py-spy while the load generator drives it; the top functions.
    py-spy pauses it per sample (its default): slower, but no sample is dropped."""
    assert contender.pid is not None
    spy = Path(sys.executable).with_name("py-spy")
    record = subprocess.Popen(
        [
            str(spy),
            "record",
            "--pid",
            str(contender.pid),
            "--duration",
            str(int(args.duration)),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    run_cell(contender, SHAPES[-1], args)
    record.wait(60)
    return summarize_profile(out)


def count_syscalls(contender: Sidecar, args: argparse.Namespace, out: Path) -> str:
    """System calls per request of the sidecar in one 8x8 cell, from `strace -c -f`. strace
    slows every call, so the proxy batches differently: compare sidecars with each other only."""
    assert contender.pid is not None
    trace = subprocess.Popen(
        ["strace", "-c", "-f", "-o", str(out), "-p", str(contender.pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    cell = run_cell(contender, SHAPES[-1], args)
    trace.send_signal(signal.SIGINT)
    trace.wait(30)
    answered = max(1, cell.total)
    calls: dict[str, int] = {}
    for line in out.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
            calls[parts[-1]] = int(parts[3])
    top = sorted(calls.items(), key=lambda item: -item[1])[:6]
    return f"{contender.name}: " + ", ".join(f"{name} {n / answered:.2f}" for name, n in top)


def summarize_profile(path: Path, top: int = 25) -> str:
    """Self and total samples per function from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        samples += count
        frames = [_short(f) for f in stack.split(";")]
        own[frames[-1]] += count
        for name in set(frames):
            total[name] += count
    lines = [f"{samples} samples (py-spy, 200 Hz)", ""]
    lines.append("| self % | total % | function |")
    lines.append("|---:|---:|---|")
    for name, count in own.most_common(top):
        lines.append(
            f"| {100 * count / samples:.1f} | {100 * total[name] / samples:.1f} | `{name}` |"
        )
    lines += ["", "Largest inclusive (total) shares:", ""]
    lines.append("| total % | function |")
    lines.append("|---:|---|")
    for name, count in total.most_common(top):
        lines.append(f"| {100 * count / samples:.1f} | `{name}` |")
    return "\n".join(lines)


def _short(frame: str) -> str:
    """`func (path/to/module.py:123)` -> `func (module.py:123)`."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1]}" if where else name


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def _ratios(
    cells: dict[tuple[str, tuple[int, int], int], Cell],
    name: str,
    other: str,
    shape: tuple[int, int],
    value: Callable[[Cell], float | None],
) -> list[float]:
    """value(name) / value(other) in each repetition where both were measured."""
    found = []
    for (who, where, rep), cell in cells.items():
        if who != name or where != shape:
            continue
        base = cells.get((other, shape, rep))
        mine, theirs = value(cell), value(base) if base else None
        if mine is not None and theirs:
            found.append(mine / theirs)
    return found


def _spread(values: list[float], fmt: str) -> str:
    """The median, and the range when there is more than one value."""
    if not values:
        return "-"
    text = format(_median(values), fmt)
    if len(values) > 1:
        text += f" ({format(min(values), fmt)}-{format(max(values), fmt)})"
    return text


def _haproxy_peer(name: str) -> str:
    """The HAProxy a contender is compared with: round-robin over 3 for one over 3 servers."""
    return "haproxy-3" if name.endswith("-3") else "haproxy"


def table(cells: list[Cell], contenders: list[str]) -> str:
    """Medians over the repetitions (range in brackets); a ratio is taken within each
    repetition first, between cells measured one right after the other."""
    by = {(c.contender, c.shape, c.rep): c for c in cells}
    lines = [
        "| shape (conns x in flight) | contender | req/s | vs direct | vs HAProxy | p50 ms | "
        "p99 ms | proxy CPU µs/req | of which kernel | vs HAProxy CPU | proxy wake-ups/req | "
        "loadgen CPU µs/req | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for shape in SHAPES:
        for name in contenders:
            mine = [c for c in cells if c.contender == name and c.shape == shape]
            if not mine:
                continue
            rate = _spread([c.req_per_s for c in mine], ",.0f")
            vs_direct = _spread(_ratios(by, name, "direct", shape, lambda c: c.req_per_s), ".2f")
            peer = _haproxy_peer(name)
            vs_haproxy = _spread(_ratios(by, name, peer, shape, lambda c: c.req_per_s), ".2f")
            cpus = [c.proxy_cpu_us for c in mine if c.proxy_cpu_us is not None]
            kernels = [c.proxy_sys_us for c in mine if c.proxy_sys_us is not None]
            woken = [c.proxy_wakeups for c in mine if c.proxy_wakeups is not None]
            cpu_ratio = _spread(_ratios(by, name, peer, shape, lambda c: c.proxy_cpu_us), ".2f")
            p50 = _median([c.p50_ms for c in mine])
            p99 = _median([c.p99_ms for c in mine])
            loadgen = _median([c.loadgen_cpu_us for c in mine])
            lines.append(
                f"| {shape[0]}x{shape[1]} | {name} | {rate} | {vs_direct} | {vs_haproxy} | "
                f"{p50:.2f} | {p99:.2f} | {_spread(cpus, '.1f')} | {_spread(kernels, '.1f')} | "
                f"{cpu_ratio} | {_spread(woken, '.2f')} | {loadgen:.1f} | "
                f"{sum(c.errors for c in mine)} |"
            )
    return "\n".join(lines)


def spread_table(cells: list[Cell], pairs: list[tuple[str, str]]) -> str:
    by = {(c.contender, c.shape, c.rep): c for c in cells}
    lines = ["| shape | 3 servers ÷ 1 server (req/s, median and range over repetitions) |"]
    lines.append("|---|---|")
    for shape in SHAPES:
        parts = []
        for one, three in pairs:
            ratios = _ratios(by, three, one, shape, lambda c: c.req_per_s)
            if ratios:
                parts.append(f"{three}: {_spread(ratios, '.2f')}")
        lines.append(f"| {shape[0]}x{shape[1]} | {', '.join(parts)} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per cell")
    parser.add_argument("--max-requests", type=int, default=2_000_000, help="cap per cell")
    parser.add_argument(
        "--reps",
        type=int,
        default=3,
        help="repetitions of every cell, interleaved; tables give the median and the range",
    )
    parser.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="NAME=GREMLINLB",
        help="also run another gremlinlb executable's sidecar (e.g. main=/work/main/.venv/bin/"
        "gremlinlb), as NAME-1 and NAME-3",
    )
    parser.add_argument(
        "--baseline-rev",
        action="append",
        default=[],
        metavar="NAME=REV",
        help="also run the sidecar of git revision REV of this repository (its package, run "
        "with this venv's Python), as NAME-1 and NAME-3",
    )
    parser.add_argument(
        "--pure",
        action="store_true",
        help="also run this checkout's sidecar with GREMLINLB_PURE=1 (the Python source of the "
        "modules `make package` compiled with mypyc), as pure-1 and pure-3",
    )
    parser.add_argument(
        "--no-current",
        action="store_true",
        help="skip this checkout's sidecar (e.g. to measure only a --baseline-rev)",
    )
    parser.add_argument(
        "--sidecar-args",
        default="",
        help="extra flags for every sidecar, e.g. '--connections-per-host 1'",
    )
    parser.add_argument(
        "--syscalls",
        action="store_true",
        help="per sidecar, one more 8x8 cell under `strace -c` (not counted): system calls "
        "per request",
    )
    parser.add_argument(
        "--floors",
        nargs="?",
        const="tcp,aiohttp,picows",
        default="",
        metavar="KINDS",
        help="also run bare Python relays in front of server 1 (bench/micro/floors.py; by "
        "default tcp,aiohttp,picows; also own, and aiohttp-frames, picows-frames, own-frames "
        "doing the sidecar's per-frame work): the least a Python proxy costs here",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy sidecar-1 and sidecar-3")
    parser.add_argument("--label", default="micro", help="results/<date>-<label>.md")
    parser.add_argument("--output", type=Path, help="write the results here instead")
    args = parser.parse_args()
    if not LOADGEN.exists():
        print(f"build the load generator first ({LOADGEN}): make bench-micro", file=sys.stderr)
        return 2
    gremlinlb = str(Path(sys.executable).with_name("gremlinlb"))
    run_dir = Path(tempfile.mkdtemp(prefix="gremlinlb-micro-"))
    load_before = uptime_load()
    cells: list[Cell] = []
    profiles: list[str] = []
    rss: dict[str, float] = {}
    syscalls: list[str] = []
    with Fleet(3, base_port=free_base_port(3), run_dir=run_dir / "servers") as fleet:
        servers = fleet.addresses
        extra = shlex.split(args.sidecar_args)
        contenders: list[Contender] = [
            Direct(servers[0]),
            HAProxyTcp(servers[:1], run_dir),
            HAProxyTcp(servers, run_dir),
        ]
        if not args.no_current:
            contenders.append(Sidecar("sidecar-1", gremlinlb, servers[:1], run_dir, extra))
            contenders.append(Sidecar("sidecar-3", gremlinlb, servers, run_dir, extra))
        baselines = [spec.partition("=")[::2] for spec in args.baseline]
        if args.pure:
            baselines.append(("pure", pure_executable(gremlinlb, run_dir)))
        for spec in args.baseline_rev:
            name, _, rev = spec.partition("=")
            baselines.append((name, checkout(rev, run_dir / f"rev-{name}")))
        for name, path in baselines:
            contenders.append(Sidecar(f"{name}-1", path, servers[:1], run_dir, extra))
            contenders.append(Sidecar(f"{name}-3", path, servers, run_dir, extra))
        if args.floors:
            contenders += [
                Floor(kind, servers[0], run_dir) for kind in args.floors.split(",") if kind
            ]
        # Warm the servers' JIT once, so the first contender is not measured on a cold JVM.
        for server in servers:
            warm = Direct(server)
            run_cell(warm, (8, 8), argparse.Namespace(**{**vars(args), "duration": 3.0}))
        started: list[Contender] = []
        try:
            for contender in contenders:
                started.append(contender)
                contender.start()  # inside: a sidecar that fails its start is stopped too
                if isinstance(contender, Sidecar):
                    rss[contender.name] = contender.rss_at_rest
            # Interleaved: every contender once per shape per repetition, so a burst of load
            # from elsewhere on the machine hits all of them instead of the one measured then.
            for rep in range(args.reps):
                for shape in SHAPES:
                    for contender in contenders:
                        cell = run_cell(contender, shape, args)
                        cell.rep = rep
                        cells.append(cell)
                        print(json.dumps(cell.__dict__), flush=True)
            for contender in contenders:
                if args.syscalls and isinstance(contender, Sidecar):
                    syscalls.append(
                        count_syscalls(contender, args, run_dir / f"{contender.name}.strace")
                    )
                if args.profile and contender.name in ("sidecar-1", "sidecar-3"):
                    assert isinstance(contender, Sidecar)
                    out = run_dir / f"profile-{contender.name}.txt"
                    profiles.append(f"### {contender.name}\n\n" + profile(contender, args, out))
        finally:
            for contender in started:
                contender.stop()
    load_after = uptime_load()
    names = [c.name for c in contenders]
    pairs = [("haproxy", "haproxy-3")] + [(n, n[:-1] + "3") for n in names if n.endswith("-1")]
    today = datetime.date.today().isoformat()
    output = args.output or ROOT / "bench" / "results" / f"{today}-{args.label}.md"
    command = "make bench-micro" + (
        f" BENCH_MICRO_ARGS={shlex.quote(' '.join(sys.argv[1:]))}" if sys.argv[1:] else ""
    )
    text = [
        f"# Data-plane micro-benchmark ({args.label})",
        "",
        "```",
        command,
        "```",
        "",
        f"Measured on {today} ({platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}), commit {_commit()}. Load average (1/5/15 min) before: "
        f"{load_before}; after: {load_after} (the machine is shared with other jobs).",
        f"Each cell: {args.warmup:g} s warm-up, {args.duration:g} s measured, {args.reps} "
        "repetitions interleaved (every contender once per shape per repetition); tables give "
        "the median and, in brackets, the range; a ratio is taken within each repetition first. "
        f"`g.inject(1)` in "
        "GraphBinary from the Go load generator (bench/micro/loadgen); HAProxy in mode tcp in "
        "front of server 1 (`haproxy`) and round-robin per connection over the 3 servers "
        "(`haproxy-3`). 'vs HAProxy' compares a contender over 3 servers with `haproxy-3`, "
        "every other with `haproxy`.",
        "",
        table(cells, names),
        "",
        "Spreading (the same proxy over 3 servers against 1):",
        "",
        spread_table(cells, pairs),
        "",
        "Sidecar RSS at rest (after start, before load): "
        + ", ".join(f"{k} {v:.1f} MiB" for k, v in rss.items()),
    ]
    if syscalls:
        text += [
            "",
            "System calls per request at 8x8 under `strace -c -f` (a cell of its own; strace "
            "slows each call, so compare sidecars with each other only):",
            "",
            *(f"- {line}" for line in syscalls),
        ]
    if profiles:
        text += ["", "## Profile", "", "\n\n".join(profiles)]
    output.write_text("\n".join(text) + "\n", encoding="utf-8")
    print(f"wrote {output}")
    return 0


def pure_executable(gremlinlb: str, run_dir: Path) -> str:
    """`gremlinlb` run as pure Python (gremlinlb.native), in the same process (exec)."""
    executable = run_dir / "gremlinlb-pure"
    executable.write_text(f'#!/bin/sh\nGREMLINLB_PURE=1 exec {gremlinlb} "$@"\n', encoding="utf-8")
    executable.chmod(0o755)
    return str(executable)


def checkout(rev: str, into: Path) -> str:
    """The package as it was at `rev`, laid out as installed (sidecar/ and operator/ inside
    gremlinlb/), and an executable that runs its CLI with this venv's Python."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "src/gremlinlb", "sidecar", "operator"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    package = into / "src" / "gremlinlb"
    (into / "sidecar").rename(package / "sidecar")
    (into / "operator").rename(package / "operator")
    executable = into / "gremlinlb"
    executable.write_text(
        f'#!/bin/sh\nPYTHONPATH={into / "src"} exec {sys.executable} -m gremlinlb.cli "$@"\n',
        encoding="utf-8",
    )
    executable.chmod(0o755)
    return str(executable)


def emit(lines: list[str], out: Path | None) -> int:
    """Print a markdown report and write it to `out` too (when given); the exit status."""
    text = "\n".join(lines) + "\n"
    print(text)
    if out is not None:
        out.write_text(text, encoding="utf-8")
    return 0


def _commit() -> str:
    with contextlib.suppress(Exception):
        return subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    return "?"


if __name__ == "__main__":
    sys.exit(main())
