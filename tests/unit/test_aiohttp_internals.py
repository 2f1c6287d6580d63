"""The aiohttp internals sidecar/wsout.py, wsread.py and inbound.py rely on are still there.

All three reach past aiohttp's public API for speed and for memory bounds (their docstrings say
why): `websocket_mask`, a WebSocket's `_writer` (its transport and protocol), the protocol's
`writing_paused` and `_drain_helper`, `WebSocketResponse._post_start` and `_parser`, the
request handler's `_payload_parser` (a reader with `feed_data`/`feed_eof`) and
`_message_tail`, and a client WebSocket's protocol's `_payload_parser` and its `_reader` queue
(wsread.py replaces the one and feeds the other the closing handshake). Their modules have
moved across aiohttp releases; the lock's pin hides that until an upgrade. Each check here
names what is missing, so an upgrade fails here first, loudly, and not as an AttributeError
under load (or, for inbound.py, a silent fallback to unmetered reads).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from typing import Any

import aiohttp
from aiohttp import web
from gremlinlb.sidecar.inbound import MeteredWebSocketResponse
from gremlinlb.sidecar.wsout import FrameOutput

from tests.helpers import serve_on_loopback


def missing(obj: object, *names: str) -> list[str]:
    return [name for name in names if not hasattr(obj, name)]


def test_websocket_mask_is_where_wsout_imports_it() -> None:
    helpers = importlib.import_module("aiohttp._websocket.helpers")
    assert callable(getattr(helpers, "websocket_mask", None)), (
        f"aiohttp {aiohttp.__version__}: aiohttp._websocket.helpers.websocket_mask is gone "
        "(sidecar/wsout.py masks client frames with it)"
    )
    payload = bytearray(b"abcd")
    helpers.websocket_mask(b"\x01\x02\x03\x04", payload)
    assert bytes(payload) == bytes(a ^ b for a, b in zip(b"abcd", b"\x01\x02\x03\x04", strict=True))


def test_post_start_keeps_the_signature_inbound_overrides() -> None:
    parameters = list(inspect.signature(web.WebSocketResponse._post_start).parameters)
    assert parameters == ["self", "request", "protocol", "writer"], (
        f"aiohttp {aiohttp.__version__}: WebSocketResponse._post_start{parameters} "
        "(sidecar/inbound.py overrides _post_start(request, protocol, writer))"
    )


async def _both_sides() -> tuple[dict[str, list[str]], bool, object]:
    """A real server and client WebSocket over loopback; what each side lacks."""
    lacks: dict[str, list[str]] = {}
    metered: list[bool] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = MeteredWebSocketResponse()
        await ws.prepare(request)
        protocol: Any = request.protocol
        lacks["server WebSocketResponse"] = missing(ws, "_writer", "_parser")
        lacks["request handler (aiohttp.web_protocol.RequestHandler)"] = missing(
            protocol, "_payload_parser", "_message_tail"
        )
        writer: Any = getattr(ws, "_writer", None)
        lacks["server ws._writer"] = missing(writer, "transport", "protocol")
        lacks["server ws._writer.protocol"] = missing(
            getattr(writer, "protocol", None), "writing_paused", "_drain_helper"
        )
        metered.append(ws.meter is not None)
        inner = getattr(ws.meter, "_inner", None)
        lacks["the reader behind _payload_parser"] = missing(inner, "feed_data", "feed_eof")
        output = FrameOutput(ws, mask=False)
        output.write([b"hello"])
        await output.drained()
        await ws.close()
        return ws

    runner, port = await serve_on_loopback("/ws", handler)
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"http://127.0.0.1:{port}/ws") as client,
        ):
            lacks["client ClientWebSocketResponse"] = missing(client, "_writer", "_reader")
            lacks["client ws._reader (WebSocketDataQueue)"] = missing(
                getattr(client, "_reader", None), "feed_data", "feed_eof"
            )
            client_writer: Any = getattr(client, "_writer", None)
            lacks["client ws._writer"] = missing(client_writer, "transport", "protocol")
            lacks["client ws._writer.protocol"] = missing(
                getattr(client_writer, "protocol", None),
                "writing_paused",
                "_drain_helper",
                "_payload_parser",  # replaced by sidecar/wsread.py's FrameReader
            )
            FrameOutput(client, mask=True).write([b"masked"])
            message = await client.receive(timeout=5)
    finally:
        await runner.cleanup()
    return lacks, bool(metered and metered[0]), message.data


def test_the_writer_and_reader_internals_are_there() -> None:
    lacks, metered, received = asyncio.run(_both_sides())
    gone = {where: names for where, names in lacks.items() if names}
    assert gone == {}, f"aiohttp {aiohttp.__version__} lacks what the sidecar uses: {gone}"
    assert metered, "MeteredWebSocketResponse found no _payload_parser to meter"
    assert received == b"hello", "FrameOutput's frame did not reach the client"
