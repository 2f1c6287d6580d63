"""Admission latency while the operator's loop is saturated: the webhook on that loop (as kopf
served it before issue 27) against the webhook on its own thread (operator/admission.py).

A micro measurement on loopback, no apiserver: the same admission endpoint is served either
on the main loop or by :class:`AdmissionServer`'s thread, over TLS; meanwhile the main loop is
kept busy by the work a rollout used to cost per client-pod event at N known pods (the index
rebuilt from every pod, as bench/operator_pod_events.py measures), back to back. A client
thread sends ``--reviews`` AdmissionReviews one after another and times each answer.

    .venv/bin/python bench/operator_admission.py
    .venv/bin/python bench/operator_admission.py --pods 2000 --reviews 300
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import web
from gremlinlb.operator.admission import AdmissionServer, AdmissionView
from gremlinlb.operator.spec import ClusterSpec, parse_spec
from gremlinlb.operator.targets import ClientPods
from gremlinlb.operator.webhook import Injection
from operator_pod_events import pod  # beside this script

from gremlinlb import certificates as certs

REVIEW = json.dumps(
    {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u",
            "operation": "CREATE",
            "namespace": "ns",
            "object": {
                "metadata": {"name": "web", "labels": {"gremlinlb.io/inject": "graph"}},
                "spec": {"containers": [{"name": "web", "image": "web:1"}]},
            },
        },
    }
).encode()


async def unknown(namespace: str, name: str) -> tuple[ClusterSpec, list[str]]:
    raise AssertionError("every cluster is in the view")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(fraction * len(ordered) + 0.999) - 1))]


def reviews(url: str, tls: ssl.SSLContext, count: int, out: list[float]) -> None:
    for _ in range(count):
        request = urllib.request.Request(
            url, data=REVIEW, method="POST", headers={"Content-Type": "application/json"}
        )
        t0 = time.perf_counter()
        with urllib.request.urlopen(request, timeout=30, context=tls) as answer:
            answer.read()
        out.append(time.perf_counter() - t0)


async def measure(on_thread: bool, pods: int, count: int, busy: bool) -> list[float]:
    with tempfile.TemporaryDirectory() as directory:
        bundle = certs.generate(["127.0.0.1"])
        (Path(directory) / "c").write_bytes(bundle.cert_pem)
        (Path(directory) / "k").write_bytes(bundle.key_pem)
        server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_tls.load_cert_chain(Path(directory) / "c", Path(directory) / "k")
        client_tls = ssl.create_default_context(cadata=bundle.ca_pem.decode())
        from tests.operator_support import free_port

        port = free_port()
        server = AdmissionServer("127.0.0.1", port, server_tls, "/inject", Injection(), unknown)
        spec = parse_spec("graph", {"service": {"name": "gremlin"}})
        server.publish(AdmissionView({("ns", "graph"): (spec, ("10.0.0.1:8182",))}))
        runner = None
        if on_thread:
            await server.start()
        else:
            server.bind_main()
            runner = web.AppRunner(server.application(), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_tls).start()
        latencies: list[float] = []
        client = threading.Thread(
            target=reviews, args=(f"https://127.0.0.1:{port}/inject", client_tls, count, latencies)
        )
        client.start()
        cached = {f"uid-{i}": pod(i) for i in range(pods)}
        index = ClientPods("ns", 9901, False)
        while client.is_alive():
            if busy:
                index.reset(cached)  # one pod event's work before issue 27
            await asyncio.sleep(0)
        client.join()
        if runner is not None:
            await runner.cleanup()
        await server.stop()
        return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=5000)
    parser.add_argument("--reviews", type=int, default=200)
    args = parser.parse_args()
    print(f"| webhook served | main loop | admission p50 | p99 | ({args.reviews} reviews) |")
    print("|---|---|---:|---:|---|")
    for on_thread in (False, True):
        for busy in (False, True):
            latencies = asyncio.run(measure(on_thread, args.pods, args.reviews, busy))
            where = "own thread (after)" if on_thread else "operator's loop (before)"
            load = f"busy ({args.pods} pods' rebuild per event)" if busy else "idle"
            print(
                f"| {where} | {load} | {percentile(latencies, 0.5) * 1000:.1f} ms | "
                f"{percentile(latencies, 0.99) * 1000:.1f} ms | |"
            )


if __name__ == "__main__":
    main()
