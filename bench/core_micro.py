"""The per-request Python of the balancer and of the sidecar's frames, compiled against pure.

Runs each case in a worker process of this venv's gremlinlb twice per repetition: as installed
(compiled by mypyc when `make package` could: `gremlinlb --version`) and with GREMLINLB_PURE=1
(the same modules' Python source), alternating, so load from elsewhere on the machine hits both.
Gives nanoseconds per operation, the minimum and the median over the repetitions, and
pure ÷ compiled. Every case is a bounded loop of --ops operations, no I/O, one thread.

    .venv/bin/python bench/core_micro.py --reps 5 --out bench/results/FILE.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

CASES = {
    "acquire+finish, round robin, 3 hosts": "round_robin",
    "acquire+finish, least in flight, 3 hosts": "least_in_flight",
    "acquire+finish, peak-EWMA cost, 3 hosts": "peak_ewma",
    "acquire+finish of a read, 3 hosts": "read",
    "parse_request, GraphBinary g.inject(1)": "request_binary",
    "parse_request, GraphSON g.inject(1)": "request_graphson",
    "parse_response, GraphBinary": "response_binary",
    "parse_response, GraphSON": "response_graphson",
    "backend request id (IdSource.next)": "ids",
}


def _balancer_case(policy: str, write: bool) -> Callable[[], object]:
    from gremlinlb.core import Balancer, BalancerSettings, Lease, Outcome, Policy

    now = [100.0]

    def clock() -> float:
        now[0] += 0.0001
        return now[0]

    settings = BalancerSettings(policy=Policy(policy))
    balancer = Balancer(["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"], settings, clock=clock)
    for endpoint in balancer.endpoints():
        balancer.record_probe(endpoint, ok=True)

    def once() -> None:
        lease = balancer.acquire(0, write=write)
        assert isinstance(lease, Lease)
        balancer.finish(lease, Outcome.SUCCESS)

    return once


def _frames() -> tuple[bytes, bytes]:
    from gremlin_python.driver.request import RequestMessage
    from gremlin_python.driver.serializer import GraphBinarySerializersV1, GraphSONSerializersV3d0
    from gremlin_python.process.traversal import Bytecode

    def message() -> RequestMessage:  # one each: a serializer may change what it was given
        bytecode = Bytecode()
        bytecode.add_step("inject", 1)
        return RequestMessage("traversal", "bytecode", {"gremlin": bytecode, "aliases": {"g": "g"}})

    request_id = "5a8c1f2e-6b1d-4d4e-9a51-0f6a0d4c2b11"
    binary = GraphBinarySerializersV1().serialize_message(request_id, message())
    graphson = GraphSONSerializersV3d0().serialize_message(request_id, message())
    return bytes(binary), bytes(graphson)


def _frame_case(name: str) -> Callable[[], object]:
    from gremlinlb.sidecar.frames import error_response, parse_request, parse_response

    binary, graphson = _frames()
    frame = binary if name.endswith("binary") else graphson
    request = parse_request(frame)
    if name.startswith("request"):
        return lambda: parse_request(frame)
    answer = error_response(request.channel, request.request_id, 200, "")
    channel = request.channel
    return lambda: parse_response(answer, channel)


def make_case(name: str) -> Callable[[], object]:
    if name in ("round_robin", "least_in_flight", "peak_ewma"):
        return _balancer_case(name, write=True)
    if name == "read":
        return _balancer_case("peak_ewma", write=False)
    if name == "ids":
        from gremlinlb.sidecar.ids import IdSource

        source = IdSource()
        return lambda: source.next()
    return _frame_case(name)


def worker(ops: int) -> None:
    """One timing per case, printed as JSON: name -> ns per operation."""
    from gremlinlb import native

    found: dict[str, object] = {"build": native.describe()}
    for key in CASES.values():
        case = make_case(key)
        for _ in range(ops // 10):  # warm-up
            case()
        started = time.perf_counter_ns()
        for _ in range(ops):
            case()
        found[key] = (time.perf_counter_ns() - started) / ops
    print(json.dumps(found))


def run_worker(pure: bool, ops: int) -> dict[str, object]:
    env = {**os.environ, "GREMLINLB_PURE": "1" if pure else "0"}
    done = subprocess.run(
        [sys.executable, __file__, "--worker", "--ops", str(ops)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=600,
    )
    found: dict[str, object] = json.loads(done.stdout)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="repetitions, alternating builds")
    parser.add_argument("--ops", type=int, default=20_000, help="operations per case and run")
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.ops)
        return 0
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    runs: dict[bool, list[dict[str, object]]] = {False: [], True: []}
    for _ in range(args.reps):
        for pure in (False, True):
            runs[pure].append(run_worker(pure, args.ops))
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    builds = {pure: str(found[0]["build"]) for pure, found in runs.items()}
    lines = [
        f"Builds: installed = {builds[False]}; GREMLINLB_PURE=1 = {builds[True]}.",
        f"{args.reps} repetitions x {args.ops:,} operations per case, alternating builds; load "
        f"average before {' '.join(load_before)}, after {' '.join(load_after)}.",
        "",
        "| case | compiled ns/op (min, median) | pure ns/op (min, median) | pure ÷ compiled "
        "(min, median) |",
        "|---|---:|---:|---:|",
    ]
    for title, key in CASES.items():
        compiled = [float(str(found[key])) for found in runs[False]]
        source = [float(str(found[key])) for found in runs[True]]
        lines.append(
            f"| {title} | {min(compiled):,.0f}, {statistics.median(compiled):,.0f} | "
            f"{min(source):,.0f}, {statistics.median(source):,.0f} | "
            f"{min(source) / min(compiled):.2f}, "
            f"{statistics.median(source) / statistics.median(compiled):.2f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
