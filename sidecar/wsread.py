"""WebSocket input without a coroutine per message: frames parsed in `data_received`.

aiohttp reads a WebSocket message by message: its parser queues a WSMessage, and the owner's
`await ws.receive()` wakes a task per message. A backend connection only ever hands each
answer frame to its request, so after the handshake (aiohttp still does it: TLS, SigV4
headers, proxies, the upgrade's 429) the connection's protocol is given a `FrameReader`
instead of aiohttp's: the same `feed_data`/`feed_eof` aiohttp's ResponseHandler calls, but
every complete message goes straight to the owner's `on_message`. aiohttp keeps the socket,
its flow control, the heartbeat (reset by any data received) and the closing handshake: a
close frame and the end of the stream are also put on aiohttp's own queue, which is where
`ws.close()` waits for the server's answer.

Frames are read as RFC 6455 section 5 says: fragments joined (continuation frames), 7-, 16-
and 64-bit lengths, control frames (ping answered with a pong, pong ignored, close) between
fragments; a masked frame from a server, a reserved bit or opcode, a fragmented or long
control frame, bad UTF-8 in a text message, or a message over the size limit is a protocol
error that ends the connection, as in aiohttp.
"""

from __future__ import annotations

import struct
from typing import Any, Protocol

from aiohttp import WSCloseCode, WSMessage, WSMsgType
from aiohttp._websocket.helpers import websocket_mask

from gremlinlb.core.errors import GremlinLBError

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

_UNPACK_LEN2 = struct.Struct("!H").unpack_from
_UNPACK_LEN3 = struct.Struct("!Q").unpack_from
_NOT_SET = -1
_NOTHING_LEFT = (False, b"")
_FAILED = (True, b"")


