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

log = logging.getLogger(__name__)

# (eof, tail) as the protocol expects from a parser: nothing more, go on reading.
_GO_ON = (False, b"")
_DATA_OPCODES = (0x0, 0x1, 0x2)  # continuation, text, binary


class InboundMeter:
    """The payload bytes of client data messages between the socket and the handler.

    `on_grow(delta)` is called when the count grows (it may refuse: False drops the bytes,
    and everything after them: the client is being closed). `take()` is called by the
    handler for every data message it receives and returns that message's bytes."""

    __slots__ = (
        "_complete",
        "_data",
        "_fin",
        "_head",
        "_inner",
        "_need",
        "held",
        "on_grow",
        "partial",
        "refused",
    )

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.on_grow: Callable[[int], bool] | None = None
        self.held = 0  # partial + every complete message not yet taken
        self.partial = 0  # bytes of the message being received
        self.refused = False
        self._complete: deque[int] = deque()
        self._head = b""  # an unfinished frame header
        self._need = 0  # payload bytes of the current frame still to come
        self._data = False  # the current frame belongs to a data message
        self._fin = False

    # -- the parser interface aiohttp's protocol uses --------------------------------------

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self.refused or self._inner is None:
            return _GO_ON  # the client is being closed: nothing more is kept
        grown = self._scan(data)
        if grown and self.on_grow is not None and not self.on_grow(grown):
            self.refused = True
            return _GO_ON
        result: tuple[bool, bytes] = self._inner.feed_data(data)
        return result

    def feed_eof(self) -> None:
        if self._inner is not None:
            self._inner.feed_eof()

    def detach(self) -> None:
        """The client is gone: let go of aiohttp's reader, so that the bytes of a frame it
        never finished are freed now, not whenever the garbage collector finds the cycles
        around the connection."""
        self._inner = None

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
        self.partial = 0
        return held

    def _scan(self, data: bytes) -> int:
        """Walk the frame headers in `data`; returns how many payload bytes of data messages
        it brought (the growth of `held`)."""
        position, end, grown = 0, len(data), 0
        while position < end:
            if self._need:
                take = min(self._need, end - position)
                self._need -= take
                position += take
                if self._data:
                    self.partial += take
                    grown += take
                    if not self._need and self._fin:
                        self._finish_message()
                continue
            have = len(self._head)
            head = (
                self._head + data[position : position + 14 - have]
                if have
                else data[position : position + 14]
            )
            if len(head) < 2:
                self._head = head
                break
            flag = head[1] & 0x7F
            size = (
                2 + (2 if flag == 126 else 8 if flag == 127 else 0) + (4 if head[1] & 0x80 else 0)
            )
            if len(head) < size:
                self._head = head
                break
            position += size - have
            self._head = b""
            if flag == 126:
                length = int.from_bytes(head[2:4], "big")
            elif flag == 127:
                length = int.from_bytes(head[2:10], "big")
            else:
                length = flag
            opcode = head[0] & 0x0F
            self._data = opcode in _DATA_OPCODES
            self._fin = bool(head[0] & 0x80)
            self._need = length
            if self._data and self._fin and not length:
                self._finish_message()
        self.held += grown
        return grown

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
        self.meter = InboundMeter(inner)
        handler._payload_parser = self.meter
        if tail:
            eof, _rest = self.meter.feed_data(tail)
            if eof:
                handler.close()
