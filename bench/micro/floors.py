"""Floors for the data-plane micro-benchmark: the least a Python proxy can cost here.

Each floor relays every client connection to a connection of its own to one backend, byte for
byte or message for message, with no parsing, picking, id rewriting, metrics or limits: what
is left is the cost of the event loop, the sockets and the WebSocket library alone. The
sidecar cannot cost less than the floor of the library it uses; the gap between a floor and
HAProxy is what no Python code above that library can win back.

    python floors.py tcp|aiohttp|picows|own[-frames] LISTEN_PORT BACKEND_HOST:PORT

- tcp: asyncio protocols, bytes relayed as they arrive (no WebSocket framing at all);
- aiohttp: an aiohttp WebSocket server and client, one message at a time (the sidecar's library);
- picows: the same with picows (a Cython WebSocket library for asyncio), frames relayed from
  its callbacks without a coroutine per message;
- own: aiohttp for both handshakes, then the sidecar's own frame reader (sidecar/wsread.py) on
  both transports and its frame writer (sidecar/wsout.py): no coroutine per message either.

With `-frames` (aiohttp-frames, picows-frames, own-frames) each relay also does the sidecar's
per-frame work on what it relays: `parse_request` on a request, `parse_response` and
`with_response_id` on an answer (sidecar/frames.py), so the libraries are compared carrying
the sidecar's real frames.

Not a product: bench only, never imported by gremlinlb.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop
from gremlinlb.sidecar import frames

_BINARY = frames.GRAPHBINARY_CHANNEL


def _request_work(payload: bytes | str) -> bytes | str:
    """What the sidecar does to every request frame before it is relayed (no picking)."""
    request = frames.parse_request(payload)
    relayed = request.relayed(request.request_id)
    return bytes(relayed) if isinstance(relayed, frames.Spliced) else relayed


def _answer_work(payload: bytes | str) -> Any:
    """What the sidecar does to every answer frame: its id and status, then the client's id."""
    header = frames.parse_response(payload, _BINARY)
    assert header.request_id is not None
    relayed = frames.with_response_id(payload, header, header.request_id)
    return bytes(relayed) if isinstance(relayed, frames.Spliced) else relayed


def _no_work(payload: Any) -> Any:
    return payload


class _TcpSide(asyncio.Protocol):
    """One side of a byte relay; `peer` is the other side's transport once it is connected."""

    def __init__(self) -> None:
        self.transport: asyncio.WriteTransport | None = None
        self.peer: _TcpSide | None = None
        self.pending: list[bytes] = []
        self.connecting: asyncio.Task[None] | None = None  # a client side's upstream connect

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio subclass

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self.pending.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


async def serve_tcp(port: int, backend: tuple[str, int], work: bool) -> None:
    loop = asyncio.get_running_loop()

    def accept() -> _TcpSide:
        client = _TcpSide()

        async def connect() -> None:
            _, upstream = await loop.create_connection(_TcpSide, *backend)
            upstream.peer, client.peer = client, upstream
            assert upstream.transport is not None
            for chunk in client.pending:
                upstream.transport.write(chunk)
            client.pending.clear()

        client.connecting = loop.create_task(connect())
        return client

    server = await loop.create_server(accept, "127.0.0.1", port)
    await server.serve_forever()


async def _serve_aiohttp_app(relay: Callable[[Any], Awaitable[Any]], port: int) -> None:
    """Serve `relay` at /gremlin on `port` until killed."""
    from aiohttp import web

    app = web.Application()
    app.router.add_get("/gremlin", relay)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


async def serve_aiohttp(port: int, backend: tuple[str, int], work: bool) -> None:
    from aiohttp import ClientSession, WSMsgType, web

    session = ClientSession()
    url = f"ws://{backend[0]}:{backend[1]}/gremlin"

    async def relay(request: web.Request) -> web.WebSocketResponse:
        client = web.WebSocketResponse(max_msg_size=0)
        await client.prepare(request)
        upstream = await session.ws_connect(url, max_msg_size=0)

        async def pump(source: Any, sink: Any, change: Callable[[Any], Any]) -> None:
            """Every data message of `source` to `sink`, then close `sink`."""
            async for message in source:
                if message.type is WSMsgType.BINARY:
                    await sink.send_bytes(change(message.data))
                elif message.type is WSMsgType.TEXT:
                    await sink.send_str(change(message.data))
            await sink.close()

        answers = asyncio.create_task(pump(upstream, client, _answer_work if work else _no_work))
        await pump(client, upstream, _request_work if work else _no_work)
        await answers
        return client

    await _serve_aiohttp_app(relay, port)


