"""CPU per request of the in-process client against gremlinpython's own connection, in one run.

Throughput ratios (`make bench`) swing by 2x on this shared 2-core machine; CPU time per request
of the client process does not depend on how long it waited for a core, so it tells a change in
the client's own cost apart from the machine's load. Starts 3 local Gremlin Servers; per
repetition, for every `--python NAME=ENV` (ENV: a PYTHONPATH holding another build of the
package, or '' for this venv's) and every contender, one worker process runs `--workers`
threads, each sending `--requests` reads (`g.V().limit(1).count()`: the server's own work is
small, the client's shows), and reports its user + system CPU over them:

| contender | connection |
|---|---|
| direct | gremlinpython's DriverRemoteConnection to server 1 (pool of 8) |
| in-process-1 | RoundRobinClientRemoteConnection over server 1 only (pool of 8) |
| in-process | RoundRobinClientRemoteConnection over the 3 servers (pool of 8 per server) |

    .venv/bin/python bench/client_cpu.py --python before=/tmp/gremlinlb-before --python after= \\
        --workers 64 --reps 3 [--profile OUT.txt]

`--profile` samples the last in-process worker with py-spy (200 Hz; the top functions).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from micro_bench import _commit, emit, free_base_port, summarize_profile, uptime_load

CONTENDERS = ("direct", "in-process-1", "in-process")


def worker(contender: str, addresses: list[str], workers: int, requests: int) -> None:
    """One cell, in its own process: print {cpu_s, requests, seconds, errors} as JSON."""
    from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
    from gremlin_python.process.anonymous_traversal import traversal

    from gremlinlb import RoundRobinClientRemoteConnection

    if contender == "direct":
        connection = DriverRemoteConnection(f"ws://{addresses[0]}/gremlin", "g", pool_size=8)
    else:
        chosen = addresses[:1] if contender == "in-process-1" else addresses
        connection = RoundRobinClientRemoteConnection(chosen, pool_size=8, max_workers=workers)
        deadline = time.monotonic() + 30
        while not all(connection.get_available().values()) and time.monotonic() < deadline:
            time.sleep(0.1)
    g = traversal().with_(connection)
    for _ in range(50):  # connections open, code paths warm
        g.V().limit(1).count().next()
    errors: list[BaseException] = []

    def loop() -> None:
        for _ in range(requests):
            try:
                g.V().limit(1).count().next()
            except Exception as error:  # counted, not raised: one failure ends no cell
                errors.append(error)

    threads = [threading.Thread(target=loop) for _ in range(workers)]
    before, began = os.times(), time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after, seconds = os.times(), time.perf_counter() - began
    connection.close()
    cpu = (after.user - before.user) + (after.system - before.system)
    result = {"cpu_s": cpu, "requests": workers * requests, "seconds": seconds}
    print(json.dumps({**result, "errors": len(errors)}), flush=True)


def run_cell(
    python_path: str,
    contender: str,
    addresses: list[str],
    args: argparse.Namespace,
    spy: Path | None,
) -> dict[str, float]:
    env = {**os.environ}
    if python_path:
        env["PYTHONPATH"] = python_path
    command = [sys.executable, __file__, "--worker", contender, ",".join(addresses)]
    command += ["--workers", str(args.workers), "--requests", str(args.requests)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    record = None
    if spy is not None:
        time.sleep(3)  # past the warm-up requests
        record = subprocess.Popen(
            [
                *(
                    str(Path(sys.executable).with_name("py-spy")),
                    "record",
                    "--pid",
                    str(process.pid),
                ),
                *("--rate", "200", "--format", "raw", "--output", str(spy), "--duration", "20"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    out, _ = process.communicate(timeout=600)
    if record is not None:
        record.wait(60)
    if process.returncode != 0:
        raise RuntimeError(f"{contender} worker failed ({process.returncode})")
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", action="append", default=[], metavar="NAME=PYTHONPATH")
    parser.add_argument("--workers", type=int, default=64, help="threads per worker process")
    parser.add_argument("--requests", type=int, default=150, help="reads per thread")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--profile", type=Path, help="py-spy the last in-process cell into this")
    parser.add_argument("--out", type=Path, help="write the markdown table here too")
    parser.add_argument(
        "--worker", nargs=2, metavar=("CONTENDER", "ADDRESSES"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1].split(","), args.workers, args.requests)
        return 0
    if args.workers < 1 or args.requests < 1 or args.reps < 1:
        parser.error("--workers, --requests and --reps must be at least 1")
    builds = [spec.partition("=")[::2] for spec in args.python] or [("this", "")]
    from gremlinlb.devservers import Fleet

    load_before = uptime_load()
    cpu: dict[tuple[str, str], list[float]] = {}
    errors = 0
    run_dir = Path(tempfile.mkdtemp(prefix="gremlinlb-client-cpu-"))
    with Fleet(3, base_port=free_base_port(3), run_dir=run_dir) as fleet:
        for rep in range(args.reps):
            for name, path in builds:
                for contender in CONTENDERS:
                    last = rep == args.reps - 1 and (name, path) == builds[-1]
                    spy = args.profile if last and contender == "in-process" else None
                    cell = run_cell(path, contender, fleet.addresses, args, spy)
                    errors += int(cell["errors"])
                    per = 1e6 * cell["cpu_s"] / cell["requests"]
                    cpu.setdefault((name, contender), []).append(per)
                    print(f"{name} {contender}: {per:.0f} µs CPU/request", flush=True)
    lines = [
        f"Client CPU per request (µs, user + system of the client process), {args.workers} "
        f"threads x {args.requests} reads, median of {args.reps} [range]; "
        f"{datetime.date.today().isoformat()}, commit {_commit()}, load average before "
        f"{load_before}, after {uptime_load()}; {errors} failed reads.",
        "",
        "```",
        "bench/client_cpu.py " + " ".join(sys.argv[1:]),
        "```",
        "",
        "| build | " + " | ".join(CONTENDERS) + " | CPU in-process ÷ direct |",
        "|---|" + "---:|" * (len(CONTENDERS) + 1),
    ]
    for name, _ in builds:
        medians = [statistics.median(cpu[(name, c)]) for c in CONTENDERS]
        cells = [
            f"{m:.0f} [{min(cpu[(name, c)]):.0f}-{max(cpu[(name, c)]):.0f}]"
            for m, c in zip(medians, CONTENDERS, strict=True)
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {medians[2] / medians[0]:.2f} |")
    if args.profile:
        profile = summarize_profile(args.profile).split("\n", 1)[1]  # its heading is the sidecar's
        lines += ["", "Profile (py-spy, 200 Hz) of the last in-process cell:", profile]
    return emit(lines, args.out)


if __name__ == "__main__":
    sys.exit(main())
