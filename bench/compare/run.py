"""`make bench`: connection-level balancing against gremlinlb, side by side, in one run.

Starts 4 real Gremlin Servers on loopback (3 in rotation, 1 spare for the scale-out scenario),
every contender of contenders.py, and drives the same load (load.py) through each contender in
turn: the steady cells interleaved contender by contender, repetition by repetition, then the
fault scenarios (scenarios.py). Writes bench/results/<date>.md and PNG plots (report.py) and,
for a full run, the summary section of bench/README.md.

    .venv/bin/python bench/compare/run.py             # the full run (~10 minutes on 2 cores)
    .venv/bin/python bench/compare/run.py --quick     # smoke run (~2-3 minutes)
    .venv/bin/python bench/compare/run.py --report-only .cache/bench/<stamp>   # re-render
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import report
import scenarios
from contenders import HEALTH, READINESS, Contender, all_contenders, sidecar_runnable
from load import POOL_SIZE, js_client_missing, run_cell
from servers import PEOPLE, CpuWindow, SeededFleet, load_average

from gremlinlb.devservers import DEFAULT_TINKERPOP_VERSION, port_is_free

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
RESULTS = REPO / "bench" / "results"
README = REPO / "bench" / "README.md"


@dataclass
class Options:
    quick: bool
    workers: list[int]
    write_workers: list[int]
    label: str | None
    js_workers: list[int]
    reps: int
    warmup: float
    jit_warmup: float
    steady_duration: float
    scenario_workers: int
    contenders: list[str]
    scenario_contenders: list[str]
    scenarios: list[str]
    seed: int
    profile: bool
    force_profile: bool
    write_readme: bool


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Options]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (~2-3 minutes)")
    parser.add_argument("--workers", help="steady read-mix worker counts (default 1,16,64)")
    parser.add_argument(
        "--write-workers", help="steady write-mix worker counts (default 16; 0: none)"
    )
    parser.add_argument(
        "--js-workers", help="concurrent requests of the JavaScript client (default 16; 0: none)"
    )
    parser.add_argument("--reps", type=int, help="repetitions of each steady cell (default 3)")
    parser.add_argument("--duration", type=float, help="measured seconds per steady cell")
    parser.add_argument("--warmup", type=float, help="unmeasured seconds before each window")
    parser.add_argument(
        "--jit-warmup",
        type=float,
        help="seconds of the read and write mixes sent straight to each server before the "
        "first cell (default 6, quick 2; 0: none)",
    )
    parser.add_argument("--contenders", help="comma-separated subset of the contenders")
    parser.add_argument(
        "--scenarios", help="comma-separated subset of add,kill,hang,slow,outage, or none"
    )
    parser.add_argument(
        "--scenario-workers",
        type=int,
        default=16,
        help="closed-loop workers in the fault scenarios (default 16; fewer leave the machine "
        "less CPU-bound, so a slow server's delay shows more)",
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the request mix")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    parser.add_argument(
        "--force-profile", action="store_true", help="profile the sidecar even if it met its aims"
    )
    parser.add_argument("--work-dir", help="where raw data and logs go (default .cache/bench/)")
    parser.add_argument("--report-only", metavar="DIR", help="re-render a finished run's data")
    parser.add_argument(
        "--no-readme", action="store_true", help="do not rewrite the section in bench/README.md"
    )
    parser.add_argument(
        "--label",
        help="name the results bench/results/<date>-<label>.md (and its plots), e.g. before-gray",
    )
    args = parser.parse_args(argv)
    names = [c.name for c in all_contenders()]
    chosen = args.contenders.split(",") if args.contenders else names
    unknown = set(chosen) - set(names)
    if unknown:
        parser.error(f"unknown contender(s) {sorted(unknown)}; known: {names}")
    known = list(scenarios.FAULT_SCENARIOS)
    wrong = {x for x in (args.scenarios or "").split(",") if x and x != "none"} - set(known)
    if wrong:
        parser.error(f"unknown scenario(s) {sorted(wrong)}; known: {known} (or none)")
    if args.label is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", args.label):
        parser.error(f"--label {args.label!r}: use letters, digits, '.', '_' or '-' (a file name)")
    if args.scenario_workers < 1:
        parser.error(f"--scenario-workers must be at least 1, got {args.scenario_workers}")
    quick = bool(args.quick)
    options = Options(
        quick=quick,
        workers=_ints(args.workers) or ([16] if quick else [1, 16, 64]),
        write_workers=[
            w
            for w in (
                _ints(args.write_workers)
                if args.write_workers is not None
                else ([] if quick else [16])
            )
            if w > 0
        ],
        label=args.label,
        js_workers=[w for w in (_ints(args.js_workers) or [16]) if w > 0],
        reps=args.reps or (1 if quick else 3),
        warmup=args.warmup if args.warmup is not None else 0.5,
        jit_warmup=args.jit_warmup if args.jit_warmup is not None else (2.0 if quick else 6.0),
        steady_duration=args.duration or _steady_default(quick),
        scenario_workers=args.scenario_workers,
        contenders=chosen,
        scenario_contenders=[
            n
            for n in chosen
            if n not in ("direct", "sidecar-1", "in-process-1")
            and (not quick or n in ("haproxy-rr", "sidecar"))
        ],
        scenarios=(
            [x for x in args.scenarios.split(",") if x and x != "none"]
            if args.scenarios
            else list(scenarios.FAULT_SCENARIOS)
        ),
        seed=args.seed,
        profile=not args.no_profile,
        force_profile=bool(args.force_profile),
        write_readme=not args.no_readme and not quick and args.contenders is None,
    )
    return args, options


def _steady_default(quick: bool) -> float:
    steady = scenarios.SCENARIOS["steady"]
    return steady.quick_duration if quick else steady.duration


def _ints(text: str | None) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()] if text else []


# -- machine -------------------------------------------------------------------------------------


def _first_line(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if text else "?"


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = 0
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory / 2**30, 1),
        "kernel": platform.release(),
        "os": _first_line(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "python": platform.python_version(),
        "java": _first_line(["java", "-version"]),
        "haproxy": _first_line(["haproxy", "-v"]),
        "tinkerpop": DEFAULT_TINKERPOP_VERSION,
    }


def busy_processes(exclude: set[int], seconds: float = 1.0, top: int = 8) -> list[dict[str, Any]]:
    """The processes using CPU right now (percent of one core over `seconds`), ours excluded."""

    def snapshot() -> dict[int, tuple[str, float]]:
        found: dict[int, tuple[str, float]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text(encoding="utf-8", errors="replace")
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            ticks = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            name = cmd.strip()[:90] or stat.split("(", 1)[1].rsplit(")", 1)[0]
            found[int(entry.name)] = (name, ticks)
        return found

    first = snapshot()
    time.sleep(seconds)
    second = snapshot()
    usage: list[dict[str, Any]] = []
    for pid, (name, ticks) in second.items():
        if pid in exclude or pid not in first:
            continue
        percent = 100.0 * (ticks - first[pid][1]) / seconds
        if percent >= 1.0:
            usage.append({"pid": pid, "cpu_pct": round(percent), "command": name})
    return sorted(usage, key=lambda u: -int(u["cpu_pct"]))[:top]


def free_base_port(count: int, start: int = 38181) -> int:
    for base in range(start, start + 2000, 10):
        if all(port_is_free(port) for port in range(base, base + count)):
            return base
    raise RuntimeError("no free loopback ports for the Gremlin Servers")


# -- one cell -----------------------------------------------------------------------------------


class Meter:
    """CPU and RSS of the balancer, the clients, the servers and everything else in a window."""

    def __init__(self, balancer: list[int], servers: list[int]) -> None:
        self.balancer = CpuWindow(list(balancer))
        self.servers = CpuWindow([*servers, os.getpid()])
        self.clients = CpuWindow([])
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    def __call__(self, phase: str, client_pids: list[int]) -> None:
        if phase == "start":
            self.clients.pids = list(client_pids)
            for window in (self.balancer, self.servers, self.clients):
                window.start()
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        else:
            self._stop.set()
            for window in (self.balancer, self.servers, self.clients):
                window.stop()

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            self.balancer.sample_rss()
            self.clients.sample_rss()

    def figures(self) -> dict[str, Any]:
        machine_pct = (
            100.0 * self.servers.machine_busy / self.servers.seconds / (os.cpu_count() or 1)
        )
        ours = self.balancer.cpu + self.servers.cpu + self.clients.cpu
        others = max(0.0, self.servers.machine_busy - ours)
        return {
            "balancer_cpu_pct": self.balancer.cpu_percent if self.balancer.pids else None,
            "balancer_rss_mib": self.balancer.peak_rss / 2**20 if self.balancer.pids else None,
            "client_cpu_pct": self.clients.cpu_percent,
            "client_rss_mib": self.clients.peak_rss / 2**20,
            "servers_cpu_pct": self.servers.cpu_percent,
            "machine_busy_pct": machine_pct,
            "others_cpu_pct": 100.0 * others / self.servers.seconds
            if self.servers.seconds
            else 0.0,
        }


class Bench:
    def __init__(self, options: Options, work_dir: Path) -> None:
        self.options = options
        self.work_dir = work_dir
        self.cells: list[dict[str, Any]] = []
        self.cell_number = 0
        self.fleet: SeededFleet | None = None
        self.contenders: list[Contender] = []
        self.skipped: dict[str, str] = {}
        self.failed_cells: list[str] = []
        self.log_lines: list[str] = []

    def say(self, text: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {text}"
        self.log_lines.append(line)
        print(line, file=sys.stderr, flush=True)

    def server_pids(self) -> list[int]:
        assert self.fleet is not None
        return [s.pid for s in self.fleet if s.pid is not None]

    def _warm_servers(self, servers: list[str]) -> None:
        """Send the read and write mixes straight to every server in rotation, unmeasured.

        Without it the JVMs are not equally warm: direct only ever reaches server 1, which its
        cells keep compiling hot, while a balancer's requests meet servers 2 and 3 still
        running interpreted code on a CPU-starved machine (measured: their median latency
        10-30x server 1's in the first balanced cells, which the outlier detection then
        rightly ejected)."""
        seconds = self.options.jit_warmup
        if seconds <= 0:
            return
        self.say(f"warming every server's JIT ({seconds:g} s of each mix, unmeasured)")
        for index, address in enumerate(servers):
            for mix in ("read", "write"):
                run_cell(
                    target={"url": f"ws://{address}/gremlin"},
                    addresses=servers,
                    workers=16,
                    mix=mix,
                    warmup=0.0,
                    duration=seconds / 2,
                    seed=self.options.seed,
                    work_dir=self.work_dir / f"warm-{index}-{mix}",
                )

    def cell(
        self,
        contender: Contender,
        scenario: str,
        workers: int,
        mix: str,
        rep: int,
        duration: float,
    ) -> None:
        """Run one cell; a cell that breaks is logged and skipped, the run goes on."""
        try:
            self._cell(contender, scenario, workers, mix, rep, duration)
        except Exception as error:
            self.say(f"  {contender.name} {scenario} {mix} w={workers} rep={rep} FAILED: {error}")
            self.failed_cells.append(
                f"{contender.name} {scenario} {mix} {workers} rep {rep}: {error}"
            )
            assert self.fleet is not None
            try:
                scenarios.restore(scenario, self.fleet, contender)
            except Exception as again:
                self.say(f"  restoring the servers failed too: {again}")

    def _cell(
        self,
        contender: Contender,
        scenario: str,
        workers: int,
        mix: str,
        rep: int,
        duration: float,
    ) -> None:
        assert self.fleet is not None
        plan = scenarios.plan(scenario, self.fleet, contender)
        try:
            self._measure(contender, scenario, workers, mix, rep, duration, plan)
        finally:
            plan.undo_all()

    def _measure(
        self,
        contender: Contender,
        scenario: str,
        workers: int,
        mix: str,
        rep: int,
        duration: float,
        plan: scenarios.Plan,
    ) -> None:
        assert self.fleet is not None
        if not scenarios_wait_healthy(contender, self.say):
            self.say(f"  {contender.name}: not every server healthy; measuring anyway")
        self.cell_number += 1
        idle = [p for c in self.contenders if c is not contender for p in c.pids()]
        meter = Meter(contender.pids(), [*self.server_pids(), *idle])
        events: list[tuple[float, str]] = []
        started = time.monotonic()
        window_start: list[float] = []

        def on_window(phase: str, pids: list[int]) -> None:
            if phase == "start":
                window_start.append(time.monotonic())
            meter(phase, pids)

        result = run_cell(
            target=contender.target(),
            addresses=self.fleet.addresses,
            workers=workers,
            mix="read" if mix == "js-read" else mix,
            client="js" if mix == "js-read" else "python",
            warmup=self.options.warmup,
            duration=duration,
            seed=self.options.seed + rep,
            work_dir=self.work_dir / f"cell-{self.cell_number:03d}",
            actions=plan.actions,
            add_host=plan.add_host,
            on_window=on_window,
            events=events,
        )
        back = [b - window_start[0] for b in plan.back] if window_start else []
        servers = 4 if scenario == "add" else 3
        data: dict[str, Any] = {
            "contender": contender.name,
            "scenario": scenario,
            "workers": workers,
            "mix": mix,
            "rep": rep,
            "duration": duration,
            "events": events,
            "back": back,
            "metrics": scenarios.basic(result, servers=3),
            "analysis": scenarios.analyse(scenario, result, events, back)
            if scenario != "steady"
            else {},
            "series": scenarios.series(result, servers),
            "resources": meter.figures(),
            "latencies": [lat for lat, ok in zip(result.lat, result.ok, strict=True) if ok],
        }
        m = data["metrics"]
        self.say(
            f"  {contender.name:<11} {scenario:<7} {mix:<5} w={workers:<3} rep={rep} "
            f"{m['throughput']:7.0f} req/s p50 {_ms(m['p50'])} p99 {_ms(m['p99'])} "
            f"failed {m['failed']} max/mean {_num(m['max_over_mean'])} "
            f"({time.monotonic() - started:.1f} s)"
        )
        if result.errors:
            top = Counter(result.errors).most_common(2)
            self.say(f"    errors: {top}")
        if scenario != "steady":
            scenarios.restore(scenario, self.fleet, contender)
        self.cells.append(data)

    # -- phases ----------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        info: dict[str, Any] = {"machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        info["load_before"] = load_average()
        self.say(
            f"machine: {info['machine']['cpu']}, {info['machine']['cores']} cores; "
            f"load average {info['load_before']}"
        )
        info["busy_before"] = busy_processes({os.getpid()})
        base = free_base_port(4)
        self.fleet = SeededFleet(4, base_port=base, run_dir=self.work_dir / "servers")
        self.say(f"starting 4 Gremlin Servers on 127.0.0.1:{base}-{base + 3} ...")
        self.fleet.start()
        try:
            return self._run_with_fleet(info)
        finally:
            for contender in self.contenders:
                try:
                    contender.stop()
                except Exception as error:  # keep stopping the others
                    self.say(f"stopping {contender.name}: {error}")
            self.fleet.stop()

    def _run_with_fleet(self, info: dict[str, Any]) -> dict[str, Any]:
        assert self.fleet is not None
        opts = self.options
        servers, spare = self.fleet.addresses[:3], self.fleet.addresses[3]
        for contender in all_contenders():
            if contender.name not in opts.contenders:
                continue
            if contender.name.startswith("sidecar"):
                reason = sidecar_runnable()
                if reason is not None:
                    self.skipped[contender.name] = f"`gremlinlb sidecar` is not runnable: {reason}"
                    self.say(self.skipped[contender.name])
                    continue
            try:
                contender.start(servers, spare, self.work_dir)
            except Exception as error:
                self.skipped[contender.name] = f"did not start: {error}"
                self.say(f"{contender.name} {self.skipped[contender.name]}")
                contender.stop()
                continue
            self.contenders.append(contender)
            self.say(f"started {contender.name}: {contender.description}")
        info["contenders"] = {c.name: c.description for c in self.contenders}
        info["skipped"] = self.skipped
        info["load_samples"] = []
        stop_sampling = threading.Event()

        def sample_load() -> None:
            while not stop_sampling.wait(15):
                info["load_samples"].append(load_average()[0])

        threading.Thread(target=sample_load, daemon=True).start()
        self._warm_servers(servers)
        run_started = time.monotonic()
        self.say("steady state (cells interleaved: every contender once per repetition)")
        js_missing = js_client_missing() if opts.js_workers else None
        if js_missing is not None:
            self.skipped["JavaScript client"] = js_missing
            self.say(f"no JavaScript client cells: {js_missing}")
        js_workers = [] if js_missing else opts.js_workers
        for rep in range(1, opts.reps + 1):
            mixes = (("read", opts.workers), ("write", opts.write_workers), ("js-read", js_workers))
            for mix, counts in mixes:
                for workers in counts:
                    for contender in self.contenders:
                        if mix in contender.mixes:
                            self.cell(contender, "steady", workers, mix, rep, opts.steady_duration)
        for name in opts.scenarios:
            scenario = scenarios.SCENARIOS[name]
            self.say(f"scenario {name}: {scenario.what}")
            duration = scenario.quick_duration if opts.quick else scenario.duration
            for contender in self.contenders:
                if contender.name in opts.scenario_contenders and contender.supports(name):
                    self.cell(contender, name, opts.scenario_workers, "read", 1, duration)
        info["failed_cells"] = self.failed_cells
        info["profile"] = None
        if opts.profile:
            try:
                info["profile"] = self.maybe_profile()
            except Exception as error:
                info["profile"] = {"skipped": f"profiling failed: {error}"}
        stop_sampling.set()
        info["seconds"] = time.monotonic() - run_started
        info["load_after"] = load_average()
        info["busy_after"] = busy_processes(
            {os.getpid(), *self.server_pids(), *[p for c in self.contenders for p in c.pids()]}
        )
        return info

    def maybe_profile(self) -> dict[str, Any] | None:
        """py-spy on the sidecar during one extra read cell at 16 workers, if it missed an aim."""
        sidecar = next((c for c in self.contenders if c.name == "sidecar"), None)
        if sidecar is None:
            return None
        verdict = report.sidecar_aims(self.cells)
        if verdict is None:
            return {"skipped": "no steady read cells at 16 workers for direct and the sidecar"}
        missed = report.sidecar_missed(self.cells)
        if self.options.force_profile and not missed:
            missed = ["nothing (--force-profile)"]
        if not missed:
            return {"skipped": "the sidecar met its latency and throughput aims", **verdict}
        verdict["missed"] = missed
        py_spy = Path(sys.executable).with_name("py-spy")
        if not py_spy.exists():
            return {"skipped": "py-spy is not installed (pip install '.[bench]')", **verdict}
        self.say("profiling the sidecar with py-spy (one extra read cell, 16 workers)")
        output = self.work_dir / "sidecar-profile.txt"
        duration = 6.0
        holder: dict[str, Any] = {}

        def record(phase: str, pids: list[int]) -> None:
            if phase != "start":
                return
            command = [
                str(py_spy), "record", "--pid", str(sidecar.pids()[0]), "--duration",
                f"{duration:g}", "--rate", "250", "--format", "raw", "--function",
                "--nonblocking", "--output", str(output),
            ]  # fmt: skip
            holder["process"] = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )

        meter_cpu = CpuWindow(sidecar.pids())

        def window(phase: str, pids: list[int]) -> None:
            record(phase, pids)
            (meter_cpu.start if phase == "start" else meter_cpu.stop)()

        assert self.fleet is not None
        run_cell(
            target=sidecar.target(),
            addresses=self.fleet.addresses,
            workers=16,
            mix="read",
            warmup=self.options.warmup,
            duration=duration + 1.0,
            seed=self.options.seed,
            work_dir=self.work_dir / "profile-cell",
            on_window=window,
        )
        process: subprocess.Popen[bytes] | None = holder.get("process")
        if process is None:
            return {"skipped": "py-spy did not start", **verdict}
        try:
            _, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            return {"skipped": "py-spy did not finish", **verdict}
        if process.returncode != 0 or not output.exists():
            return {"skipped": f"py-spy failed: {err.decode(errors='replace')[-300:]}", **verdict}
        return {
            **verdict,
            "sidecar_cpu_pct": meter_cpu.cpu_percent,
            **report.summarize_profile(output.read_text(encoding="utf-8")),
        }


def scenarios_wait_healthy(contender: Contender, say: Callable[[str], None]) -> bool:
    """Wait (bounded) until the contender sees every server healthy again."""
    limit = READINESS.interval * 2.5 if contender.name == "tcp-rr" else HEALTH.interval * 8
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if contender.healthy():
                return True
        except Exception as error:
            say(f"  {contender.name}: health query failed: {error}")
        time.sleep(0.2)
    return False


def _ms(value: float | None) -> str:
    return "   -  " if value is None else f"{value:6.2f}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    args, options = parse_args(argv)
    if args.report_only:
        data_dir = Path(args.report_only)
        data = json.loads((data_dir / "run.json").read_text(encoding="utf-8"))
        write_outputs(data, options.write_readme and not data["options"]["quick"])
        return 0
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work_dir = Path(args.work_dir) if args.work_dir else REPO / ".cache" / "bench" / stamp
    work_dir.mkdir(parents=True, exist_ok=True)
    bench = Bench(options, work_dir)
    command = "make bench" + (" BENCH_QUICK=1" if options.quick else "")
    extra = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--quick"]
    if extra:
        command += " BENCH_ARGS=" + shlex.quote(shlex.join(extra))
    info = bench.run()
    data = {
        "info": info,
        "options": options.__dict__,
        "command": command,
        "settings": {
            "health": HEALTH.__dict__,
            "readiness": READINESS.__dict__,
            "pool_size": POOL_SIZE,
            "people": PEOPLE,
            "fault_at": scenarios.FAULT_AT,
            "hang": scenarios.HANG,
            "slow": scenarios.SLOW,
            "slow_delay": scenarios.SLOW_DELAY,
            "outage": scenarios.OUTAGE,
            "stall_ms": scenarios.STALL_MS,
        },
        "cells": bench.cells,
        "log": bench.log_lines,
        "work_dir": str(work_dir),
    }
    (work_dir / "run.json").write_text(json.dumps(data), encoding="utf-8")
    bench.say(f"raw data: {work_dir / 'run.json'}")
    write_outputs(data, options.write_readme)
    return 0


def write_outputs(data: dict[str, Any], write_readme: bool) -> None:
    date = data["info"]["started"].split()[0]
    label = data["options"].get("label")
    name = date + ("-quick" if data["options"]["quick"] else "") + (f"-{label}" if label else "")
    RESULTS.mkdir(parents=True, exist_ok=True)
    markdown, summary = report.build(data, RESULTS, name)
    path = RESULTS / f"{name}.md"
    path.write_text(markdown, encoding="utf-8")
    print(f"results: {path}", file=sys.stderr)
    if write_readme:
        report.update_readme(README, summary)
        print(f"updated {README}", file=sys.stderr)
    print(summary)


if __name__ == "__main__":
    sys.exit(main())
