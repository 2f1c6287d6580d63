"""One read-only query slower than `request_timeout`, on healthy servers (issue 8).

How many hosts does the balancer take out, how many times does the query run, and how long does
the next fast request wait? Starts 3 seeded Gremlin Servers (servers.py) and, one after the
other, the `gremlinlb sidecar` and an in-process `RoundRobinClientRemoteConnection`, both with
`request_timeout` REQUEST_TIMEOUT s and the benchmark's health settings. Then, for each:

1. sends one read-only traversal (no lambda, no mutating step) that takes about SLOW_FOR times
   the timeout on an idle server: `V().hasLabel('person').limit(n).repeat(out('knows')
   .simplePath()).times(d).count()`, n and d calibrated first on server 1;
2. polls the balancer's host states (sidecar: `GET /v1/hosts`; in-process: `hosts()`) every
   0.1 s from the request until 1 s after its answer: a host seen in any state but healthy
   counts as taken out;
3. right after the slow request's answer, sends `g.inject(1)` and records how long it took;
4. counts the executions from the servers themselves: the CPU time each server's JVM used until
   all are idle again, minus its idle rate, divided by what one execution cost on server 1
   during calibration (a server whose extra CPU exceeds a quarter of that ran it at least once).

    .venv/bin/python bench/compare/slow_query.py                     # about 2-3 minutes
    .venv/bin/python bench/compare/slow_query.py --label before-gray # results/<date>-<label>-...

Writes bench/results/<date>[-<label>]-slow-query.md and prints the table. Loopback only; every
wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contenders import HEALTH, free_port, wait_until
from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.process.anonymous_traversal import traversal
from gremlin_python.process.graph_traversal import __
from run import RESULTS, free_base_port, machine
from servers import SeededFleet, cpu_seconds, load_average

from gremlinlb import BalancerSettings, HealthCheckSettings, RoundRobinClientRemoteConnection

REPO = Path(__file__).resolve().parents[2]
REQUEST_TIMEOUT = 2.0
#: the slow query takes about this many request timeouts on an idle server
SLOW_FOR = 3.0
#: seconds the servers may take to finish every execution after the answer
SETTLE_LIMIT = 90.0


def slow_traversal(g: Any, starts: int, depth: int) -> Any:
    return (
        g.V()
        .has_label("person")
        .limit(starts)
        .repeat(__.out("knows").simple_path())
        .times(depth)
        .count()
    )


@dataclass
class Calibration:
    starts: int
    depth: int
    seconds: float  # wall time of one execution on server 1
    cpu: float  # CPU seconds of one execution on server 1


@dataclass
class Outcome:
    balancer: str
    answer: str = ""
    seconds: float = 0.0
    taken_out: list[str] = field(default_factory=list)
    states_seen: dict[str, list[str]] = field(default_factory=dict)
    next_request_seconds: float | None = None
    next_request_answer: str = ""
    cpu_per_server: list[float] = field(default_factory=list)
    executions: int = 0
    servers_that_ran_it: int = 0


def timed(work: Callable[[], Any]) -> tuple[str, float]:
    began = time.monotonic()
    try:
        answer = f"answered {work()!r}"
    except Exception as error:
        answer = f"{type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''}"
    return answer, time.monotonic() - began


def calibrate(fleet: SeededFleet, say: Callable[[str], None]) -> Calibration:
    """A query that runs about SLOW_FOR x REQUEST_TIMEOUT on server 1 (and warms every JVM)."""
    servers = list(fleet)[:3]
    connections = [DriverRemoteConnection(f"ws://{s.address}/gremlin", "g") for s in servers]
    try:
        sources = [traversal().with_(c) for c in connections]
        for g in sources:  # warm the JIT of every server on the same query shape
            for _ in range(2):
                slow_traversal(g, 5, 6).next()
        starts, depth = 5, 6
        target = SLOW_FOR * REQUEST_TIMEOUT
        for _ in range(6):
            pid = servers[0].pid
            assert pid is not None
            cpu0 = cpu_seconds(pid) or 0.0
            began = time.monotonic()
            slow_traversal(sources[0], starts, depth).next()
            seconds = time.monotonic() - began
            cpu = (cpu_seconds(pid) or 0.0) - cpu0
            say(f"calibration: starts={starts} depth={depth}: {seconds:.2f} s, {cpu:.2f} CPU s")
            if 0.8 * target <= seconds <= 2.0 * target:
                return Calibration(starts, depth, seconds, cpu)
            # the work grows with starts x 3^depth (3 knows edges each); at most 20x per step
            work = starts * 3**depth * min(20.0, target / max(seconds, 0.01))
            depth = 6
            while work / 3**depth > 1000:  # at most every person as a start
                depth += 1
            starts = max(1, math.ceil(work / 3**depth))
        raise RuntimeError("could not calibrate a query slower than the request timeout")
    finally:
        for connection in connections:
            connection.close()


class HostWatch:
    """Polls a balancer's host states in a thread; remembers every state each host was in."""

    def __init__(self, read: Callable[[], dict[str, str]]) -> None:
        self.read = read
        self.seen: dict[str, list[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 120
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                for host, state in self.read().items():
                    states = self.seen.setdefault(host, [])
                    if not states or states[-1] != state:
                        states.append(state)
            except Exception:
                pass
            self._stop.wait(0.1)

    def __enter__(self) -> HostWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def settle(pids: list[int], limit: float) -> None:
    """Wait until every server's JVM is idle (under 10% of a core for 1 s), at most `limit` s."""
    deadline = time.monotonic() + limit
    quiet = 0
    while time.monotonic() < deadline and quiet < 2:
        before = [cpu_seconds(p) or 0.0 for p in pids]
        time.sleep(0.5)
        after = [cpu_seconds(p) or 0.0 for p in pids]
        idle = all((b - a) / 0.5 < 0.1 for a, b in zip(before, after, strict=True))
        quiet = quiet + 1 if idle else 0


def measure(
    name: str,
    fleet: SeededFleet,
    calibration: Calibration,
    g: Any,
    read_states: Callable[[], dict[str, str]],
) -> Outcome:
    outcome = Outcome(name)
    pids = [s.pid for s in list(fleet)[:3] if s.pid is not None]
    idle_from = [cpu_seconds(p) or 0.0 for p in pids]
    time.sleep(2.0)  # what each server burns idle (probes, GC), to subtract below
    idle_rate = [((cpu_seconds(p) or 0.0) - c) / 2.0 for p, c in zip(pids, idle_from, strict=True)]
    g.inject(0).to_list()  # connections open before the clock starts
    cpu0 = [cpu_seconds(p) or 0.0 for p in pids]
    began = time.monotonic()
    with HostWatch(read_states) as watch:
        query = slow_traversal(g, calibration.starts, calibration.depth)
        outcome.answer, outcome.seconds = timed(query.next)
        outcome.next_request_answer, outcome.next_request_seconds = timed(
            lambda: g.inject(1).to_list()
        )
        time.sleep(1.0)
    settle(pids, SETTLE_LIMIT)
    elapsed = time.monotonic() - began
    outcome.states_seen = watch.seen
    outcome.taken_out = sorted(h for h, states in watch.seen.items() if set(states) != {"healthy"})
    for pid, c0, rate in zip(pids, cpu0, idle_rate, strict=True):
        extra = (cpu_seconds(pid) or 0.0) - c0 - rate * elapsed
        outcome.cpu_per_server.append(extra)
    ran = [x for x in outcome.cpu_per_server if x > 0.25 * calibration.cpu]
    outcome.servers_that_ran_it = len(ran)
    outcome.executions = sum(max(1, round(x / calibration.cpu)) for x in ran)
    return outcome


def run_sidecar(fleet: SeededFleet, calibration: Calibration, work_dir: Path) -> Outcome:
    port, admin = free_port(), free_port()
    servers = fleet.addresses[:3]
    command = [
        str(Path(sys.executable).with_name("gremlinlb")), "--log-level", "INFO", "sidecar",
        "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}",
        "--endpoints", ",".join(servers), "--request-timeout", f"{REQUEST_TIMEOUT:g}",
        "--health-interval", f"{HEALTH.interval:g}", "--health-timeout", f"{HEALTH.timeout:g}",
        "--rise", str(HEALTH.rise), "--fall", str(HEALTH.fall),
    ]  # fmt: skip
    log_path = work_dir / "slow-query-sidecar.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    connection = None
    try:

        def states() -> dict[str, str]:
            url = f"http://127.0.0.1:{admin}/v1/hosts"
            with urllib.request.urlopen(url, timeout=5) as answer:
                hosts = json.loads(answer.read())["hosts"]
            return {h["address"]: str(h["state"]) for h in hosts}

        if not wait_until(lambda: set(states().values()) == {"healthy"}, 30):
            raise RuntimeError(f"the sidecar did not report 3 healthy servers; see {log_path}")
        connection = DriverRemoteConnection(f"ws://127.0.0.1:{port}/gremlin", "g")
        return measure("sidecar", fleet, calibration, traversal().with_(connection), states)
    finally:
        if connection is not None:
            connection.close()
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def run_in_process(fleet: SeededFleet, calibration: Calibration) -> Outcome:
    settings = BalancerSettings(
        request_timeout=REQUEST_TIMEOUT,
        health=HealthCheckSettings(
            interval=HEALTH.interval, timeout=HEALTH.timeout, rise=HEALTH.rise, fall=HEALTH.fall
        ),
    )
    connection = RoundRobinClientRemoteConnection(fleet.addresses[:3], settings=settings)
    try:

        def states() -> dict[str, str]:
            return {
                str(h.endpoint): str(getattr(h.state, "value", h.state)) for h in connection.hosts()
            }

        wait_until(lambda: set(states().values()) == {"healthy"}, 30)
        return measure("in-process", fleet, calibration, traversal().with_(connection), states)
    finally:
        closer = threading.Thread(target=connection.close, daemon=True)
        closer.start()
        closer.join(10)


def table(outcomes: list[Outcome], calibration: Calibration) -> list[str]:
    lines = [
        "| balancer | hosts taken out (of 3) | executions (servers that ran it) | the slow "
        "request: answer after | what the client got | next `g.inject(1)` answered after "
        f"| extra CPU s per server (one execution ≈ {calibration.cpu:.1f}) |",
        "|---|---:|---:|---:|---|---:|---|",
    ]
    for o in outcomes:
        next_s = "-" if o.next_request_seconds is None else f"{o.next_request_seconds:.2f} s"
        lines.append(
            f"| {o.balancer} | {len(o.taken_out)} | {o.executions} ({o.servers_that_ran_it}) "
            f"| {o.seconds:.2f} s | {o.answer.replace('|', '/')} | {next_s} "
            f"| {' / '.join(f'{x:.1f}' for x in o.cpu_per_server)} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", help="results file bench/results/<date>-<label>-slow-query.md")
    parser.add_argument("--balancers", default="sidecar,in-process", help="which to measure")
    args = parser.parse_args(argv)
    if args.label is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", args.label):
        parser.error(f"--label {args.label!r}: use letters, digits, '.', '_' or '-' (a file name)")
    chosen = [b for b in args.balancers.split(",") if b]
    if not chosen or set(chosen) - {"sidecar", "in-process"}:
        parser.error(f"--balancers {args.balancers!r}: a comma-separated subset of "
                     "sidecar,in-process")  # fmt: skip
    log: list[str] = []

    def say(text: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {text}"
        log.append(line)
        print(line, file=sys.stderr, flush=True)

    work_dir = REPO / ".cache" / "bench" / ("slow-query-" + time.strftime("%Y%m%d-%H%M%S"))
    work_dir.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    load_before = load_average()
    fleet = SeededFleet(3, base_port=free_base_port(3, 38481), run_dir=work_dir / "servers")
    say("starting 3 Gremlin Servers ...")
    fleet.start()
    outcomes: list[Outcome] = []
    try:
        calibration = calibrate(fleet, say)
        for balancer in chosen:
            say(f"{balancer}: one slow query (request_timeout {REQUEST_TIMEOUT:g} s)")
            if balancer == "sidecar":
                outcome = run_sidecar(fleet, calibration, work_dir)
            else:
                outcome = run_in_process(fleet, calibration)
            say(f"  {outcome}")
            outcomes.append(outcome)
    finally:
        fleet.stop()
    rows = table(outcomes, calibration)
    given = argv if argv is not None else sys.argv[1:]
    command = shlex.join([".venv/bin/python", "bench/compare/slow_query.py", *given])
    m = machine()
    md = [
        "# One slow query on healthy servers",
        "",
        "```",
        command,
        "```",
        "",
        f"- {m['cpu']}, {m['cores']} cores; Python {m['python']}; started {started}; load "
        f"average before {' / '.join(f'{x:.2f}' for x in load_before)}, after "
        f"{' / '.join(f'{x:.2f}' for x in load_average())} (the machine is shared: CPU seconds "
        "count, wall times are rough)",
        f"- request_timeout {REQUEST_TIMEOUT:g} s for both balancers (everything else default; "
        f"health every {HEALTH.interval:g} s, fall {HEALTH.fall}, rise {HEALTH.rise})",
        f"- the query: `g.V().hasLabel('person').limit({calibration.starts}).repeat(out('knows')"
        f".simplePath()).times({calibration.depth}).count()`, read-only; alone on server 1 it "
        f"took {calibration.seconds:.2f} s and {calibration.cpu:.2f} CPU s",
        "- aim (issue 8): 0 hosts taken out, 1 execution, the next request answered at once",
        "",
        *rows,
        "",
        "States each balancer reported per host while the query ran (in order):",
        "",
    ]
    for o in outcomes:
        for host, states in sorted(o.states_seen.items()):
            md.append(f"- {o.balancer}, {host}: {' → '.join(states)}")
    md += ["", "## Log", "", "```", *log, "```", ""]
    date = started.split()[0]
    name = f"{date}-{args.label}-slow-query" if args.label else f"{date}-slow-query"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.md").write_text("\n".join(md), encoding="utf-8")
    print("\n".join(rows))
    print(f"results: {RESULTS / (name + '.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
