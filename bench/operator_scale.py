"""How fast the operator gets a host list change to many sidecars, and what it costs.

Starts the real test control plane (etcd + kube-apiserver, from `make k8s-bins`), applies the
CRD and manifests, runs `gremlinlb operator` as its own process with its real RBAC, and
simulates N sidecar admin APIs: one separate asyncio process listening on N loopback ports,
each answering `PUT /v1/hosts` like the sidecar does (bearer token, generations, 409) and
recording when each generation arrived. N client pods (created through the injection webhook)
point at those ports.

Creating the N client pods is timed too (and, before the operator starts, N pods without the
inject label, which the webhook's objectSelector skips: the cost without it): the creation
rate, each pod's creation (its create call waits for the injection webhook's admission answer,
then its status is written as a kubelet would: p50/p99 of the two calls bound the admission
latency during a rollout) and the
operator's CPU per client pod created (its ADDED and status MODIFIED events). After the
rounds, the idle operator's share of a core is read over ``--idle`` seconds. ``--baseline DIR``
runs the whole measurement first with the operator from another checkout's link tree (see
below), then with this one, for before/after in one run.

Each round rewrites the Service's EndpointSlice (one endpoint more, then one less) and measures
the time from just before that API call to the arrival of the new generation at 50%, 99% and
100% of the simulated sidecars. By default the simulated sidecars of this checkout *watch* the
operator (one long poll each over TLS, verified with the token Secret's ``ca.crt``, as
sidecar/watch.py does), so a change reaches them with no PUT; ``--push`` makes them wait for
pushes instead, and the ``--baseline`` operator (which has no watch) is always pushed to.
The operator's CPU time and RSS are read from /proc.

    .venv/bin/python bench/operator_scale.py                      # 500 sidecars, 10 rounds
    .venv/bin/python bench/operator_scale.py --sidecars 1000 --rounds 5
    .venv/bin/python bench/operator_scale.py --write-readme       # and update bench/README.md
    # before/after: a link tree of the base commit (git worktree add; make package there, or
    # symlink its files as build/__editable__* does) put first on the operator's PYTHONPATH
    .venv/bin/python bench/operator_scale.py --baseline /tmp/base-tree --sidecars 2000

All traffic is on loopback; the endpoint addresses in the slice are never contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BEGIN = "<!-- operator-scale:begin -->"
END = "<!-- operator-scale:end -->"


# -- the simulated sidecars (a child process) ----------------------------------------------------


def serve_fake_sidecars(
    count: int, token: str, ready_file: Path, watch: tuple[str, str] | None = None
) -> None:
    """``watch``: (the operator's watch endpoint URL, its CA file): each simulated sidecar
    long-polls it as the real one does (sidecar/watch.py) besides serving its admin API."""
    import ssl

    import aiohttp
    from aiohttp import web

    arrivals: dict[int, dict[int, float]] = {}  # generation -> port -> monotonic arrival
    current: dict[int, int] = {}
    hosts: dict[int, list[str]] = {}

    def make_app(me: dict[str, int]) -> web.Application:
        """One sidecar's admin API; ``me["port"]`` is filled in once its socket is bound."""

        async def put(request: web.Request) -> web.Response:
            port = me["port"]
            if request.headers.get("Authorization") != f"Bearer {token}":
                return web.json_response({"error": "token"}, status=401)
            body = json.loads(await request.text())
            generation = int(body["generation"])
            now = time.monotonic()
            held = current.get(port, 0)
            if generation < held:
                return web.json_response({"error": "stale", "generation": held}, status=409)
            current[port] = generation
            arrivals.setdefault(generation, {}).setdefault(port, now)
            hosts[port] = [str(h) for h in body.get("hosts") or ()]
            return web.json_response({"generation": generation, "added": [], "removed": []})

        async def get(_request: web.Request) -> web.Response:
            return web.json_response({"generation": current.get(me["port"], 0), "hosts": []})

        async def backends(_request: web.Request) -> web.Response:
            """What the sidecar's GET /readyz/backends answers (the operator's health read)."""
            held = hosts.get(me["port"], [])
            return web.json_response(
                {
                    "ready": bool(held),
                    "generation": current.get(me["port"], 0),
                    "healthy": len(held),
                    "hosts": {h: "healthy" for h in held},
                    "buffered": 0,
                },
                status=200 if held else 503,
            )

        app = web.Application()
        app.router.add_put("/v1/hosts", put)
        app.router.add_get("/v1/hosts", get)
        app.router.add_get("/readyz/backends", backends)
        return app

    async def watch_loop(session: aiohttp.ClientSession, url: str, pod: str, port: int) -> None:
        """One sidecar's long poll: its generation, pod name and backends; a list on 200."""
        failures = 0
        while True:
            held = hosts.get(port, [])
            body = {
                "generation": current.get(port, 0),
                "pod": pod,
                "health": {"ready": bool(held), "hosts": {h: "healthy" for h in held}},
            }
            headers = {"Authorization": f"Bearer {token}"}
            try:
                async with session.post(url, json=body, headers=headers) as response:
                    answer = await response.read()
                    status = response.status
            except (aiohttp.ClientError, OSError, TimeoutError):
                status, answer = 0, b""
            if status == 200:
                document = json.loads(answer)
                generation = int(document["generation"])
                if generation > current.get(port, 0):
                    current[port] = generation
                    arrivals.setdefault(generation, {}).setdefault(port, time.monotonic())
                    hosts[port] = [str(h) for h in document.get("hosts") or ()]
                failures = 0
            elif status != 204:
                failures += 1
                await asyncio.sleep(min(30.0, 0.5 * 2 ** min(failures, 6)))

    async def stats(request: web.Request) -> web.Response:
        generation = int(request.query["generation"])
        return web.json_response(list((arrivals.get(generation) or {}).values()))

    async def main() -> None:
        ports: list[int] = []
        runners = []
        for _ in range(count):
            me = {"port": 0}
            runner = web.AppRunner(make_app(me), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            me["port"] = _bound_port(site)
            ports.append(me["port"])
            runners.append(runner)
        control = web.Application()
        control.router.add_get("/stats", stats)
        control_runner = web.AppRunner(control, access_log=None)
        await control_runner.setup()
        control_site = web.TCPSite(control_runner, "127.0.0.1", 0)
        await control_site.start()
        ready = json.dumps({"ports": ports, "control": _bound_port(control_site)})
        if watch is None:
            await asyncio.to_thread(ready_file.write_text, ready)
            await asyncio.Event().wait()
            return
        tls = ssl.create_default_context(cafile=watch[1])
        connector = aiohttp.TCPConnector(limit=0, ssl=tls)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            tasks = [
                asyncio.create_task(watch_loop(session, watch[0], f"app-{i}", port))
                for i, port in enumerate(ports)
            ]
            await asyncio.to_thread(ready_file.write_text, ready)
            await asyncio.gather(*tasks)

    asyncio.run(main())


def _bound_port(site: Any) -> int:
    port: int = site._server.sockets[0].getsockname()[1]
    return port


# -- measuring -----------------------------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def proc_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def fetch(url: str) -> Any:
    from tests.operator_support import http

    status, body = http("GET", url, timeout=10)
    assert status == 200, body
    return body


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))  # nearest rank
    return ordered[index]


