"""The load: gremlinpython clients with their default pool of 8 connections, closed-loop workers.

A cell of N workers runs ceil(N / 8) client processes; each holds ONE client (a
`DriverRemoteConnection` with gremlinpython's default pool of 8 WebSocket connections, or a
`RoundRobinClientRemoteConnection` for the in-process contender) shared by its worker threads,
as an application would. Every worker loops: pick a request from the mix with its own seeded
random generator (the same sequence for every contender), send it, wait for the whole answer,
record start time, latency, outcome and the server that answered (every query returns the
`srv` tag of servers.py). After an error a worker waits ERROR_PAUSE before its next request, so
a dead connection that fails instantly does not turn the loop into a busy spin.

Only requests started inside the measured window are recorded; warm-up requests before it are
not. Every process stops by itself: it records until `end`, waits at most `grace` seconds for
requests still in flight (counted as unfinished), writes its results and exits.

A second client, js_load.js, runs the read mix on the JavaScript driver, which multiplexes every
worker's requests on one WebSocket connection (as the Java, .NET and Go drivers do).

Run as a child: `python load.py '<json spec>'`; it prints `ready`, reads one JSON line
`{"start": t0, "end": t1}` (time.monotonic() values, shared by all processes of the machine),
runs, writes `spec["out"]` and prints `done`.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.process.anonymous_traversal import traversal
from gremlin_python.process.traversal import T
from servers import PEOPLE, SERVER_VERTEX_ID

#: gremlinpython's default pool size: one client per this many workers.
POOL_SIZE = 8
ERROR_PAUSE = 0.1
#: Keys each worker owns for writes, so two workers never update the same element at once
#: (TinkerTransactionGraph would answer a write conflict, which is not what we measure).
MAX_WORKERS = 64
EVENTS_PER_WORKER = 100
STREAM_LENGTH = 300  # > 4 batches of 64: one 200 after four 206 frames

# kinds of request
POINT, SHORT, STREAM, UPDATE, UPSERT = range(5)
KIND_NAMES = ("point", "short", "stream", "update", "upsert")
READ_KINDS = frozenset((POINT, SHORT, STREAM))
MIXES: dict[str, tuple[tuple[int, float], ...]] = {
    # read-only: point lookups, 2-hop traversals, and one streamed result over several batches
    "read": ((POINT, 0.70), (SHORT, 0.25), (STREAM, 0.05)),
    # writes only: a property update on an existing vertex and an upsert (mergeV)
    "write": ((UPDATE, 0.5), (UPSERT, 0.5)),
}


def choose(mix: str, rnd: random.Random) -> int:
    x = rnd.random()
    for kind, weight in MIXES[mix]:
        if x < weight:
            return kind
        x -= weight
    return MIXES[mix][-1][0]


def run_request(g: Any, kind: int, rnd: random.Random, worker: int) -> str | None:
    """Send one request of `kind`, read the whole answer, return the `srv` tag of its server."""
    if kind in (POINT, SHORT, STREAM):
        uid = rnd.randrange(PEOPLE)
        if kind == POINT:
            query = g.V().has("person", "uid", uid)
        elif kind == SHORT:
            query = g.V().has("person", "uid", uid).out("knows").out("knows").dedup().limit(10)
        else:
            first = rnd.randrange(PEOPLE - STREAM_LENGTH)
            query = g.V().has_label("person").range_(first, first + STREAM_LENGTH)
        rows = query.project("name", "srv").by("name").by("srv").to_list()
        if kind == STREAM and len(rows) != STREAM_LENGTH:
            raise RuntimeError(f"streamed {len(rows)} results, expected {STREAM_LENGTH}")
        return str(rows[0]["srv"]) if rows else None
    if kind == UPDATE:
        # people uid % MAX_WORKERS == worker belong to this worker alone
        uid = worker + MAX_WORKERS * rnd.randrange(PEOPLE // MAX_WORKERS)
        tags = g.V().has("person", "uid", uid).property("score", rnd.random()).values("srv")
        values = tags.to_list()
        return str(values[0]) if values else None
    key = worker * EVENTS_PER_WORKER + rnd.randrange(EVENTS_PER_WORKER)
    upsert = g.merge_v({T.label: "event", "k": key}).property("n", rnd.randrange(1 << 30))
    values = upsert.V(SERVER_VERTEX_ID).values("name").to_list()
    return str(values[0]) if values else None


# -- child process -------------------------------------------------------------------------------


@dataclass
class WorkerLog:
    t: list[float] = field(default_factory=list)
    lat: list[float] = field(default_factory=list)
    ok: list[int] = field(default_factory=list)
    srv: list[int] = field(default_factory=list)
    kind: list[int] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    in_flight_since: float | None = None


def _open(target: dict[str, Any]) -> tuple[Any, Any]:
    """(connection, g) for the target; the in-process contender balances inside this process."""
    if "url" in target:
        connection: Any = DriverRemoteConnection(target["url"], "g")  # default pool of 8
    else:
        from gremlinlb import (
            BalancerSettings,
            HealthCheckSettings,
            RoundRobinClientRemoteConnection,
        )

        health = target["health"]
        settings = BalancerSettings(
            health=HealthCheckSettings(
                interval=health["interval"],
                timeout=health["timeout"],
                rise=health["rise"],
                fall=health["fall"],
            )
        )
        connection = RoundRobinClientRemoteConnection(target["addresses"], settings=settings)
    return connection, traversal().with_(connection)


def child_main(spec: dict[str, Any]) -> None:
    addresses: list[str] = spec["addresses"]
    index = {address: i for i, address in enumerate(addresses)}
    connection, g = _open(spec["target"])
    print("ready", flush=True)
    go = json.loads(sys.stdin.readline())
    start, end = float(go["start"]), float(go["end"])
    grace = float(spec.get("grace", 10.0))
    cap = int(spec.get("max_requests", 1_000_000))
    logs = [WorkerLog() for _ in spec["workers"]]
    counted = [0]
    lock = threading.Lock()

    def work(slot: int, worker: int) -> None:
        log = logs[slot]
        rnd = random.Random(int(spec["seed"]) * 1000 + worker)
        while True:
            began = time.monotonic()
            if began >= end:
                return
            kind = choose(spec["mix"], rnd)
            measured = began >= start
            if measured:
                with lock:
                    if counted[0] >= cap:
                        return
                    counted[0] += 1
                log.in_flight_since = began
            tag: str | None = None
            error: str | None = None
            try:
                tag = run_request(g, kind, rnd, worker)
            except Exception as exc:
                error = (
                    f"{type(exc).__name__}: {str(exc).splitlines()[0][:100] if str(exc) else ''}"
                )
            done = time.monotonic()
            log.in_flight_since = None
            if measured:
                log.t.append(round(began - start, 5))
                log.lat.append(round((done - began) * 1000, 4))
                log.ok.append(0 if error else 1)
                log.srv.append(index.get(tag, -1) if tag is not None else -1)
                log.kind.append(kind)
                if error:
                    log.errors[error] += 1
            if error:
                time.sleep(max(0.0, min(ERROR_PAUSE, end - time.monotonic())))

    add = spec.get("add_host")
    if add is not None:

        def add_later() -> None:
            time.sleep(max(0.0, start + float(add["offset"]) - time.monotonic()))
            connection.add_host(add["address"])

        threading.Thread(target=add_later, daemon=True).start()

    threads = [
        threading.Thread(target=work, args=(slot, worker), daemon=True)
        for slot, worker in enumerate(spec["workers"])
    ]
    for thread in threads:
        thread.start()
    deadline = end + grace
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    unfinished = sum(1 for log in logs if log.in_flight_since is not None)
    result: dict[str, Any] = {
        "t": [x for log in logs for x in log.t],
        "lat": [x for log in logs for x in log.lat],
        "ok": [x for log in logs for x in log.ok],
        "srv": [x for log in logs for x in log.srv],
        "kind": [x for log in logs for x in log.kind],
        "errors": dict(sum((log.errors for log in logs), Counter())),
        "unfinished": unfinished,
    }
    Path(spec["out"]).write_text(json.dumps(result), encoding="utf-8")
    print("done", flush=True)
    closer = threading.Thread(target=connection.close, daemon=True)
    closer.start()
    closer.join(3.0)
    os._exit(0)  # gremlinpython's executor threads are not daemons; leave without them


# -- parent side ---------------------------------------------------------------------------------


@dataclass
class CellResult:
    """Every measured request of one cell, all processes merged; times relative to `start`."""

    duration: float
    t: list[float]
    lat: list[float]
    ok: list[int]
    srv: list[int]
    kind: list[int]
    errors: dict[str, int]
    unfinished: int

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CellResult:
        return cls(**data)


def split_workers(workers: int) -> list[list[int]]:
    """Worker ids per client process: ceil(workers / POOL_SIZE) clients, as even as possible."""
    clients = max(1, math.ceil(workers / POOL_SIZE))
    return [list(range(workers))[i::clients] for i in range(clients)]


#: The JavaScript driver `make js-driver` installs (a client that multiplexes on one connection).
NODE_MODULES = Path(__file__).resolve().parents[2] / ".cache" / "js" / "node_modules"


def js_client_missing() -> str | None:
    """None when the JavaScript client can run, else why not."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not (NODE_MODULES / "gremlin").is_dir():
        return f"the gremlin npm package is not in {NODE_MODULES} (run `make js-driver`)"
    return None


