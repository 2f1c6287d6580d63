"""The scenarios, what each does to the servers, and what is measured from the requests.

| scenario | what happens (offsets from the start of the measured window) |
|---|---|
| steady | nothing: 3 healthy servers |
| add | a 4th server (running and loaded before the window) is put into rotation at FAULT_AT |
| kill | server 2 is SIGKILLed at FAULT_AT (it is restarted after the window) |
| hang | server 2 is SIGSTOPped at FAULT_AT and SIGCONTinued HANG seconds later |
| slow | server 2 sits behind a fault proxy (gremlinlb.devservers.faults) for the whole cell; from
  FAULT_AT for SLOW seconds the proxy passes its answers on SLOW_DELAY late (probes still pass) |
| outage | all 3 servers are SIGKILLed at FAULT_AT and started again OUTAGE seconds later |

Every metric comes from the recorded requests (start time, latency, outcome, the server that
answered); nothing is taken from a balancer's own counters.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from contenders import Contender
from load import READ_KINDS, Action, CellResult

from gremlinlb.devservers import Fleet
from gremlinlb.devservers.faults import FaultProxy

FAULT_AT = 3.0
HANG = 5.0
OUTAGE = 5.0
SLOW = 5.0
#: How late the slow server's answers arrive (issue 8: "one server's answers delayed by 150 ms").
SLOW_DELAY = 0.15
#: A request slower than this counts as stalled (disrupted) in the fault scenarios.
STALL_MS = 1000.0
#: The new server "has its share" once it serves this fraction of an even share in 1 s.
SHARE_REACHED = 0.8
BUCKET = 0.5  # seconds per point of the time series


@dataclass(frozen=True)
class Scenario:
    name: str
    duration: float  # measured seconds (normal run)
    quick_duration: float
    what: str


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("steady", 2.0, 1.5, "3 healthy servers"),
        Scenario("add", 8.0, 6.0, f"a 4th server is put into rotation at +{FAULT_AT:g} s"),
        Scenario("kill", 8.0, 6.0, f"server 2 is killed (SIGKILL) at +{FAULT_AT:g} s"),
        Scenario(
            "hang",
            10.0,
            10.0,
            f"server 2 is paused (SIGSTOP) at +{FAULT_AT:g} s for {HANG:g} s, then resumed",
        ),
        Scenario(
            "slow",
            10.0,
            10.0,
            f"server 2's answers are delayed by {1000 * SLOW_DELAY:g} ms (a proxy in front of it; "
            f"probes still pass) from +{FAULT_AT:g} s for {SLOW:g} s",
        ),
        Scenario(
            "outage",
            17.0,
            16.0,
            f"all 3 servers are killed at +{FAULT_AT:g} s and started again {OUTAGE:g} s later",
        ),
    )
}
FAULT_SCENARIOS = ("add", "kill", "hang", "slow", "outage")


@dataclass
class Plan:
    actions: list[Action]
    add_host: dict[str, Any] | None
    back: list[float]  # filled with monotonic times servers answered again (outage)
    #: run after the cell, whatever happened (in reverse order): what the set-up changed
    undo: list[Callable[[], None]] = field(default_factory=list)

    def undo_all(self) -> None:
        while self.undo:
            self.undo.pop()()


def plan(name: str, fleet: Fleet, contender: Contender) -> Plan:
    """The actions of scenario `name` for one cell, after any set-up it needs (the slow server's
    proxy, put in place of server 2 before the cell; `Plan.undo_all` takes it out again)."""
    back: list[float] = []
    if name == "steady":
        return Plan([], None, back)
    if name == "add":
        spec = contender.add_host_spec(FAULT_AT)
        actions: list[Action] = []
        if spec is None:
            actions.append((FAULT_AT, "4th server added", contender.add_server))
        else:  # the balancer lives in the client processes: they add it themselves
            actions.append((FAULT_AT, "4th server added", lambda: None))
        return Plan(actions, spec, back)
    victim = fleet[1]
    if name == "slow":
        proxy = FaultProxy(victim.address).start_in_thread()
        result = Plan([], None, back, undo=[proxy.stop_thread])
        try:
            contender.reroute(1, proxy.address)
        except Exception:
            result.undo_all()
            raise
        result.undo.append(lambda: contender.reroute(1, victim.address))

        def slow_down() -> None:
            proxy.answer_delay = SLOW_DELAY

        def speed_up() -> None:
            proxy.answer_delay = 0.0

        result.actions = [
            (FAULT_AT, f"server 2 slowed (+{1000 * SLOW_DELAY:g} ms)", slow_down),
            (FAULT_AT + SLOW, "server 2 fast again", speed_up),
        ]
        return result
    if name == "kill":
        return Plan([(FAULT_AT, "server 2 killed", victim.kill)], None, back)
    if name == "hang":
        return Plan(
            [
                (FAULT_AT, "server 2 paused", victim.pause),
                (FAULT_AT + HANG, "server 2 resumed", victim.resume),
            ],
            None,
            back,
        )
    if name == "outage":
        servers = list(fleet)[:3]

        def kill_all() -> None:
            threads = [threading.Thread(target=s.kill) for s in servers]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(10)

        def start_all() -> None:
            for server in servers:
                server.start()

            def watch(server: Any) -> None:
                try:
                    server.wait_ready(60)
                    back.append(time.monotonic())
                except Exception:
                    pass

            for server in servers:
                threading.Thread(target=watch, args=(server,), daemon=True).start()

        return Plan(
            [
                (FAULT_AT, "all servers killed", kill_all),
                (FAULT_AT + OUTAGE, "all servers started again", start_all),
            ],
            None,
            back,
        )
    raise ValueError(name)


def restore(name: str, fleet: Fleet, contender: Contender) -> None:
    """Bring the servers and the contender back to 3 healthy servers after scenario `name`."""
    if name == "add":
        contender.remove_spare()
    for server in list(fleet)[:3]:
        if server.is_paused():
            server.resume()
        if not server.is_running():
            server.start()
    for server in list(fleet)[:3]:
        server.wait_ready(90)


# -- metrics ---------------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def basic(result: CellResult, servers: int = 3) -> dict[str, Any]:
    """Throughput, latency percentiles, failures and the per-server share of one cell."""
    ok_lat = [lat for lat, ok in zip(result.lat, result.ok, strict=True) if ok]
    failed = len(result.ok) - len(ok_lat) + result.unfinished
    counts = [0] * max(servers, 1 + max(result.srv, default=-1))
    for tag, ok in zip(result.srv, result.ok, strict=True):
        if ok and tag >= 0:
            counts[tag] += 1
    main = counts[:servers]
    mean = sum(main) / len(main) if main else 0.0
    return {
        "requests": len(result.ok) + result.unfinished,
        "ok": len(ok_lat),
        "failed": failed,
        "throughput": len(ok_lat) / result.duration if result.duration else 0.0,
        "p50": percentile(ok_lat, 0.50),
        "p95": percentile(ok_lat, 0.95),
        "p99": percentile(ok_lat, 0.99),
        "max": max(ok_lat, default=None),
        "counts": counts,
        "max_over_mean": (max(main) / mean) if mean else None,
        "errors": result.errors,
        "unfinished": result.unfinished,
    }


def series(result: CellResult, servers: int) -> dict[str, Any]:
    """Per BUCKET: successful requests per server, failed requests, and the p50 and p99 latency
    of the successful ones (by start time)."""
    buckets = max(1, int(result.duration / BUCKET + 0.5))
    per_server = [[0] * buckets for _ in range(servers)]
    failed = [0] * buckets
    latencies: list[list[float]] = [[] for _ in range(buckets)]
    for t, lat, ok, tag in zip(result.t, result.lat, result.ok, result.srv, strict=True):
        b = min(buckets - 1, max(0, int(t / BUCKET)))
        if not ok:
            failed[b] += 1
            continue
        latencies[b].append(lat)
        if 0 <= tag < servers:
            per_server[tag][b] += 1
    return {
        "bucket": BUCKET,
        "per_server": per_server,
        "failed": failed,
        "p50": [percentile(x, 0.50) for x in latencies],
        "p99": [percentile(x, 0.99) for x in latencies],
    }


def _event(events: Sequence[tuple[float, str]], label_start: str) -> float | None:
    for offset, label in events:
        if label.startswith(label_start):
            return offset
    return None


def analyse(
    name: str,
    result: CellResult,
    events: Sequence[tuple[float, str]],
    back_offsets: Sequence[float],
) -> dict[str, Any]:
    """Scenario-specific figures; times are seconds after the fault (None: did not happen)."""
    out: dict[str, Any] = {}
    end = result.duration
    rows = list(zip(result.t, result.lat, result.ok, result.srv, strict=True))
    if name == "add":
        added = _event(events, "4th server") or FAULT_AT
        new = sorted(t for t, _, ok, tag in rows if ok and tag == 3 and t >= added)
        out["first_request_after"] = (new[0] - added) if new else None
        out["share_after"] = _time_to_share(rows, added, end)
        tail = [tag for t, _, ok, tag in rows if ok and t >= end - 2.0]
        out["new_server_share_last_2s"] = (tail.count(3) / len(tail)) if tail else None
        tagged = [tag for tag in tail if tag >= 0]
        counts = [tagged.count(i) for i in range(4)]
        out["max_over_mean_last_2s"] = (max(counts) / (sum(counts) / 4)) if sum(counts) else None
        return out
    fault = _event(events, "all servers killed" if name == "outage" else "server 2")
    fault = FAULT_AT if fault is None else fault
    # disrupted: failed, or slower than STALL_MS, and still running at (or after) the fault
    disrupted = [
        (t, t + lat / 1000.0)
        for t, lat, ok, _ in rows
        if (not ok or lat >= STALL_MS) and t + lat / 1000.0 >= fault
    ]
    out["failed"] = sum(1 for _, _, ok, _ in rows if not ok) + result.unfinished
    out["failed_pct"] = 100.0 * out["failed"] / max(1, len(rows) + result.unfinished)
    out["stalled"] = sum(
        1 for t, lat, ok, _ in rows if ok and lat >= STALL_MS and t + lat / 1000.0 >= fault
    )
    out["max_latency"] = max((lat for _, lat, ok, _ in rows if ok), default=None)
    still = result.unfinished > 0 or any(t >= end - 2.0 for t, _ in disrupted)
    # new requests are unaffected once no disrupted request starts any more
    started = [t for t, _ in disrupted if t >= fault]
    out["last_disrupted_start"] = None if still else (max(started) - fault if started else 0.0)
    # recovered: the last disrupted request has ended (answered or failed)
    out["recovered_after"] = (
        None if still else (max(done for _, done in disrupted) - fault if disrupted else 0.0)
    )
    out["failing_at_end"] = still
    out["throughput_before"] = sum(1 for t, _, ok, _ in rows if ok and t < fault) / fault
    out["throughput_last_2s"] = sum(1 for t, _, ok, _ in rows if ok and t >= end - 2.0) / 2.0
    if name in ("hang", "slow"):
        out.update(_gray(name, result, rows, fault, events))
    if name == "kill":
        out["throughput_during"] = sum(1 for t, _, ok, _ in rows if ok and fault <= t < end) / max(
            1e-9, end - fault
        )
    if name == "outage":
        back = min(back_offsets) if back_offsets else None
        out["servers_back_after"] = None if back is None else back - fault
        # requests that started before a server answered again and were answered after it:
        # they waited through the outage (in a buffer, or in a retry) and were served
        out["served_after_waiting"] = (
            0
            if back is None
            else sum(1 for t, lat, ok, _ in rows if ok and t < back <= t + lat / 1000.0)
        )
        if back is not None:
            out["failed_after_back"] = sum(1 for t, _, ok, _ in rows if not ok and t >= back + 2.0)
    return out


def _gray(
    name: str,
    result: CellResult,
    rows: Sequence[tuple[float, float, int, int]],
    fault: float,
    events: Sequence[tuple[float, str]],
) -> dict[str, Any]:
    """Issue 8's figures for a hung or slow server: throughput while it lasts against before it
    (the same cell, the same connections), latency of the requests started while it lasts, and
    the longest any read-only request took (failed ones too) over the whole window."""
    if name == "hang":
        ended = _event(events, "server 2 resumed") or (fault + HANG)
    else:
        ended = _event(events, "server 2 fast again") or (fault + SLOW)
    during = [lat for t, lat, ok, _ in rows if ok and fault <= t < ended]
    out: dict[str, Any] = {
        "throughput_during": len(during) / max(1e-9, ended - fault),
        "p50_during": percentile(during, 0.50),
        "p99_during": percentile(during, 0.99),
        "max_during": max(during, default=None),
    }
    earlier = [lat for t, lat, ok, _ in rows if ok and t < fault]
    before = len(earlier) / fault
    out["throughput_ratio"] = out["throughput_during"] / before if before else None
    out["p99_before"] = percentile(earlier, 0.99)
    reads = [lat for lat, kind in zip(result.lat, result.kind, strict=True) if kind in READ_KINDS]
    out["max_read_latency"] = max(reads, default=None)
    # a read still unanswered when the load stopped waiting took longer than anything recorded
    out["reads_unfinished"] = result.unfinished
    return out


def _time_to_share(
    rows: Sequence[tuple[float, float, int, int]], added: float, end: float
) -> float | None:
    """End of the first 0.5 s window after `added` where server 4 has SHARE_REACHED of 1/4."""
    step, width = 0.1, 0.5
    x = added
    while x + width <= end + 1e-9:
        window = [tag for t, _, ok, tag in rows if ok and x <= t < x + width]
        if window and window.count(3) / len(window) >= SHARE_REACHED / 4:
            return x + width - added
        x += step
    return None


def median_spread(
    values: Sequence[float | None],
) -> tuple[float | None, float | None, float | None]:
    """(median, min, max) of the values that exist."""
    present = [v for v in values if v is not None]
    if not present:
        return None, None, None
    return statistics.median(present), min(present), max(present)