def run(args: argparse.Namespace, tree: Path | None = None) -> dict[str, Any]:
    """One whole measurement; ``tree``: the operator's code from that link tree instead."""
    from kubernetes import client as k8s

    from tests.devcluster import (
        ControlPlane,
        EndpointSpec,
        apply_endpoint_slice,
        create_namespace,
        create_service,
    )
    from tests.devcluster.objects import create_running_pod
    from tests.operator_support import (
        OperatorProcess,
        create_client_pod,
        sidecar_container,
        wait_for,
    )

    work = Path(tempfile.mkdtemp(prefix="gremlinlb-operator-bench-"))
    plane = ControlPlane(work / "cp")
    plane.start()
    fake: subprocess.Popen[bytes] | None = None
    operator: OperatorProcess | None = None
    try:
        plane.kubectl("apply", "-f", str(REPO / "crds"))
        plane.wait_established("gremlinclusters.gremlinlb.io")
        plane.kubectl("apply", "-f", str(REPO / "manifests"))
        api = plane.api_client("admin")
        namespace = create_namespace(api, prefix="bench-")
        service = create_service(api, namespace, "gremlin", 8182)
        base = [EndpointSpec(f"10.213.0.{i}") for i in range(10, 13)]
        apply_endpoint_slice(api, namespace, "gremlin", base, port=8182, owner=service)

        # The same pods with no gremlinlb.io/inject label (the webhook's objectSelector skips
        # them), before the operator runs: what creating them costs without it.
        bare_namespace = create_namespace(api, prefix="bench-bare-")

        def create_bare(index: int) -> None:
            create_running_pod(
                api,
                bare_namespace,
                f"bare-{index}",
                "127.0.0.1",
                containers=[k8s.V1Container(name="app", image="app:test"), sidecar_container(9901)],
            )

        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create_bare, range(args.sidecars)))
        bare_creation = time.monotonic() - started
        print(f"created {args.sidecars} pods without the webhook in {bare_creation:.1f} s")

        watching = tree is None and not args.push
        operator = OperatorProcess(
            plane,
            work / "operator.log",
            "--resync-interval",
            "3600",
            env={} if tree is None else {"PYTHONPATH": str(tree)},
            distribution=tree is None,  # the baseline (bc525e8) has no watch to serve
        )
        operator.start()
        # The simulated sidecars serve plain HTTP: the cluster must allow pushes to them.
        example = (REPO / "manifests/examples/gremlincluster.yaml").read_text()
        example = example.replace("  sidecar:\n", "  sidecar:\n    allowPlainHttpPush: true\n", 1)
        plane.kubectl("apply", "-n", namespace, "-f", "-", input_text=example)
        core = k8s.CoreV1Api(api)

        def token() -> str | None:
            try:
                secret = core.read_namespaced_secret("graph-gremlinlb-token", namespace)
            except k8s.exceptions.ApiException:
                return None
            return base64.b64decode((secret.data or {})["token"]).decode()

        secret = wait_for(token, 30, "the token Secret")
        ready_file = work / "fake.json"
        watch_flags: list[str] = []
        if watching:
            data = core.read_namespaced_secret("graph-gremlinlb-token", namespace).data or {}
            ca_file = work / "ca.crt"
            ca_file.write_bytes(base64.b64decode(data["ca.crt"]))
            url = f"{operator.distribution_url}/v1/watch/{namespace}/graph"
            watch_flags = ["--watch-url", url, "--ca-file", str(ca_file)]
        fake = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve-fake",
                str(args.sidecars),
                "--token",
                secret,
                "--ready-file",
                str(ready_file),
                *watch_flags,
            ],
            stdin=subprocess.DEVNULL,
        )
        info = wait_for(
            lambda: ready_file.exists() and json.loads(ready_file.read_text()),
            120,
            "the simulated sidecars",
        )
        ports: list[int] = info["ports"]
        stats_url = f"http://127.0.0.1:{info['control']}/stats"

        refusals: list[int] = []  # create calls the apiserver failed: the webhook timed out

        def create(item: tuple[int, int]) -> float:
            """Seconds to create one client pod (its create call waits for the webhook's
            answer) and mark it running, as a kubelet would. A create the apiserver fails
            because the webhook did not answer in time (``failurePolicy: Fail``) is counted
            and retried after a second, as a ReplicaSet controller retries; its time counts."""
            t0 = time.monotonic()
            for _attempt in range(30):
                try:
                    create_client_pod(api, namespace, f"app-{item[0]}", item[1])
                    break
                except k8s.exceptions.ApiException as error:
                    if "failed calling webhook" not in str(error.body):
                        raise
                    refusals.append(1)
                    time.sleep(1.0)
            else:
                raise RuntimeError(f"app-{item[0]}: refused by the webhook 30 times")
            return time.monotonic() - t0

        started = time.monotonic()
        cpu_creating = proc_cpu_seconds(operator.pid)
        with ThreadPoolExecutor(8) as pool:
            admissions = list(pool.map(create, enumerate(ports)))
        creation = time.monotonic() - started
        cpu_creating = proc_cpu_seconds(operator.pid) - cpu_creating
        print(f"created {len(ports)} client pods in {creation:.1f} s", flush=True)

        def status() -> dict[str, Any]:
            obj = k8s.CustomObjectsApi(api).get_namespaced_custom_object(
                "gremlinlb.io", "v1alpha1", namespace, "gremlinclusters", "graph"
            )
            assert isinstance(obj, dict)
            return obj.get("status") or {}

        def generation() -> int:
            return int(status().get("hostsGeneration") or 0)

        initial = wait_for(generation, 60, "an initial host list")
        wait_for(
            lambda: len(fetch(f"{stats_url}?generation={initial}")) == len(ports),
            120,
            "every simulated sidecar to hold the initial list",
            interval=0.2,
        )
        cpu_before = proc_cpu_seconds(operator.pid)
        wall_before = time.monotonic()
        rss_peak = proc_rss_mib(operator.pid)
        rounds: list[dict[str, float]] = []
        expected = initial
        for round_index in range(args.rounds):
            endpoints = list(base)
            if round_index % 2 == 0:
                endpoints.append(EndpointSpec("10.213.0.13"))
            t0 = time.monotonic()
            apply_endpoint_slice(api, namespace, "gremlin", endpoints, port=8182, owner=service)
            expected += 1
            deadline = t0 + 60
            arrivals: list[float] = []
            while time.monotonic() < deadline:
                arrivals = fetch(f"{stats_url}?generation={expected}")
                rss_peak = max(rss_peak, proc_rss_mib(operator.pid))
                if len(arrivals) == len(ports):
                    break
                time.sleep(0.05)
            if len(arrivals) < len(ports):
                raise RuntimeError(
                    f"round {round_index}: only {len(arrivals)} of {len(ports)} sidecars got "
                    f"generation {expected} within 60 s"
                )
            delays = [a - t0 for a in arrivals]
            rounds.append(
                {
                    "p50": percentile(delays, 0.50),
                    "p99": percentile(delays, 0.99),
                    "max": max(delays),
                }
            )
            print(
                f"round {round_index + 1}: 50% {rounds[-1]['p50']:.3f} s, "
                f"99% {rounds[-1]['p99']:.3f} s, 100% {rounds[-1]['max']:.3f} s",
                flush=True,
            )
            time.sleep(args.pause)
        wall = time.monotonic() - wall_before
        cpu = proc_cpu_seconds(operator.pid) - cpu_before
        in_sync = (status().get("sidecars") or {}).get("inSync")
        idle_cpu = proc_cpu_seconds(operator.pid)
        time.sleep(args.idle)
        idle_share = (proc_cpu_seconds(operator.pid) - idle_cpu) / args.idle
        in_sync_later = (status().get("sidecars") or {}).get("inSync")
        return {
            "operator": "baseline" if tree is not None else "this checkout",
            "mode": "watch" if watching else "push",
            "creation_seconds": creation,
            "create_p50": percentile(admissions, 0.50),
            "create_p99": percentile(admissions, 0.99),
            "webhook_refusals": len(refusals),
            "bare_creation_seconds": bare_creation,
            "cpu_per_pod_created": cpu_creating / len(ports),
            "idle_share": idle_share,
            "sidecars": len(ports),
            "rounds": rounds,
            "cpu_seconds": cpu,
            "wall_seconds": wall,
            "cpu_per_round": cpu / max(1, len(rounds)),
            "rss_mib": proc_rss_mib(operator.pid),
            "rss_peak_mib": rss_peak,
            "in_sync_reported": in_sync,
            "in_sync_after_idle": in_sync_later,
        }
    finally:
        if operator is not None:
            operator.stop()
        if fake is not None:
            fake.kill()
            fake.wait(10)
        plane.stop()