async def serve_picows(port: int, backend: tuple[str, int], work: bool) -> None:
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect, ws_create_server

    url = f"ws://{backend[0]}:{backend[1]}/gremlin"
    relayed = (WSMsgType.BINARY, WSMsgType.TEXT, WSMsgType.CONTINUATION)

    class Side(WSListener):  # type: ignore[misc,unused-ignore]  # Any without the bench extra
        change = staticmethod(_answer_work if work else _no_work)

        def __init__(self) -> None:
            self.peer: WSTransport | None = None
            self.pending: list[tuple[WSMsgType, bytes, bool]] = []
            self.connecting: asyncio.Task[None] | None = None

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            kind = frame.msg_type
            if kind in relayed:
                if self.peer is not None and work:
                    self.peer.send(kind, self.change(frame.get_payload_as_bytes()), frame.fin)
                elif self.peer is not None:
                    self.peer.send(kind, frame.get_payload_as_memoryview(), frame.fin)
                else:
                    self.pending.append((kind, frame.get_payload_as_bytes(), frame.fin))
            elif kind is WSMsgType.CLOSE:
                transport.disconnect()

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            if self.peer is not None:
                self.peer.disconnect()

    class ClientSide(Side):
        change = staticmethod(_request_work if work else _no_work)

        def on_ws_connected(self, transport: WSTransport) -> None:
            async def connect() -> None:
                upstream, listener = await ws_connect(Side, url)
                assert isinstance(listener, Side)
                listener.peer, self.peer = transport, upstream
                for kind, payload, fin in self.pending:
                    upstream.send(kind, payload, fin)
                self.pending.clear()

            self.connecting = asyncio.get_running_loop().create_task(connect())

    server = await ws_create_server(lambda request: ClientSide(), "127.0.0.1", port)
    await server.serve_forever()


async def serve_own(port: int, backend: tuple[str, int], work: bool) -> None:
    from aiohttp import ClientSession, web
    from gremlinlb.sidecar import wsread
    from gremlinlb.sidecar.wsout import FrameOutput

    session = ClientSession()
    url = f"ws://{backend[0]}:{backend[1]}/gremlin"

    class Side:
        """One socket's frames, written to the other socket as they are parsed."""

        def __init__(self, change: Callable[[Any], Any]) -> None:
            self.change = change
            self.out: FrameOutput | None = None  # the other socket
            self.own: FrameOutput | None = None  # this socket (pongs)
            self.closed = asyncio.get_running_loop().create_future()
            self.pending: list[Any] = []  # requests read before the upstream was connected

        def on_message(self, payload: bytes | str) -> None:
            if self.out is None:
                self.pending.append(self.change(payload))
            else:
                self.out.write((self.change(payload),))

        def on_ping(self, payload: bytes) -> None:
            assert self.own is not None
            self.own.control(wsread.OP_PONG, payload)

        def on_close(self, code: int | None, reason: str) -> None:
            if not self.closed.done():
                self.closed.set_result(None)

        def on_protocol_error(self, error: wsread.WebSocketProtocolError) -> None:
            self.on_close(error.code, str(error))

    async def relay(request: web.Request) -> web.WebSocketResponse:
        client = web.WebSocketResponse(max_msg_size=0)
        await client.prepare(request)
        requests = Side(_request_work if work else _no_work)
        answers = Side(_answer_work if work else _no_work)
        reader = wsread.FrameReader(requests, max_size=1 << 30, masked=True)
        request.protocol._payload_parser = reader  # as take_over does
        requests.own = answers.out = FrameOutput(client, mask=False)
        upstream = await session.ws_connect(url, max_msg_size=0)
        wsread.take_over(upstream, answers, 1 << 30)
        answers.own = requests.out = FrameOutput(upstream, mask=True)
        requests.out.write(requests.pending)
        await asyncio.wait((requests.closed, answers.closed), return_when=asyncio.FIRST_COMPLETED)
        for ws in (upstream, client):
            ws._writer.transport.close()  # type: ignore[union-attr]  # no closing handshake
        return client

    await _serve_aiohttp_app(relay, port)


FLOORS: dict[str, Callable[[int, tuple[str, int], bool], Awaitable[None]]] = {
    "tcp": serve_tcp,
    "aiohttp": serve_aiohttp,
    "picows": serve_picows,
    "own": serve_own,
}


def main() -> None:
    kind, port, backend = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    host, _, backend_port = backend.rpartition(":")
    library, _, work = kind.partition("-")
    uvloop.run(FLOORS[library](port, (host, int(backend_port)), work == "frames"))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
