"""Bounded under stress (issue 20): a few adversarial cases against the real sidecar process.

Starts 3 local Gremlin Servers (gremlinlb.devservers) and, per scenario, one `gremlinlb
sidecar` process run by `--python` (point it at another worktree's venv to measure the code
before a change in the same run: `--python /path/to/other/.venv/bin/python`). Load comes
from gremlinpython client threads here; every answer must name a server (the `server` vertex),
so an answer is counted only if it is one. Loopback only; every scenario is bounded in time.

Scenarios (pick with --scenarios, comma-separated):

- slow: 4 reads that loop for --slow-seconds on their servers, sent at once under load
  (request_timeout = --slow-seconds, as in the issue): executions per slow read (counted on
  the wire by pass-through fault proxies: the slow read carries an 8 MB padding), hosts out of
  rotation (the admin API, polled every 0.1 s), each caller's time to its answer or error;
- hung: 2 of 3 servers SIGSTOPped for --hang-seconds under load: throughput during the hang
  against the seconds before it, and the longest read;
- attempts: how many times the servers receive one read, with --max-attempts 3, when every
  connection closes once the read is received (before any answer);
- dead: live throughput with 0, 5,000 and 20,000 dead hosts listed (127.0.0.x ports with
  nothing listening: refused at once) next to the 3 live ones.

    .venv/bin/python bench/stress.py [--scenarios slow,hung,attempts,dead]
        [--python OTHER/.venv/bin/python --label before] [--out bench/results/FILE.md]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.driver.protocol import GremlinServerError
from gremlin_python.process.anonymous_traversal import traversal
from gremlin_python.process.graph_traversal import GraphTraversal, GraphTraversalSource, __

from gremlinlb.devservers import Fleet
from gremlinlb.devservers.faults import FaultProxy

T = TypeVar("T")

PADDING = "p" * 100_000
# The slow reads' padding: the load's own bytes through one proxy in that scenario (a few MB)
# stay below it, so whole multiples of it count the slow reads the servers received.
SLOW_PADDING = "p" * 8_000_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Sidecar:
    url: str
    admin: str
    process: subprocess.Popen[bytes]
    token: str

    def hosts(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.admin}/v1/hosts", timeout=5) as answer:
            body: dict[str, Any] = json.load(answer)
        hosts: list[dict[str, Any]] = body["hosts"]
        return hosts

    def put_hosts(self, addresses: list[str]) -> None:
        current = json.load(urllib.request.urlopen(f"{self.admin}/v1/hosts", timeout=5))
        body = json.dumps({"generation": current["generation"] + 1, "hosts": addresses})
        request = urllib.request.Request(f"{self.admin}/v1/hosts", data=body.encode(), method="PUT")
        request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=120) as answer:
            answer.read()


@contextlib.contextmanager
def sidecar(
    python: str, addresses: list[str], *flags: str, log_level: str = "ERROR"
) -> Iterator[Sidecar]:
    """A `gremlinlb sidecar` process over `addresses`, ready (GET /readyz), with a token."""
    token = secrets.token_urlsafe(24)
    # created 0600; host-list pushes carry the token
    with tempfile.NamedTemporaryFile("w", prefix="gremlinlb-token-") as secret:
        secret.write(token)
        secret.flush()
        flags = ("--token-file", secret.name, *flags)
        with _sidecar(python, addresses, token, flags, log_level) as running:
            yield running


@contextlib.contextmanager
def _sidecar(
    python: str, addresses: list[str], token: str, flags: tuple[str, ...], log_level: str
) -> Iterator[Sidecar]:
    port, admin = free_port(), free_port()
    command = [
        python,
        "-m",
        "gremlinlb.cli",
        "--log-level",
        log_level,
        "sidecar",
        "--listen",
        f"127.0.0.1:{port}",
        "--admin",
        f"127.0.0.1:{admin}",
        "--endpoints",
        ",".join(addresses),
        *flags,
    ]
    process = subprocess.Popen(command)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the sidecar did not become ready")
            time.sleep(0.1)
        yield Sidecar(f"ws://127.0.0.1:{port}/gremlin", f"http://127.0.0.1:{admin}", process, token)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Answers:
    """Reads of the `server` vertex, stamped with the time: what a Load's threads record."""

    def __init__(self) -> None:
        self.answers: list[tuple[float, float]] = []  # (end, latency)
        self.errors = 0

    def read(self, g: GraphTraversalSource) -> None:
        start = time.monotonic()
        try:
            names = g.V().has_label("server").values("name").to_list()
        except Exception:
            self.errors += 1
            return
        end = time.monotonic()
        if names:
            self.answers.append((end, end - start))

    def rate(self, start: float, end: float) -> float:
        return sum(1 for t, _ in self.answers if start <= t < end) / (end - start)

    def longest(self, start: float, end: float) -> float:
        return max((lat for t, lat in self.answers if start <= t < end + lat), default=0.0)