def report(results: list[dict[str, Any]], command: str) -> str:
    lines = [
        BEGIN,
        "```",
        command,
        "```",
        "",
        f"Measured on {datetime.date.today().isoformat()} ({platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}); kube-apiserver, etcd, "
        f"the operator, the simulated sidecars and this script share the machine.",
        "",
        "| operator | sidecars | rounds | 50% hold it (median) | 99% hold it (median) "
        "| 99% (worst round) | 100% (worst round) | CPU per change | creating the pods "
        "| the same pods without the webhook | pod creation p50 / p99 "
        "| creates refused (webhook timeout) | CPU per pod created "
        "| idle CPU | RSS (peak) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        rounds = result["rounds"]
        p99 = [r["p99"] for r in rounds]
        lines.append(
            f"| {result['operator']} ({result.get('mode', 'push')}) | "
            f"{result['sidecars']} | {len(rounds)} | "
            f"{statistics.median(r['p50'] for r in rounds):.3f} s | "
            f"{statistics.median(p99):.3f} s | {max(p99):.3f} s | "
            f"{max(r['max'] for r in rounds):.3f} s | "
            f"{result['cpu_per_round'] * 1000:.0f} ms | {result['creation_seconds']:.1f} s | "
            f"{result['bare_creation_seconds']:.1f} s | "
            f"{result['create_p50'] * 1000:.0f} / {result['create_p99'] * 1000:.0f} ms | "
            f"{result.get('webhook_refusals', 0)} | "
            f"{result['cpu_per_pod_created'] * 1000:.2f} ms | "
            f"{result['idle_share'] * 100:.1f}% | "
            f"{result['rss_mib']:.0f} MiB ({result['rss_peak_mib']:.0f}) |"
        )
    lines += [
        "",
        "CPU per change: the operator's CPU during the rounds over their number (one host list "
        "change pushed to every sidecar). Sidecars in sync by the GremlinCluster's status, 1 s "
        "after the last round and after the idle period: "
        + "; ".join(
            f"{r['operator']}: {r['in_sync_reported']} and {r['in_sync_after_idle']} "
            f"of {r['sidecars']}"
            for r in results
        )
        + ".",
        END,
    ]
    return "\n".join(lines)


def write_readme(section: str) -> None:
    readme = REPO / "bench" / "README.md"
    text = readme.read_text()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## Operator scale\n\n" + section + "\n"
    readme.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sidecars", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between rounds")
    parser.add_argument("--idle", type=float, default=15.0, help="seconds of idle measured")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a link tree of another checkout: measured first, its operator on PYTHONPATH",
    )
    parser.add_argument("--write-readme", action="store_true")
    parser.add_argument("--serve-fake", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--ready-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--watch-url", help=argparse.SUPPRESS)
    parser.add_argument("--ca-file", help=argparse.SUPPRESS)
    parser.add_argument(
        "--push",
        action="store_true",
        help="this checkout's simulated sidecars wait for pushes instead of watching (the "
        "baseline's always do: its operator has no watch)",
    )
    args = parser.parse_args()
    if args.serve_fake:
        watch = None if args.watch_url is None else (args.watch_url, args.ca_file)
        serve_fake_sidecars(args.serve_fake, args.token, args.ready_file, watch)
        return 0
    results = [] if args.baseline is None else [run(args, args.baseline)]
    results.append(run(args))
    command = (
        "python bench/operator_scale.py"
        + (f" --sidecars {args.sidecars}" if args.sidecars != 500 else "")
        + (f" --rounds {args.rounds}" if args.rounds != 10 else "")
        + ("" if args.baseline is None else " --baseline BASE-TREE")
        + (" --push" if args.push else "")
    )
    section = report(results, command)
    print(section)
    if args.write_readme:
        write_readme(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
