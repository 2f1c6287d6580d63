"""The operator's work per client-pod event, against the number of pods it already knows.

A micro measurement (no apiserver, no sockets): the client-pod index
(:class:`gremlinlb.operator.targets.ClientPods`) and a real :class:`PushGroup` receive one
pod event after another (a pod turning ready, then a new pod and its deletion) with N pods
already known, and the CPU time per event is read. "Rebuild" is what every event cost before
issue 27: the whole index rebuilt from every cached pod (``ClientPods.reset``, the same
O(N) loop the controller ran on each event), for comparison.

    .venv/bin/python bench/operator_pod_events.py                 # 500, 2000, 5000 and 10000
    .venv/bin/python bench/operator_pod_events.py --pods 5000 --events 2000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gremlinlb.operator.push import PushGroup, SendOutcome
from gremlinlb.operator.targets import ClientPods


def pod(index: int, ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"app-{index}",
            "annotations": {"gremlinlb.io/admin-tls": "true"},
            "labels": {"topology.kubernetes.io/zone": f"zone-{index % 3}"},
        },
        "spec": {"containers": [{"name": "app"}, {"name": "gremlinlb-sidecar"}]},
        "status": {
            "podIP": f"10.{index // 65536}.{index // 256 % 256}.{index % 256}",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [{"name": "gremlinlb-sidecar", "restartCount": 0}],
        },
    }


async def never(url: str, token: str | None, body: bytes, time_limit: float) -> SendOutcome:
    raise AssertionError("no payload is set: nothing is pushed")


async def per_event(pods: int, events: int) -> tuple[float, float]:
    """(µs per event with the index, µs per event rebuilding from every pod)."""
    cached = {f"uid-{i}": pod(i) for i in range(pods)}
    index = ClientPods("ns", 9901, False)
    group = PushGroup("ns/c", never, asyncio.Semaphore(64))
    index.reset(cached)
    group.set_targets(index.targets)

    def event(n: int) -> None:
        i = n % pods
        if n % 2:  # a new pod, then its deletion: a target added and removed
            change = index.apply("uid-new", pod(pods) if n % 4 == 1 else None)
        else:  # an existing pod turning unready or ready again: zone counts move
            change = index.apply(f"uid-{i}", pod(i, ready=n % 4 == 0))
        if change.removed is not None:
            group.remove_target(change.removed)
        if change.added is not None:
            group.set_target(*change.added)

    start = time.process_time()
    for n in range(events):
        event(n)
    incremental = (time.process_time() - start) / events
    rebuilds = max(5, events // max(1, pods // 100))
    start = time.process_time()
    for _ in range(rebuilds):
        index.reset(cached)
    rebuild = (time.process_time() - start) / rebuilds
    await group.close()
    return incremental * 1e6, rebuild * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, action="append")
    parser.add_argument("--events", type=int, default=4000)
    args = parser.parse_args()
    print("| pods known | µs per pod event (index) | µs per pod event (rebuild, before) |")
    print("|---:|---:|---:|")
    for pods in args.pods or [500, 2000, 5000, 10000]:
        incremental, rebuild = asyncio.run(per_event(pods, args.events))
        print(f"| {pods} | {incremental:.1f} | {rebuild:,.0f} |")


if __name__ == "__main__":
    main()