class Load(Answers):
    """Client threads reading the `server` vertex in a loop; answers stamped with the time."""

    def __init__(self, url: str, threads: int = 8) -> None:
        super().__init__()
        self.url = url
        self.threads = threads
        self.stop = threading.Event()
        self._workers: list[threading.Thread] = []

    def _run(self) -> None:
        connection = DriverRemoteConnection(self.url, "g", pool_size=1)
        try:
            g = traversal().with_(connection)
            while not self.stop.is_set():
                self.read(g)
        finally:
            connection.close()

    def __enter__(self) -> Load:
        self._workers = [threading.Thread(target=self._run) for _ in range(self.threads)]
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for worker in self._workers:
            worker.join(60)


class Rotation:
    """Polls hosts every 0.1 s: seconds each spent out of rotation, most out at once."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self.out_seconds: dict[str, float] = {}
        self.all_out_seconds = 0.0
        self.most_out = 0
        self.most_deprioritised = 0
        self._thread = threading.Thread(target=self._run)

    def poll(self) -> list[tuple[str, bool, bool]] | None:
        """Each host's (address, out of rotation, deprioritised); None: no answer this time."""
        raise NotImplementedError

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(0.1):
            now = time.monotonic()
            hosts = self.poll()
            if hosts is None:
                continue
            out = [address for address, is_out, _ in hosts if is_out]
            self.most_out = max(self.most_out, len(out))
            deprioritised = sum(1 for _, _, low in hosts if low)
            self.most_deprioritised = max(self.most_deprioritised, deprioritised)
            for address in out:
                self.out_seconds[address] = self.out_seconds.get(address, 0.0) + now - last
            if len(out) == len(hosts):
                self.all_out_seconds += now - last
            last = now

    def __enter__(self) -> Rotation:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)


class RotationWatch(Rotation):
    """Polls the admin API: seconds each host spent out of rotation (not healthy)."""

    def __init__(self, side: Sidecar) -> None:
        super().__init__()
        self._side = side

    def poll(self) -> list[tuple[str, bool, bool]] | None:
        try:
            hosts = self._side.hosts()
        except OSError:
            return None
        return [
            (h["endpoint"], h.get("state") != "healthy", bool(h.get("deprioritised")))
            for h in hosts
        ]