class _Child:
    def __init__(self, spec: dict[str, Any], log: IO[bytes], client: str) -> None:
        if client == "js":
            script = Path(__file__).with_name("js_load.js")
            command = ["node", str(script), json.dumps(spec)]
            env = {**os.environ, "NODE_PATH": str(NODE_MODULES)}
        else:
            command = [sys.executable, str(Path(__file__)), json.dumps(spec)]
            env = dict(os.environ)
        self.spec = spec
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=env
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.strip())

    def wait_for(self, word: str, deadline: float) -> bool:
        while time.monotonic() < deadline:
            if word in self.lines:
                return True
            if self.process.poll() is not None and word not in self.lines:
                time.sleep(0.05)  # let the reader drain the pipe
                return word in self.lines
            time.sleep(0.01)
        return False

    def send(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def finish(self, timeout: float) -> None:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


Action = tuple[float, str, Callable[[], None]]


def run_cell(
    *,
    target: dict[str, Any],
    addresses: Sequence[str],
    workers: int,
    mix: str,
    warmup: float,
    duration: float,
    seed: int,
    work_dir: Path,
    actions: Sequence[Action] = (),
    add_host: dict[str, Any] | None = None,
    max_requests: int = 200_000,
    grace: float = 10.0,
    on_window: Callable[[str, list[int]], None] | None = None,
    events: list[tuple[float, str]] | None = None,
    client: str = "python",
) -> CellResult:
    """Run one cell: start the client processes, warm up, measure `duration` seconds.

    `actions` are (offset in s from the start of the window, label, callable) run by this
    process in order (a server killed, paused, added...); `events` receives (offset, label) with
    the time each action actually started. `on_window("start"|"stop", client pids)` brackets the
    window (CPU and RSS readings). `client="js"`: one JavaScript driver process sending every
    worker's requests on its single connection (read mix only).
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    groups = [list(range(workers))] if client == "js" else split_workers(workers)
    children: list[_Child] = []
    log_path = work_dir / "load.log"
    with log_path.open("ab") as log:
        for number, group in enumerate(groups):
            spec = {
                "target": target,
                "addresses": list(addresses),
                "workers": group,
                "mix": mix,
                "seed": seed,
                "out": str(work_dir / f"load-{number}.json"),
                "max_requests": max(1, max_requests // len(groups)),
                "grace": grace,
                "add_host": add_host if "url" not in target else None,
            }
            children.append(_Child(spec, log, client))
    try:
        ready_by = time.monotonic() + 60
        for child in children:
            if not child.wait_for("ready", ready_by):
                raise RuntimeError(f"a load process did not start; see {log_path}")
        start = time.monotonic() + warmup
        end = start + duration
        for child in children:
            child.send(json.dumps({"start": start, "end": end}))
        pids = [child.process.pid for child in children]
        time.sleep(max(0.0, start - time.monotonic()))
        if on_window is not None:
            on_window("start", pids)
        for offset, label, action in sorted(actions, key=lambda a: a[0]):
            time.sleep(max(0.0, start + offset - time.monotonic()))
            began = round(time.monotonic() - start, 3)
            try:
                action()
            except Exception as error:  # record it; the load goes on and stops by itself
                label = f"{label} (FAILED: {type(error).__name__}: {error})"
            if events is not None:
                events.append((began, label))
        time.sleep(max(0.0, end - time.monotonic()))
        if on_window is not None:
            on_window("stop", pids)
        done_by = end + grace + 15
        missing = [c for c in children if not c.wait_for("done", done_by)]
        if missing:
            raise RuntimeError(f"{len(missing)} load process(es) did not finish; see {log_path}")
    finally:
        for child in children:
            child.finish(timeout=max(1.0, 5.0))
    merged: dict[str, Any] = {"t": [], "lat": [], "ok": [], "srv": [], "kind": []}
    errors: Counter[str] = Counter()
    unfinished = 0
    for child in children:
        data = json.loads(Path(child.spec["out"]).read_text(encoding="utf-8"))
        for key in merged:
            merged[key].extend(data[key])
        errors.update(data["errors"])
        unfinished += int(data["unfinished"])
    return CellResult(
        duration=duration,
        errors=dict(errors),
        unfinished=unfinished,
        **merged,
    )


if __name__ == "__main__":
    child_main(json.loads(sys.argv[1]))
