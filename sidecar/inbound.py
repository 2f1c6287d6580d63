"""Counting the bytes a client makes the sidecar hold before a frame of it is complete.

aiohttp reads a client's socket whenever data arrives and keeps every byte of an unfinished
frame (up to `max_msg_size`) inside its WebSocket reader; the handler sees nothing until the
frame is complete. So a client can make the sidecar hold up to `max_msg_size` bytes without
sending a single request, and many clients many times that: none of it reached the memory
budget. aiohttp offers no hook for it (its reader is compiled, its buffers private), so the
meter sits between aiohttp's protocol and its reader, reads only the frame headers of what
goes through (lengths, opcode, FIN), and reports how many payload bytes of data messages the
reader holds that the handler has not received yet: the unfinished frame, and complete ones
still queued. The handler takes them off one message at a time as it receives them.

Lowering aiohttp's `max_msg_size` alone would not do: it bounds one client, not their sum,
and a budget share per client would refuse legitimate large requests whenever many clients
are connected. Metering counts what is actually held, against the one budget.

What the meter relies on (aiohttp 3.14, pinned by the lock files): `WebSocketResponse`
creates its reader in `_post_start` and hands it to the request's protocol, which calls
`feed_data(data) -> (eof, tail)` and `feed_eof()` on whatever `_payload_parser` it holds; data
a client sent before the reader existed waits in the protocol's `_message_tail`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp import web
from gremlinlb.sidecar.bigframes import (
    LARGE_FRAME_BYTES,
    FrameAssembly,
    placeholder_frame,
    placeholder_token,
)

log = logging.getLogger(__name__)

# (eof, tail) as the protocol expects from a parser: nothing more, go on reading.
_GO_ON = (False, b"")
_DATA_OPCODES = (0x0, 0x1, 0x2)  # continuation, text, binary
_OP_TEXT = 0x1
_OP_BINARY = 0x2


def _header_size(head: bytes) -> int | None:
    """The size of the frame header starting `head` (None: too few bytes to tell)."""
    if len(head) < 2:
        return None
    flag = head[1] & 0x7F
    return 2 + (2 if flag == 126 else 8 if flag == 127 else 0) + (4 if head[1] & 0x80 else 0)


class InboundMeter:
    """The payload bytes of client data messages between the socket and the handler.

    `on_grow(delta)` is called when the count grows (it may refuse: False drops the bytes,
    and everything after them: the client is being closed). `take()` is called by the
    handler for every data message it receives and returns that message's bytes."""

    __slots__ = (
        "_assembly",
        "_complete",
        "_data",
        "_fin",
        "_head",
        "_inner",
        "_limit",
        "_need",
        "_placeholder",
        "_ready",
        "_token",
        "held",
        "on_grow",
        "partial",
        "partial_growth",
        "refused",
    )

    def __init__(self, inner: Any, limit: int = 0) -> None:
        self._inner = inner
        self._limit = limit  # aiohttp's max_msg_size: larger frames are its to refuse
        self._assembly: FrameAssembly | None = None  # a large frame being received
        self._ready: deque[FrameAssembly] = deque()  # complete, placeholder sent
        self._token = placeholder_token()
        self._placeholder = placeholder_frame(self._token)
        self.partial_growth = 0
        self.on_grow: Callable[[int], bool] | None = None
        self.held = 0  # partial + every complete message not yet taken
        self.partial = 0  # bytes of the message being received
        self.refused = False
        self._complete: deque[int] = deque()
        self._head = b""  # an unfinished frame header, held back from aiohttp's reader
        self._need = 0  # payload bytes of the current frame still to come
        self._data = False  # the current frame belongs to a data message
        self._fin = False

    # -- the parser interface aiohttp's protocol uses --------------------------------------

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self.refused or self._inner is None:
            return _GO_ON  # the client is being closed: nothing more is kept
        if self._head:  # an unfinished header held back from the last read: it comes first
            data, self._head = self._head + data, b""
        passed = self._scan(data)
        grown = self.partial_growth
        if grown and self.on_grow is not None and not self.on_grow(grown):
            self.refused = True
            self._assembly = None
            self._ready.clear()
            return _GO_ON
        if passed is None:  # nothing held back or taken aside: aiohttp reads it all
            result: tuple[bool, bytes] = self._inner.feed_data(data)
            return result
        for piece in passed:
            if not piece:
                continue
            result = self._inner.feed_data(piece)
            if result[0]:
                return result
        return _GO_ON

    def feed_eof(self) -> None:
        if self._inner is not None:
            self._inner.feed_eof()

    def detach(self) -> None:
        """The client is gone: let go of aiohttp's reader, so that the bytes of a frame it
        never finished are freed now, not whenever the garbage collector finds the cycles
        around the connection."""
        self._inner = None
        self._assembly = None
        self._ready.clear()

    # -- counting --------------------------------------------------------------------------

    def take(self) -> int:
        """The handler received the oldest complete data message: its size, no longer held
        by the reader (the caller counts it from here on)."""
        if not self._complete:
            return 0
        size = self._complete.popleft()
        self.held -= size
        return size

    def release(self) -> int:
        """Everything still counted (the client is gone or refused): returned once."""
        held, self.held = self.held, 0
        self._complete.clear()
        self._assembly = None
        self._ready.clear()
        self.partial = 0
        return held

    def claim(self, data: bytes | str) -> FrameAssembly | None:
        """The assembled large frame a placeholder message stands for (None for any other
        message): the handler asks this for every binary message it receives."""
        if self._ready and type(data) is bytes and data == self._token:
            return self._ready.popleft()
        return None

    def _scan(self, data: bytes) -> list[bytes] | None:
        """Walk the frame headers in `data`: count the payload bytes of data messages (the
        growth of `held`, in `partial_growth`), take large frames aside, hold back a header
        cut by the end of the read. Returns the pieces aiohttp's reader gets, or None when
        that is `data` as it is."""
        position, end, grown = 0, len(data), 0
        pieces: list[bytes] | None = None
        passed_from = 0  # the start of the run of bytes aiohttp's reader gets as they are
        while position < end:
            if self._need:
                take = min(self._need, end - position)
                assembly = self._assembly
                self._need -= take
                if assembly is not None:  # taken aside: aiohttp's reader never sees it
                    assembly.add(data, position, position + take)
                    pieces = [] if pieces is None else pieces
                    passed_from = position + take
                position += take
                if self._data:
                    self.partial += take
                    grown += take
                if not self._need:
                    if assembly is not None:
                        self._assembly = None
                        self._ready.append(assembly)
                        assert pieces is not None
                        pieces.append(self._placeholder)
                    if self._data and self._fin:
                        self._finish_message()
                continue
            head = data[position : position + 14]
            size = _header_size(head)
            if size is None or len(head) < size:
                self._head = data[position:]  # held back until the rest of it comes
                pieces = [] if pieces is None else pieces
                pieces.append(data[passed_from:position])
                passed_from = end
                break
            if head[1] & 0x7F == 126:
                length = int.from_bytes(head[2:4], "big")
            elif head[1] & 0x7F == 127:
                length = int.from_bytes(head[2:10], "big")
            else:
                length = head[1] & 0x7F
            opcode = head[0] & 0x0F
            self._data = opcode in _DATA_OPCODES
            self._fin = bool(head[0] & 0x80)
            self._need = length
            if self._takes_aside(head, opcode, length):
                pieces = [] if pieces is None else pieces
                pieces.append(data[passed_from:position])
                key = bytes(head[size - 4 : size])
                self._assembly = FrameAssembly(length, key, text=opcode == _OP_TEXT)
                passed_from = position + size
            position += size
            if self._data and self._fin and not length:
                self._finish_message()
        self.held += grown
        self.partial_growth = grown
        if pieces is not None and passed_from < end:
            pieces.append(data[passed_from:end])
        return pieces

    def _takes_aside(self, head: bytes, opcode: int, length: int) -> bool:
        """A whole (FIN) masked text or binary frame with no extension bits, larger than
        LARGE_FRAME_BYTES and within aiohttp's limit: the meter assembles it. Anything else
        (fragments, oversized frames aiohttp refuses, control frames) stays aiohttp's."""
        return (
            LARGE_FRAME_BYTES < length <= self._limit
            and head[0] & 0xF0 == 0x80  # FIN, no RSV bits
            and opcode in (_OP_TEXT, _OP_BINARY)
            and bool(head[1] & 0x80)
        )

    def _finish_message(self) -> None:
        self._complete.append(self.partial)
        self.partial = 0


