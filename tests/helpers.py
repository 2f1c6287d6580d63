"""Small helpers shared by the integration tests."""

import base64
import contextlib
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any

from aiohttp import web
from gremlin_python.driver.client import Client as GremlinClient
from gremlin_python.process.graph_traversal import GraphTraversalSource, __

from gremlinlb.core import EventKind, HostEvent, HostState
from gremlinlb.devservers import GremlinServerProcess
from gremlinlb.devservers.faults import FaultProxy


def fake_aws_credentials(
    monkeypatch: Any, key_id: str, secret: str, token: str | None = None
) -> None:
    """Fake credentials through botocore's environment source alone (no config or shared
    credentials file, no instance metadata: nothing leaves loopback), read afresh by
    gremlinlb.sigv4's next signature."""
    from gremlinlb import sigv4

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    if token is not None:
        monkeypatch.setenv("AWS_SESSION_TOKEN", token)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    sigv4.reset()


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds saying what never came."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.05)


@contextlib.contextmanager
def held_request(
    servers: Sequence[GremlinServerProcess], name: str
) -> Iterator[tuple[str, Callable[[], None]]]:
    """A script that runs on whichever of `servers` gets it until released (or that server's
    30 s evaluation timeout), then answers `name`, and the release: a request still in flight
    at a spec's next step however busy the machine, where a `Thread.sleep` ends on its own."""
    label = f"release-{name}"
    script = f"while (!g.V().hasLabel('{label}').hasNext()) {{ Thread.sleep(10) }}; '{name}'"
    direct = [GremlinClient(server.url, "g") for server in servers]

    def on_each(statement: str) -> None:
        for client in direct:
            client.submit(statement).all().result(30)

    try:
        yield script, lambda: on_each(f"g.addV('{label}').iterate()")
    finally:
        try:
            with contextlib.suppress(Exception):  # a server the spec killed, say
                on_each(f"g.V().hasLabel('{label}').drop()")
        finally:
            for client in direct:
                client.close()


def upgrade_raw_websocket(sock: socket.socket, host_port: str) -> None:
    """Upgrade a connected bare socket to a WebSocket on /gremlin and read the 101 answer up to
    its last header byte, so a spec decides exactly what is sent and read afterwards."""
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    sock.sendall(
        (
            f"GET /gremlin HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode("ascii")
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, "the sidecar closed the connection during the upgrade"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head


@contextlib.contextmanager
def proxies_in_front(
    servers: Sequence[GremlinServerProcess], **faults: Any
) -> Iterator[list[FaultProxy]]:
    """A loopback fault proxy in front of each server (a pass-through without `faults`), its
    counters telling what it relayed; stopped on the way out."""
    proxies = [FaultProxy(s.address, **faults).start_in_thread() for s in servers]
    try:
        yield proxies
    finally:
        for proxy in proxies:
            proxy.stop_thread()


def taken_out(events: Iterable[HostEvent]) -> list[tuple[str, str, str]]:
    """(address, state, reason) of each time `events` say a host went down or was ejected."""
    return [
        (e.endpoint.address, e.state.value, e.reason)
        for e in events
        if e.kind is EventKind.STATE_CHANGED and e.state in (HostState.EJECTED, HostState.DOWN)
    ]


def masked_frame_head(size: int, first: int = 0x82) -> bytes:
    """A client WebSocket frame's header before its mask: `first` (FIN and opcode), then the
    mask bit and the payload's length in 7, 16 or 64 bits."""
    if size < 126:
        return struct.pack("!BB", first, 0x80 | size)
    if size < 65536:
        return struct.pack("!BBH", first, 0x80 | 126, size)
    return struct.pack("!BBQ", first, 0x80 | 127, size)


async def serve_on_loopback(
    path: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> tuple[web.AppRunner, int]:
    """An aiohttp app answering GET `path` with `handler` on a free loopback port: its runner
    (to clean up) and the port."""
    app = web.Application()
    app.router.add_get(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


def name_servers(servers: Iterable[GremlinServerProcess]) -> None:
    """One `server` vertex per server holding its address, so an answer tells who ran it."""
    for server in servers:
        server.add_name_vertex()


def endless_read(
    g: GraphTraversalSource, server_timeout_ms: int, never: object = 2
) -> GraphTraversalSource:
    """A read-only traversal that loops until the server's evaluationTimeout stops it.

    Slow by construction, on any machine: its one traverser (1) repeats until it equals
    `never`, which it never does. `never` may be large, so that the request stands out.
    """
    looping: GraphTraversalSource = (
        g.with_("evaluationTimeout", server_timeout_ms)
        .inject(1)
        .repeat(__.identity())
        .until(__.is_(never))
    )
    return looping