def receptions(proxies: list[FaultProxy], padding: str = PADDING) -> int:
    return sum(p.counters.bytes_up // len(padding) for p in proxies)


@contextlib.contextmanager
def proxies_at(addresses: list[str], **faults: Any) -> Iterator[list[FaultProxy]]:
    """A loopback fault proxy in front of each server, counting what it relays."""
    proxies = [FaultProxy(a, **faults).start_in_thread() for a in addresses]
    try:
        yield proxies
    finally:
        for proxy in proxies:
            proxy.stop_thread()


def proxies_for(fleet: Fleet, **faults: Any) -> contextlib.AbstractContextManager[list[FaultProxy]]:
    return proxies_at([s.address for s in fleet], **faults)


def slow_read(g: GraphTraversalSource, server_ms: int) -> GraphTraversal[Any, Any]:
    """A read that loops on its server for `server_ms` (it carries SLOW_PADDING on the wire)."""
    return (
        g.with_("evaluationTimeout", server_ms)
        .inject(1)
        .repeat(__.identity())
        .until(__.is_(SLOW_PADDING))
    )


def slow_report(
    timeout: float, executions: int, watch: Rotation, times: list[float], load: Answers
) -> dict[str, Any]:
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


def hang_under_load(
    hang: float, victims: list[T], pause: Callable[[T], None], resume: Callable[[T], None]
) -> tuple[float, float, float]:
    """3 s of warm-up, 3 s measured before the victims hang for `hang` s, 2 s after:
    (start of before, start of hang, end of hang)."""
    time.sleep(3)
    t0 = time.monotonic()
    time.sleep(3)
    t1 = time.monotonic()
    for victim in victims:
        pause(victim)
    try:
        time.sleep(hang)
    finally:
        for victim in victims:
            resume(victim)
    t2 = time.monotonic()
    time.sleep(2)
    return t0, t1, t2


def hung_report(hang: float, load: Answers, t0: float, t1: float, t2: float) -> dict[str, Any]:
    before, during = load.rate(t0, t1), load.rate(t1, t2)
    return {
        "hang_s": hang,
        "req_per_s_before": round(before),
        "req_per_s_during_hang": round(during),
        "share_of_before": round(during / before, 3) if before else None,
        "longest_read_during_hang_s": round(load.longest(t1, t2), 2),
        "load_errors": load.errors,
    }


def attempts_report(
    g: GraphTraversalSource,
    proxies: list[FaultProxy],
    args: argparse.Namespace,
    errors: type[BaseException],
) -> dict[str, Any]:
    """Receptions of each of `args.reads` reads that every connection closes on."""
    counts = []
    for _ in range(args.reads):
        before = receptions(proxies)
        with contextlib.suppress(errors):
            g.V().has("name", PADDING).count().next()
        time.sleep(1.0)  # let the servers see what was sent
        counts.append(receptions(proxies) - before)
        time.sleep(args.pause)  # the hosts return to rotation
    return {"max_attempts": 3, "receptions_per_read": counts, "max_receptions": max(counts)}


@contextlib.contextmanager
def local_fleet() -> Iterator[Fleet]:
    """3 local Gremlin Servers, started, stopped on the way out."""
    with tempfile.TemporaryDirectory() as run_dir:
        fleet = Fleet(3, base_port=free_port_block(), run_dir=Path(run_dir))
        fleet.start()
        try:
            yield fleet
        finally:
            fleet.stop()


def run_scenarios(
    fleet: Fleet,
    args: argparse.Namespace,
    run: Callable[[str, str, str], dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    """Each of --scenarios with each --python (named by --label) on a freshly reset fleet."""
    pythons = args.python or [sys.executable]
    labels = args.label or [f"python{i}" for i in range(len(pythons))]
    report: dict[str, dict[str, Any]] = {}
    for name in args.scenarios.split(","):
        for python, label in zip(pythons, labels, strict=True):
            fleet.reset()
            for server in fleet:
                server.add_name_vertex()
            result = run(name, python, label)
            report.setdefault(name, {})[label] = result
            print(name, label, json.dumps(result), flush=True)
    return report


def write_report(out: Path | None, title: str, report: dict[str, dict[str, Any]]) -> None:
    if out:
        text = f"# {title}\n\n```json\n" + json.dumps(report, indent=2) + "\n```\n"
        out.write_text(text)


def slow_read_caller(url: str, server_ms: int, times: list[float], start: threading.Event) -> None:
    connection = DriverRemoteConnection(url, "g", pool_size=1)
    try:
        g = traversal().with_(connection)
        looping = slow_read(g, server_ms)
        start.wait()
        began = time.monotonic()
        with contextlib.suppress(GremlinServerError):
            looping.to_list()
        times.append(time.monotonic() - began)
    finally:
        connection.close()


def scenario_slow(fleet: Fleet, python: str, args: argparse.Namespace) -> dict[str, Any]:
    timeout = args.slow_seconds
    with proxies_for(fleet) as proxies:
        addresses = [p.address for p in proxies]
        flags = ("--request-timeout", str(timeout))
        with sidecar(python, addresses, *flags) as side, Load(side.url, 8) as load:
            time.sleep(2)
            with RotationWatch(side) as watch:
                times: list[float] = []
                go = threading.Event()
                callers = [
                    threading.Thread(
                        target=slow_read_caller,
                        args=(side.url, int(timeout * 1000), times, go),
                    )
                    for _ in range(4)
                ]
                for caller in callers:
                    caller.start()
                time.sleep(0.5)
                go.set()
                for caller in callers:
                    caller.join(3 * timeout + 30)
                time.sleep(timeout + 2)  # copies sent late still arrive and run
                executions = receptions(proxies, SLOW_PADDING)
    return slow_report(timeout, executions, watch, times, load)


def scenario_hung(fleet: Fleet, python: str, args: argparse.Namespace) -> dict[str, Any]:
    hang = args.hang_seconds
    with (
        sidecar(python, [s.address for s in fleet], "--request-timeout", "10") as side,
        Load(side.url, 8) as load,
    ):
        t0, t1, t2 = hang_under_load(
            hang, list(fleet)[1:], lambda s: s.pause(), lambda s: s.resume()
        )
    return hung_report(hang, load, t0, t1, t2)


def scenario_attempts(fleet: Fleet, python: str, args: argparse.Namespace) -> dict[str, Any]:
    with proxies_for(fleet, close_after_upload=len(PADDING)) as proxies:
        flags = ("--max-attempts", "3", "--request-timeout", "5")
        with sidecar(python, [p.address for p in proxies], *flags) as side:
            connection = DriverRemoteConnection(side.url, "g", pool_size=1)
            try:
                g = traversal().with_(connection)
                return attempts_report(g, proxies, args, GremlinServerError)
            finally:
                connection.close()


def dead_hosts(count: int) -> list[str]:
    """`count` loopback addresses nothing listens on (checked: each refuses)."""
    found: list[str] = []
    for third in range(1, 255):
        for port in range(40_000, 40_000 + 1000, 10):
            if len(found) == count:
                return found
            found.append(f"127.0.{third}.{1 + port % 250}:{port}")
    return found


def scenario_dead(fleet: Fleet, python: str, args: argparse.Namespace) -> dict[str, Any]:
    live = [s.address for s in fleet]
    results: dict[str, Any] = {}
    for count in (0, *args.dead):
        flags = ("--max-hosts", str(max(1000, count + 10)))
        with sidecar(python, live, *flags) as side, Load(side.url, 8) as load:
            if count:
                side.put_hosts(live + dead_hosts(count))
            time.sleep(3)
            start = time.monotonic()
            time.sleep(args.dead_seconds)
            rate = load.rate(start, time.monotonic())
        results[str(count)] = round(rate)
    base = results["0"]
    results["share_of_none"] = {k: round(v / base, 3) for k, v in results.items() if k != "0"}
    return results


SCENARIOS: dict[str, Callable[[Fleet, str, argparse.Namespace], dict[str, Any]]] = {
    "slow": scenario_slow,
    "hung": scenario_hung,
    "attempts": scenario_attempts,
    "dead": scenario_dead,
}


def stress_parser(doc: str | None, scenarios: str, python_help: str) -> argparse.ArgumentParser:
    """The options bench/stress.py and bench/client_stress.py share."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--scenarios", default=scenarios)
    parser.add_argument("--python", action="append", default=None, help=python_help)
    parser.add_argument("--label", action="append", default=None, help="a name per --python")
    parser.add_argument("--slow-seconds", type=float, default=10.0)
    parser.add_argument("--hang-seconds", type=float, default=5.0)
    parser.add_argument("--reads", type=int, default=3, help="reads in the attempts scenario")
    parser.add_argument("--pause", type=float, default=6.0, help="seconds between those reads")
    parser.add_argument("--out", type=Path, help="write the results (markdown with JSON) here")
    return parser


def main() -> None:
    parser = stress_parser(__doc__, "slow,hung,attempts,dead", "the sidecar's python")
    parser.add_argument(
        "--dead",
        type=lambda text: [int(x) for x in text.split(",")],
        default=[5000, 20000],
        help="comma-separated dead host counts (besides none)",
    )
    parser.add_argument("--dead-seconds", type=float, default=8.0)
    args = parser.parse_args()
    with local_fleet() as fleet:
        for server in fleet:
            server.add_name_vertex()
        report = run_scenarios(
            fleet, args, lambda name, python, label: SCENARIOS[name](fleet, python, args)
        )
    write_report(args.out, "bench/stress.py", report)


def free_port_block(start: int = 38181, count: int = 3) -> int:
    for base in range(start, start + 500, 10):
        if all(_free(port) for port in range(base, base + count)):
            return base
    raise RuntimeError("no free ports for the servers")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


if __name__ == "__main__":
    main()
