"""Sidecar RSS at rest (issue 26's aim: at most 50 MiB), several builds side by side in one run.

Starts 3 local Gremlin Servers, then, per repetition, for every `--gremlinlb NAME=PATH` and
for 1 and 3 hosts, a `gremlinlb sidecar` as `bench/micro_bench.py` starts it (its `Sidecar`:
healthy backends, 0.5 s later VmRSS), and stops it. Builds alternate within each repetition,
so load from elsewhere on the machine hits them all. What a sidecar imports at start is most
of its RSS: `python -X importtime -c 'import gremlinlb.sidecar.server'` lists it.

    .venv/bin/python bench/rss_at_rest.py --gremlinlb before=/tmp/gremlinlb-before \\
        --gremlinlb after=.venv/bin/gremlinlb --reps 5 --out bench/results/FILE.md
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import tempfile
from pathlib import Path

from micro_bench import Sidecar, _commit, emit, free_base_port, uptime_load

from gremlinlb.devservers import Fleet

HOSTS = (1, 3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--gremlinlb",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a gremlinlb executable to measure (repeatable; default: this checkout's as 'this')",
    )
    parser.add_argument("--reps", type=int, default=5, help="repetitions (default 5)")
    parser.add_argument("--out", type=Path, help="write the markdown table here too")
    args = parser.parse_args()
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    builds = [spec.partition("=")[::2] for spec in args.gremlinlb] or [
        ("this", str(Path(sys.executable).with_name("gremlinlb")))
    ]
    for name, path in builds:
        if not name or not Path(path).is_file():
            parser.error(f"--gremlinlb {name}={path}: give NAME=PATH of a gremlinlb executable")
    run_dir = Path(tempfile.mkdtemp(prefix="gremlinlb-rss-"))
    load_before = uptime_load()
    samples: dict[tuple[str, int], list[float]] = {(n, h): [] for n, _ in builds for h in HOSTS}
    with Fleet(3, base_port=free_base_port(3), run_dir=run_dir / "servers") as fleet:
        for _ in range(args.reps):
            for name, path in builds:
                for hosts in HOSTS:
                    sidecar = Sidecar(f"{name}-{hosts}", path, fleet.addresses[:hosts], run_dir, [])
                    try:
                        sidecar.start()
                        samples[(name, hosts)].append(sidecar.rss_at_rest)
                    finally:
                        sidecar.stop()
    lines = [
        f"Sidecar RSS at rest (MiB, VmRSS 0.5 s after its backends are healthy), median of "
        f"{args.reps} [range]; {datetime.date.today().isoformat()}, commit {_commit()}, load "
        f"average before {load_before}, after {uptime_load()}.",
        "",
        "```",
        "bench/rss_at_rest.py " + " ".join(sys.argv[1:]),
        "```",
        "",
        "| build | " + " | ".join(f"{h} host{'s' if h > 1 else ''}" for h in HOSTS) + " |",
        "|---|" + "---:|" * len(HOSTS),
    ]
    for name, path in builds:
        cells = []
        for hosts in HOSTS:
            values = samples[(name, hosts)]
            cells.append(f"{statistics.median(values):.1f} [{min(values):.1f}-{max(values):.1f}]")
        lines.append(f"| {name} (`{path}`) | " + " | ".join(cells) + " |")
    return emit(lines, args.out)


if __name__ == "__main__":
    sys.exit(main())