class MeteredWebSocketResponse(web.WebSocketResponse):
    """A WebSocketResponse whose reader is fed through an InboundMeter (`meter`)."""

    meter: InboundMeter | None = None

    def drop_reader(self) -> None:
        """Free what the reader holds now (a refused client's unfinished frame): nothing more
        of this connection is read, and its close does not wait for the client. Without this,
        the bytes would stay until the connection's close completes, while other clients'
        bytes are already admitted in their place."""
        if self.meter is not None:
            self.meter.detach()
        self._parser = None

    def _post_start(self, request: web.BaseRequest, protocol: str | None, writer: Any) -> None:
        handler: Any = request.protocol
        # Bytes a client sent before the reader existed: held back, then fed through the meter
        # (the meter must see a client's bytes from the first, to find its frame boundaries).
        tail = getattr(handler, "_message_tail", b"")
        if tail:
            handler._message_tail = b""
        super()._post_start(request, protocol, writer)
        inner = getattr(handler, "_payload_parser", None)
        if inner is None:  # aiohttp changed under us: serve unmetered rather than not at all
            log.warning("cannot meter client frames: aiohttp's protocol has no _payload_parser")
            if tail:
                handler._message_tail = tail
            return
        self.meter = InboundMeter(inner, self._max_msg_size)
        handler._payload_parser = self.meter
        if tail:
            eof, _rest = self.meter.feed_data(tail)
            if eof:
                handler.close()
