"""Bounded under stress (issue 20), the in-process client: bench/stress.py's slow, hung and
attempts scenarios against `RoundRobinClientRemoteConnection` instead of the sidecar.

Starts 3 local Gremlin Servers (gremlinlb.devservers); each scenario runs in a worker process
of `--python` (give it twice, with `--label`, to measure another worktree's client in the same
run: `--python /path/to/other/.venv/bin/python`), which imports gremlinlb from that venv. The
worker holds the client, its load threads, and (slow, attempts) loopback fault proxies in front
of the servers, which count what the servers received. Every scenario is bounded in time.

- slow: 4 reads that loop for --slow-seconds on their servers, sent at once while 8 threads
  read (request_timeout = --slow-seconds): executions per slow read (the 8 MB padding counted
  on the wire), hosts out of rotation and deprioritised (polled every 0.1 s), each caller's
  time to its answer or error;
- hung: 2 of 3 servers SIGSTOPped for --hang-seconds under load: throughput during the hang
  against the seconds before it, and the longest read;
- attempts: receptions of one read with max_attempts 3 when every connection closes once the
  read is received (before any answer).

    .venv/bin/python bench/client_stress.py [--scenarios slow,hung,attempts]
        [--python OTHER/.venv/bin/python --label before] [--out bench/results/FILE.md]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gremlin_python.process.anonymous_traversal import traversal
from gremlin_python.process.graph_traversal import GraphTraversalSource, __
from stress import PADDING, SLOW_PADDING, free_port_block, receptions

from gremlinlb import BalancerSettings, RoundRobinClientRemoteConnection
from gremlinlb.devservers import Fleet
from gremlinlb.devservers.faults import FaultProxy

WORKER_BOUND = 300.0  # seconds a worker may run before it is killed


class Load:
    """Threads reading the `server` vertex through the client; answers stamped with the time."""

    def __init__(self, g: GraphTraversalSource, threads: int = 8) -> None:
        self._g = g
        self._stop = threading.Event()
        self._deadline = time.monotonic() + WORKER_BOUND
        self.answers: list[tuple[float, float]] = []  # (end, latency)
        self.errors = 0
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            start = time.monotonic()
            try:
                names = self._g.V().has_label("server").values("name").to_list()
            except Exception:
                self.errors += 1
                continue
            end = time.monotonic()
            if names:
                self.answers.append((end, end - start))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def rate(self, start: float, end: float) -> float:
        return sum(1 for t, _ in self.answers if start <= t < end) / (end - start)

    def longest(self, start: float, end: float) -> float:
        return max((lat for t, lat in self.answers if start <= t < end + lat), default=0.0)


class RotationWatch:
    """Polls the client's hosts: seconds each spent out of rotation, most out at once."""

    def __init__(self, rr: RoundRobinClientRemoteConnection) -> None:
        self._rr = rr
        self._stop = threading.Event()
        self.out_seconds: dict[str, float] = {}
        self.all_out_seconds = 0.0
        self.most_out = 0
        self.most_deprioritised = 0
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(0.1):
            now = time.monotonic()
            hosts = self._rr.hosts()
            out = [h.endpoint.address for h in hosts if h.state.value != "healthy"]
            self.most_out = max(self.most_out, len(out))
            deprioritised = sum(1 for h in hosts if getattr(h, "deprioritised", False))
            self.most_deprioritised = max(self.most_deprioritised, deprioritised)
            for address in out:
                self.out_seconds[address] = self.out_seconds.get(address, 0.0) + now - last
            if len(out) == len(hosts):
                self.all_out_seconds += now - last
            last = now

    def __enter__(self) -> RotationWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)


@contextlib.contextmanager
def proxies_at(addresses: list[str], **faults: Any) -> Iterator[list[FaultProxy]]:
    """A loopback fault proxy in front of each server, counting what it relays."""
    proxies = [FaultProxy(a, **faults).start_in_thread() for a in addresses]
    try:
        yield proxies
    finally:
        for proxy in proxies:
            proxy.stop_thread()


def client(addresses: list[str], **settings: Any) -> RoundRobinClientRemoteConnection:
    rr = RoundRobinClientRemoteConnection(addresses, settings=BalancerSettings(**settings))
    deadline = time.monotonic() + 30
    while not all(rr.get_available().values()):
        if time.monotonic() > deadline:
            raise RuntimeError("the servers did not pass their first probes")
        time.sleep(0.1)
    return rr


def slow_caller(g: GraphTraversalSource, server_ms: int, times: list[float]) -> None:
    looping = (
        g.with_("evaluationTimeout", server_ms)
        .inject(1)
        .repeat(__.identity())
        .until(__.is_(SLOW_PADDING))
    )
    began = time.monotonic()
    with contextlib.suppress(Exception):
        looping.to_list()
    times.append(time.monotonic() - began)


