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
import threading
import time
from pathlib import Path
from typing import Any

from gremlin_python.process.anonymous_traversal import traversal
from gremlin_python.process.graph_traversal import GraphTraversalSource
from stress import (
    PADDING,
    SLOW_PADDING,
    Answers,
    Rotation,
    attempts_report,
    hang_under_load,
    hung_report,
    local_fleet,
    proxies_at,
    receptions,
    run_scenarios,
    slow_read,
    slow_report,
    stress_parser,
    write_report,
)

from gremlinlb import BalancerSettings, RoundRobinClientRemoteConnection
from gremlinlb.devservers import Fleet

WORKER_BOUND = 300.0  # seconds a worker may run before it is killed


class Load(Answers):
    """Threads reading the `server` vertex through the client; answers stamped with the time."""

    def __init__(self, g: GraphTraversalSource, threads: int = 8) -> None:
        super().__init__()
        self._g = g
        self._stop = threading.Event()
        self._deadline = time.monotonic() + WORKER_BOUND
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            self.read(self._g)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


class RotationWatch(Rotation):
    """Polls the client's hosts: seconds each spent out of rotation, most out at once."""

    def __init__(self, rr: RoundRobinClientRemoteConnection) -> None:
        super().__init__()
        self._rr = rr

    def poll(self) -> list[tuple[str, bool, bool]]:
        return [
            (h.endpoint.address, h.state.value != "healthy", getattr(h, "deprioritised", False))
            for h in self._rr.hosts()
        ]


def client(addresses: list[str], **settings: Any) -> RoundRobinClientRemoteConnection:
    rr = RoundRobinClientRemoteConnection(addresses, settings=BalancerSettings(**settings))
    deadline = time.monotonic() + 30
    while not all(rr.get_available().values()):
        if time.monotonic() > deadline:
            raise RuntimeError("the servers did not pass their first probes")
        time.sleep(0.1)
    return rr


def slow_caller(g: GraphTraversalSource, server_ms: int, times: list[float]) -> None:
    looping = slow_read(g, server_ms)
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
    return slow_report(timeout, executions, watch, times, load)


def worker_hung(args: argparse.Namespace) -> dict[str, Any]:
    hang = args.hang_seconds
    rr = client(args.addresses, request_timeout=10.0)
    try:
        g = traversal().with_(rr)
        with Load(g) as load:
            t0, t1, t2 = hang_under_load(
                hang,
                args.pids[1:],
                lambda pid: os.kill(pid, signal.SIGSTOP),
                lambda pid: os.kill(pid, signal.SIGCONT),
            )
    finally:
        rr.close()
    return hung_report(hang, load, t0, t1, t2)


def worker_attempts(args: argparse.Namespace) -> dict[str, Any]:
    with proxies_at(args.addresses, close_after_upload=len(PADDING)) as proxies:
        rr = client([p.address for p in proxies], max_attempts=3, request_timeout=5.0)
        try:
            return attempts_report(traversal().with_(rr), proxies, args, Exception)
        finally:
            rr.close()


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
    parser = stress_parser(__doc__, "slow,hung,attempts", "the client's python")
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
    with local_fleet() as fleet:
        report = run_scenarios(
            fleet, args, lambda name, python, label: run_worker(python, label, name, fleet, args)
        )
    write_report(args.out, "bench/client_stress.py", report)


if __name__ == "__main__":
    main()