class WebSocketProtocolError(GremlinLBError):
    """The peer broke RFC 6455; `code` is the close code to answer with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class MessageSink(Protocol):
    """The owner of a connection read by a FrameReader (called from data_received)."""

    def on_message(self, payload: bytes | str) -> None: ...

    def on_ping(self, payload: bytes) -> None: ...

    def on_close(self, code: int | None, reason: str) -> None:
        """A close frame (`code` None if it had none) or, with reason "", the end of the
        stream; nothing more is read."""

    def on_protocol_error(self, error: WebSocketProtocolError) -> None: ...


class FrameReader:
    """Parses server frames (unmasked) or client frames (masked) as bytes arrive."""

    __slots__ = ("_done", "_masked", "_max_size", "_opcode", "_partial", "_sink", "_tail")

    def __init__(self, sink: MessageSink, *, max_size: int, masked: bool = False) -> None:
        self._sink = sink
        self._max_size = max_size  # of a whole message, fragments joined
        self._masked = masked  # what the peer must send: clients mask, servers do not
        self._tail = b""  # the start of a frame not yet complete
        self._partial = bytearray()  # the fragments of a message so far
        self._opcode = _NOT_SET  # the opcode of the fragmented message in progress
        self._done = False

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        """Parse what `data` completes; (True, b"") once the stream is broken (aiohttp then
        drops whatever follows)."""
        if self._done:
            return _FAILED
        if self._tail:
            data = self._tail + data
            self._tail = b""
        try:
            self._parse(data)
        except WebSocketProtocolError as error:
            self._done = True
            self._sink.on_protocol_error(error)
            return _FAILED
        return _NOTHING_LEFT

    def feed_eof(self) -> None:
        if not self._done:
            self._done = True
            self._sink.on_close(None, "")

    def _parse(self, data: bytes) -> None:
        size = len(data)
        position = 0
        while not self._done:
            if size - position < 2:
                break
            first = data[position]
            second = data[position + 1]
            if first & 0x70:
                raise WebSocketProtocolError(
                    WSCloseCode.PROTOCOL_ERROR, "reserved bits set (no extension was agreed)"
                )
            length = second & 0x7F
            start = position + 2
            if length == 126:
                if size - start < 2:
                    break
                length = _UNPACK_LEN2(data, start)[0]
                start += 2
            elif length == 127:
                if size - start < 8:
                    break
                length = _UNPACK_LEN3(data, start)[0]
                start += 8
            if bool(second & 0x80) is not self._masked:
                raise WebSocketProtocolError(
                    WSCloseCode.PROTOCOL_ERROR,
                    "a masked frame from a server" if not self._masked else "an unmasked frame",
                )
            opcode = first & 0x0F
            if opcode >= OP_CLOSE:
                if not first & 0x80 or length > 125:
                    raise WebSocketProtocolError(
                        WSCloseCode.PROTOCOL_ERROR, "a control frame fragmented or over 125 bytes"
                    )
            elif len(self._partial) + length > self._max_size:
                raise WebSocketProtocolError(
                    WSCloseCode.MESSAGE_TOO_BIG,
                    f"a message over the {self._max_size}-byte limit",
                )
            key = b""
            if self._masked:
                if size - start < 4:
                    break
                key = data[start : start + 4]
                start += 4
            end = start + length
            if end > size:
                break
            payload = data[start:end]
            if key:
                payload = _unmask(key, payload)
            position = end
            self._frame(first & 0x80, opcode, payload)
        if position < size and not self._done:
            self._tail = data[position:]

    def _frame(self, fin: int, opcode: int, payload: bytes) -> None:
        if opcode in (OP_BINARY, OP_TEXT):
            if self._opcode != _NOT_SET:
                raise WebSocketProtocolError(
                    WSCloseCode.PROTOCOL_ERROR, "a new message before the last one ended"
                )
            if fin:
                self._deliver(opcode, payload)
            else:
                self._opcode = opcode
                self._partial += payload
        elif opcode == OP_CONTINUATION:
            if self._opcode == _NOT_SET:
                raise WebSocketProtocolError(
                    WSCloseCode.PROTOCOL_ERROR, "a continuation frame with no message started"
                )
            self._partial += payload
            if fin:
                opcode, self._opcode = self._opcode, _NOT_SET
                whole = bytes(self._partial)
                self._partial.clear()
                self._deliver(opcode, whole)
        elif opcode == OP_PING:
            self._sink.on_ping(payload)
        elif opcode == OP_PONG:
            pass  # any data resets aiohttp's heartbeat, a pong too
        elif opcode == OP_CLOSE:
            self._close(payload)
        else:
            raise WebSocketProtocolError(WSCloseCode.PROTOCOL_ERROR, f"unknown opcode {opcode}")

    def _deliver(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_BINARY:
            self._sink.on_message(payload)
            return
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as error:
            raise WebSocketProtocolError(
                WSCloseCode.INVALID_TEXT, "a text message that is not UTF-8"
            ) from error
        self._sink.on_message(text)

    def _close(self, payload: bytes) -> None:
        if len(payload) == 1:
            raise WebSocketProtocolError(WSCloseCode.PROTOCOL_ERROR, "a 1-byte close frame")
        code = _UNPACK_LEN2(payload, 0)[0] if payload else None
        try:
            reason = payload[2:].decode("utf-8")
        except UnicodeDecodeError as error:
            raise WebSocketProtocolError(
                WSCloseCode.INVALID_TEXT, "a close reason that is not UTF-8"
            ) from error
        self._done = True
        self._sink.on_close(code, reason)


def _unmask(key: bytes, payload: bytes) -> bytes:
    unmasked = bytearray(payload)
    websocket_mask(key, unmasked)
    return bytes(unmasked)


def take_over(ws: Any, sink: MessageSink, max_size: int) -> FrameReader:
    """Read `ws` (an aiohttp client WebSocket, after its handshake and before any frame of
    its own arrives) with a FrameReader from now on; `ws.receive()` then gets nothing."""
    reader = FrameReader(sink, max_size=max_size, masked=False)
    protocol = ws._writer.protocol  # aiohttp's ResponseHandler, which calls its parser
    protocol._payload_parser = reader
    return reader


def tell_aiohttp(ws: Any, code: int | None, reason: str) -> None:
    """Put the server's close frame (or, with `code` None and no reason, the end of the
    stream) on aiohttp's queue: `ws.close()` waits there for the server's half of the
    closing handshake, and would otherwise wait out its timeout."""
    queue = ws._reader  # aiohttp's WebSocketDataQueue
    if code is None and not reason:
        queue.feed_eof()
    else:
        queue.feed_data(WSMessage(WSMsgType.CLOSE, code, reason), 0)
