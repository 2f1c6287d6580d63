"""Benchmark: direct connection vs sidecar vs in-process client, over 3 real Gremlin Servers.

Starts 3 local Gremlin Servers (gremlinlb.devservers) and one `gremlinlb sidecar` process, then
runs the same read traversal from N concurrent gremlinpython clients (threads) for a fixed time
per cell, in three modes:

- direct: every client connects to server 1 (what an app does without a balancer);
- sidecar: every client connects to the sidecar, which balances each request over all three;
- sidecar-1: a second sidecar that knows only server 1, so its difference to `direct` is the
  cost of the extra hop alone (the `sidecar` row also pays for spreading: three servers that
  each see a third of the requests are colder than one busy server);
- in-process: the clients share one RoundRobinClientRemoteConnection over all three.

Each answer names the server that ran it, so the per-server share is measured, not assumed.
Loopback only; every cell is bounded by --duration and --max-requests.

    .venv/bin/python bench/sidecar_bench.py [--duration 8] [--clients 1,16,64] [--write-readme]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.process.anonymous_traversal import traversal
from stress import free_port_block, sidecar  # beside this script

from gremlinlb import RoundRobinClientRemoteConnection
from gremlinlb.devservers import Fleet

README = Path(__file__).with_name("README.md")
BEGIN, END = "<!-- sidecar-bench:begin -->", "<!-- sidecar-bench:end -->"


@dataclass
class Cell:
    mode: str
    clients: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    served: Counter[str] = field(default_factory=Counter)
    errors: int = 0

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] * 1000


def name_servers(fleet: Fleet) -> None:
    for server in fleet:
        server.add_name_vertex()


def run_cell(
    cell: Cell,
    open_source: Callable[[], tuple[Any, Callable[[], None]]],
    duration: float,
    warmup: float,
    max_requests: int,
) -> None:
    """`open_source` gives (g, close) per client; every client loops until the cell ends."""
    lock = threading.Lock()
    start = threading.Barrier(cell.clients + 1)
    measuring = threading.Event()
    stop = threading.Event()

    def client() -> None:
        g, close = open_source()
        try:
            g.V().has_label("server").values("name").to_list()
            start.wait(60)
            latencies: list[float] = []
            served: Counter[str] = Counter()
            errors = 0
            while not stop.is_set():
                began = time.perf_counter()
                try:
                    names = g.V().has_label("server").values("name").to_list()
                except Exception:
                    errors += 1
                    continue
                if measuring.is_set():
                    latencies.append(time.perf_counter() - began)
                    served.update(names)
                    if len(latencies) * cell.clients >= max_requests:
                        stop.set()
            with lock:
                cell.latencies.extend(latencies)
                cell.served.update(served)
                cell.errors += errors
        finally:
            close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(cell.clients)]
    for thread in threads:
        thread.start()
    start.wait(120)
    time.sleep(warmup)
    began = time.perf_counter()
    measuring.set()
    stop.wait(duration)
    stop.set()
    cell.seconds = time.perf_counter() - began
    for thread in threads:
        thread.join(60)


def direct_source(url: str) -> Callable[[], tuple[Any, Callable[[], None]]]:
    def open_source() -> tuple[Any, Callable[[], None]]:
        connection = DriverRemoteConnection(url, "g", pool_size=1)
        return traversal().with_(connection), connection.close

    return open_source


def shared_rr_source(addresses: list[str], clients: int) -> tuple[Any, Callable[[], None]]:
    connection = RoundRobinClientRemoteConnection(
        addresses, pool_size=max(4, clients), max_workers=max(8, clients)
    )
    g = traversal().with_(connection)
    return g, connection.close


def shared(g: Any) -> Callable[[], tuple[Any, Callable[[], None]]]:
    """Every client thread uses the same traversal source (one in-process connection)."""

    def open_source() -> tuple[Any, Callable[[], None]]:
        return g, lambda: None

    return open_source


def table(cells: list[Cell], addresses: list[str]) -> str:
    lines = [
        "| mode | clients | req/s | p50 ms | p99 ms | share per server (%) | errors |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for cell in cells:
        total = sum(cell.served.values()) or 1
        share = " / ".join(f"{100 * cell.served[a] / total:.1f}" for a in addresses)
        lines.append(
            f"| {cell.mode} | {cell.clients} | {cell.throughput:.0f} | "
            f"{cell.percentile(0.5):.2f} | {cell.percentile(0.99):.2f} | {share} | {cell.errors} |"
        )
    lines += [
        "",
        "| clients | p50 added, sidecar (ms) | p50 added, sidecar-1: the hop alone (ms) | "
        "throughput vs direct, sidecar | throughput vs direct, sidecar-1 | "
        "max deviation from an even share, sidecar |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    by = {(c.mode, c.clients): c for c in cells}
    for clients in sorted({c.clients for c in cells}):
        direct, via = by.get(("direct", clients)), by.get(("sidecar", clients))
        single = by.get(("sidecar-1", clients))
        if direct is None or via is None or single is None:
            continue
        total = sum(via.served.values()) or 1
        even = 1 / len(addresses)
        deviation = max(abs(via.served[a] / total - even) / even for a in addresses)
        base = max(direct.throughput, 1e-9)
        lines.append(
            f"| {clients} | {via.percentile(0.5) - direct.percentile(0.5):+.2f} | "
            f"{single.percentile(0.5) - direct.percentile(0.5):+.2f} | "
            f"{100 * via.throughput / base:.0f}% | {100 * single.throughput / base:.0f}% | "
            f"{100 * deviation:.1f}% |"
        )
    return "\n".join(lines)


def write_readme(report: str, command: str) -> None:
    text = README.read_text(encoding="utf-8") if README.exists() else f"{BEGIN}\n{END}\n"
    block = f"{BEGIN}\n```\n{command}\n```\n\n{report}\n{END}"
    text = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    README.write_text(text, encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per cell")
    parser.add_argument("--clients", default="1,16,64", help="comma-separated client counts")
    parser.add_argument("--max-requests", type=int, default=200_000, help="cap per cell")
    parser.add_argument("--modes", default="direct,sidecar,sidecar-1,in-process")
    parser.add_argument("--write-readme", action="store_true", help="update bench/README.md")
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    modes = args.modes.split(",")
    run_dir = Path(tempfile.mkdtemp(prefix="gremlinlb-bench-"))
    cells: list[Cell] = []
    with Fleet(3, base_port=free_port_block(28181), run_dir=run_dir) as fleet:
        name_servers(fleet)
        addresses = fleet.addresses
        with (
            sidecar(sys.executable, addresses, log_level="WARNING") as spread,
            sidecar(sys.executable, addresses[:1], log_level="WARNING") as single,
        ):
            urls = {"direct": fleet[0].url, "sidecar": spread.url, "sidecar-1": single.url}
            for clients in counts:
                for mode in modes:
                    cell = Cell(mode, clients)
                    print(f"running {mode} with {clients} clients...", file=sys.stderr, flush=True)
                    if mode in urls:
                        source = direct_source(urls[mode])
                        run_cell(cell, source, args.duration, args.warmup, args.max_requests)
                    else:
                        g, close = shared_rr_source(addresses, clients)
                        try:
                            run_cell(cell, shared(g), args.duration, args.warmup, args.max_requests)
                        finally:
                            close()
                    cells.append(cell)
    report = table(cells, addresses)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    report = f"Measured on {time.strftime('%Y-%m-%d')} ({machine}).\n\n{report}"
    print(report)
    if args.write_readme:
        command = " ".join([".venv/bin/python", "bench/sidecar_bench.py", *sys.argv[1:]])
        write_readme(report, command.replace(" --write-readme", ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
