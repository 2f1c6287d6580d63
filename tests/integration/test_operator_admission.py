"""The injection webhook answers over real TLS on loopback while the operator's own event loop
is blocked: admission never waits behind push work (issue 27)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
import tempfile
import threading
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kopf
from gremlinlb.operator.admission import AdmissionServer, AdmissionView
from gremlinlb.operator.spec import ClusterSpec, parse_spec
from gremlinlb.operator.webhook import Injection

from gremlinlb import certificates as certs
from tests.operator_support import free_port

HOSTS = ("10.0.0.1:8182", "10.0.0.2:8182")


def review(cluster: str) -> bytes:
    pod = {
        "metadata": {"name": "web", "labels": {"gremlinlb.io/inject": cluster}},
        "spec": {"containers": [{"name": "web", "image": "web:1"}]},
    }
    request = {"uid": "u-1", "operation": "CREATE", "namespace": "ns", "object": pod}
    return json.dumps(
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    ).encode()


def tls_pair(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    bundle = certs.generate(["127.0.0.1"])
    (directory / "tls.crt").write_bytes(bundle.cert_pem)
    (directory / "tls.key").write_bytes(bundle.key_pem)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(directory / "tls.crt", directory / "tls.key")
    client = ssl.create_default_context(cadata=bundle.ca_pem.decode())
    return server, client


def admit(url: str, tls: ssl.SSLContext, body: bytes) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10, context=tls) as answer:
        return dict(json.loads(answer.read()))


@contextlib.asynccontextmanager
async def admission_server() -> AsyncIterator[
    tuple[AdmissionServer, str, ssl.SSLContext, ssl.SSLContext]
]:
    """A started server on loopback, its URL, a client TLS context that trusts it and the
    server's own TLS context."""
    with tempfile.TemporaryDirectory() as directory:
        server_tls, client_tls = tls_pair(Path(directory))
        port = free_port()
        server = AdmissionServer(
            "127.0.0.1", port, server_tls, "/inject-sidecar", Injection(), never_looked_up
        )
        await server.start()
        try:
            yield server, f"https://127.0.0.1:{port}/inject-sidecar", client_tls, server_tls
        finally:
            await server.stop()


async def never_looked_up(namespace: str, name: str) -> tuple[ClusterSpec, list[str]]:
    raise kopf.AdmissionError(f"no GremlinCluster named {name!r}", code=400)


def test_admission_is_answered_while_the_operators_loop_is_blocked() -> None:
    async def scenario() -> None:
        async with admission_server() as (server, url, client_tls, _):
            spec = parse_spec("graph", {"service": {"name": "gremlin"}})
            server.publish(AdmissionView({("ns", "graph"): (spec, HOSTS)}))
            answers: list[dict[str, Any]] = []
            answered = threading.Event()

            def creator() -> None:
                answers.append(admit(url, client_tls, review("graph")))
                answered.set()

            threading.Thread(target=creator, daemon=True).start()
            # The operator's loop is stuck (as under a burst of pushes): nothing on it runs
            # until the admission answer has arrived, or 20 s have passed.
            answered.wait(20)
            assert answered.is_set()
            response = answers[0]["response"]
            assert response["allowed"] is True
            patch = json.loads(base64.b64decode(response["patch"]))
            env = next(
                op["value"][0]["env"] for op in patch if op["path"] == "/spec/initContainers"
            )
            endpoints = {e["name"]: e.get("value") for e in env}["GREMLINLB_ENDPOINTS"]
            assert sorted(endpoints.split(",")) == sorted(HOSTS)

    asyncio.run(scenario())


def test_a_cluster_missing_from_the_view_is_looked_up_on_the_operators_loop() -> None:
    async def scenario() -> None:
        async with admission_server() as (_, url, client_tls, _):
            answer = await asyncio.to_thread(admit, url, client_tls, review("grpah"))
            assert answer["response"]["allowed"] is False
            assert answer["response"]["status"] == {
                "message": "no GremlinCluster named 'grpah'",
                "code": 400,
            }

    asyncio.run(scenario())


def test_a_renewed_certificate_is_served_from_the_next_connection_on() -> None:
    async def scenario() -> None:
        async with admission_server() as (server, url, _, server_tls):
            with tempfile.TemporaryDirectory() as directory:
                _, trusts_new = tls_pair(Path(directory))  # a new CA and certificate
                files = (Path(directory) / "tls.crt", Path(directory) / "tls.key")
                await server.run_on_thread(server_tls.load_cert_chain, *files)
                answer = await asyncio.to_thread(admit, url, trusts_new, review("grpah"))
            assert answer["response"]["uid"] == "u-1"

    asyncio.run(scenario())
