"""The watch's certificate renewed while the operator runs: the real watch server over real TLS
on loopback, polled by clients that verify it against the push CA, as a sidecar does.

A certificate issued eleven months ago is due; after the renewal a new connection gets the new
certificate, and a poll held since before it keeps its connection (and its certificate) and is
answered when the list changes: no sidecar notices the renewal.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from cryptography import x509
from gremlinlb.operator.distribution import (
    DistributionServer,
    DistributionView,
    Snapshot,
    WatchCertificate,
    WatchReport,
)

from gremlinlb import certificates as certs
from tests.operator_support import free_port

pytestmark = pytest.mark.integration

NOW = datetime.datetime.now(datetime.UTC)
#: The push CA, made well before the watch's certificate (it lives five years).
PUSH_CA = certs.new_authority(
    "push-ca", NOW - datetime.timedelta(days=400), validity=datetime.timedelta(days=5 * 365)
)
CLUSTER = ("shop", "graph")
TOKEN = "cluster-token"


def view(generation: int) -> DistributionView:
    body = json.dumps({"generation": generation, "hosts": ["10.0.0.1:8182"]}).encode()
    return DistributionView(True, {CLUSTER: Snapshot(generation, body, TOKEN)})


@asynccontextmanager
async def watch_server(
    issued: datetime.datetime, polled: asyncio.Event | None = None
) -> AsyncIterator[tuple[DistributionServer, int]]:
    """A started watch server on loopback whose certificate was issued at ``issued``;
    ``polled`` is set when a poll's report arrives (on this loop)."""
    polled = asyncio.Event() if polled is None else polled

    def on_report(_: tuple[str, str], report: WatchReport) -> None:
        polled.set()

    server = DistributionServer(
        "127.0.0.1", free_port(), WatchCertificate(PUSH_CA, ["127.0.0.1"], issued), on_report
    )
    await server.start()
    server.publish(view(1))
    try:
        yield server, server.port
    finally:
        await server.stop()


def served_certificate(port: int) -> x509.Certificate:
    """The certificate a new connection gets, verified against the push CA for 127.0.0.1."""
    context = ssl.create_default_context(cadata=PUSH_CA.ca_pem.decode())
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def held_poll(port: int, held: int) -> tuple[bytes, x509.Certificate]:
    """One poll on a connection of its own (blocking: run it on a thread): the answer, and the
    certificate that connection got at its handshake."""
    context = ssl.create_default_context(cadata=PUSH_CA.ca_pem.decode())
    body = json.dumps({"generation": held, "pod": "app-1", "health": None}).encode()
    head = (
        "POST /v1/watch/shop/graph HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    answer = b""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=60) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        tls.sendall(head.encode() + body)
        while chunk := tls.recv(65536):
            answer += chunk
    return answer, x509.load_der_x509_certificate(der)


def test_a_fresh_watch_certificate_is_not_renewed() -> None:
    async def scenario() -> None:
        async with watch_server(NOW) as (server, port):
            before = served_certificate(port)
            assert await server.renew_certificate() is False
            assert served_certificate(port) == before

    asyncio.run(scenario())


def test_a_due_watch_certificate_is_renewed_without_dropping_a_held_poll() -> None:
    async def scenario() -> None:
        polled = asyncio.Event()
        async with watch_server(NOW - datetime.timedelta(days=340), polled) as (server, port):
            old = served_certificate(port)
            assert old.not_valid_after_utc - NOW < datetime.timedelta(days=30)
            # Nothing newer than generation 1: the poll is held.
            poll = asyncio.create_task(asyncio.to_thread(held_poll, port, 1))
            async with asyncio.timeout(30):
                await polled.wait()  # reported as the handler starts holding it
            # Runs on the watch's thread, after that handler's step that holds the poll.
            assert await server.renew_certificate() is True
            new = served_certificate(port)
            assert new != old
            assert new.not_valid_after_utc - NOW > datetime.timedelta(days=300)
            assert not poll.done()
            server.publish(view(2))
            async with asyncio.timeout(30):
                answer, held_on = await poll
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 "), head
            assert json.loads(body)["generation"] == 2
            assert held_on == old  # the same connection, begun before the renewal

    asyncio.run(scenario())