def worker_slow(args: argparse.Namespace) -> dict[str, Any]:
    timeout = args.slow_seconds
    with proxies_at(args.addresses) as proxies:
        rr = client([p.address for p in proxies], request_timeout=timeout)
        try:
            g = traversal().with_(rr)
            with Load(g) as load:
                time.sleep(2)
                with RotationWatch(rr) as watch:
                    times: list[float] = []
                    callers = [
                        threading.Thread(target=slow_caller, args=(g, int(timeout * 1000), times))
                        for _ in range(4)
                    ]
                    for caller in callers:
                        caller.start()
                    for caller in callers:
                        caller.join(3 * timeout + 30)
                    time.sleep(timeout + 2)  # copies sent late still arrive and run
                    executions = receptions(proxies, SLOW_PADDING)
        finally:
            rr.close()
    return {
        "request_timeout_s": timeout,
        "executions_per_slow_read": executions / 4,
        "most_hosts_out_at_once": watch.most_out,
        "most_hosts_deprioritised_at_once": watch.most_deprioritised,
        "seconds_all_hosts_out": round(watch.all_out_seconds, 1),
        "seconds_out_per_host": {k: round(v, 1) for k, v in watch.out_seconds.items()},
        "callers_answered_s": sorted(round(t, 1) for t in times),
        "callers_over_timeout_plus_1s": sum(1 for t in times if t > timeout + 1),
        "load_errors": load.errors,
    }


def worker_hung(args: argparse.Namespace) -> dict[str, Any]:
    hang = args.hang_seconds
    rr = client(args.addresses, request_timeout=10.0)
    try:
        g = traversal().with_(rr)
        with Load(g) as load:
            time.sleep(3)
            t0 = time.monotonic()
            time.sleep(3)
            t1 = time.monotonic()
            for pid in args.pids[1:]:
                os.kill(pid, signal.SIGSTOP)
            try:
                time.sleep(hang)
            finally:
                for pid in args.pids[1:]:
                    os.kill(pid, signal.SIGCONT)
            t2 = time.monotonic()
            time.sleep(2)
    finally:
        rr.close()
    before, during = load.rate(t0, t1), load.rate(t1, t2)
    return {
        "hang_s": hang,
        "req_per_s_before": round(before),
        "req_per_s_during_hang": round(during),
        "share_of_before": round(during / before, 3) if before else None,
        "longest_read_during_hang_s": round(load.longest(t1, t2), 2),
        "load_errors": load.errors,
    }


def worker_attempts(args: argparse.Namespace) -> dict[str, Any]:
    counts = []
    with proxies_at(args.addresses, close_after_upload=len(PADDING)) as proxies:
        rr = client([p.address for p in proxies], max_attempts=3, request_timeout=5.0)
        try:
            g = traversal().with_(rr)
            for _ in range(args.reads):
                before = receptions(proxies)
                with contextlib.suppress(Exception):
                    g.V().has("name", PADDING).count().next()
                time.sleep(1.0)  # let the servers see what was sent
                counts.append(receptions(proxies) - before)
                time.sleep(args.pause)  # the hosts return to rotation
        finally:
            rr.close()
    return {"max_attempts": 3, "receptions_per_read": counts, "max_receptions": max(counts)}


WORKERS = {"slow": worker_slow, "hung": worker_hung, "attempts": worker_attempts}


def run_worker(
    python: str, label: str, scenario: str, fleet: Fleet, args: argparse.Namespace
) -> Any:
    command = [
        python,
        __file__,
        "--worker",
        scenario,
        "--addresses",
        ",".join(s.address for s in fleet),
        "--pids",
        ",".join(str(s.pid) for s in fleet),
        "--slow-seconds",
        str(args.slow_seconds),
        "--hang-seconds",
        str(args.hang_seconds),
        "--reads",
        str(args.reads),
        "--pause",
        str(args.pause),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=WORKER_BOUND + 60)
    if args.log_dir is not None:  # the worker's warnings: hosts taken out, and why
        args.log_dir.mkdir(parents=True, exist_ok=True)
        (args.log_dir / f"{scenario}-{label}.log").write_text(done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"the {scenario} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default="slow,hung,attempts")
    parser.add_argument("--python", action="append", default=None, help="the client's python")
    parser.add_argument("--label", action="append", default=None, help="a name per --python")
    parser.add_argument("--slow-seconds", type=float, default=10.0)
    parser.add_argument("--hang-seconds", type=float, default=5.0)
    parser.add_argument("--reads", type=int, default=3, help="reads in the attempts scenario")
    parser.add_argument("--pause", type=float, default=6.0, help="seconds between those reads")
    parser.add_argument("--out", type=Path, help="write the results (markdown with JSON) here")
    parser.add_argument("--log-dir", type=Path, help="keep each worker's warnings here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--addresses", type=lambda t: t.split(","), help=argparse.SUPPRESS)
    parser.add_argument(
        "--pids", type=lambda t: [int(x) for x in t.split(",")], help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.worker:
        logging.basicConfig(
            level=logging.WARNING, format="%(relativeCreated)8.0f %(message)s", force=True
        )
        print(json.dumps(WORKERS[args.worker](args)), flush=True)
        return
    pythons = args.python or [sys.executable]
    labels = args.label or [f"python{i}" for i in range(len(pythons))]
    report: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as run_dir:
        fleet = Fleet(3, base_port=free_port_block(), run_dir=Path(run_dir))
        fleet.start()
        try:
            for name in args.scenarios.split(","):
                for python, label in zip(pythons, labels, strict=True):
                    fleet.reset()
                    for server in fleet:
                        server.add_name_vertex()
                    result = run_worker(python, label, name, fleet, args)
                    report.setdefault(name, {})[label] = result
                    print(name, label, json.dumps(result), flush=True)
        finally:
            fleet.stop()
    if args.out:
        text = "# bench/client_stress.py\n\n```json\n" + json.dumps(report, indent=2) + "\n```\n"
        args.out.write_text(text)


if __name__ == "__main__":
    main()
