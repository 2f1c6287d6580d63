"""Coalesced WebSocket output: the frames queued for one socket leave in one write.

aiohttp writes each frame with its own `transport.write`, which is a system call per frame;
under load most of the sidecar's time went there (bench/results/2026-11-28-micro-before.md).
The owners of a socket (a client connection, a backend connection) queue frames during an
event-loop turn and hand them here once, from a `loop.call_soon` callback (or as soon as
BATCH_FRAMES are queued): one `writelines`, one system call for several frames.

Frames are encoded exactly as aiohttp encodes them (RFC 6455, no compression, FIN set; a
random 32-bit mask per frame on the client side). Ping and close frames are still written by
aiohttp itself, and so are pongs where aiohttp reads the socket; where sidecar/wsread.py reads
it, `control` answers pings. Control frames may come between two data frames, which the
protocol allows.
"""

from __future__ import annotations

import asyncio
import random
import struct
from collections.abc import Iterable
from typing import Any

from aiohttp._websocket.helpers import websocket_mask
from gremlinlb.sidecar.bigframes import Prepared
from gremlinlb.sidecar.frames import Spliced
from gremlinlb.sidecar.wsread import OP_BINARY, OP_TEXT

_FIN = 0x80
_MASK_BIT = 0x80
_LEN1 = struct.Struct("!BB").pack
_LEN2 = struct.Struct("!BBH").pack
_LEN3 = struct.Struct("!BBQ").pack
_MASK = struct.Struct("!I").pack
_random_bits = random.getrandbits

# Frames queued for one socket that are written at once rather than at the end of the loop
# turn: a turn that reads hundreds of requests (a driver multiplexing many on one socket) must
# not hold the first ones back until it ends, or the backend starts late and its first answers
# look slow (late enough to be hedged).
BATCH_FRAMES = 16

#: A data frame to write: text, bytes, encoded off the loop, or spliced around its id.
Outgoing = bytes | str | Prepared | Spliced


def frame_header(first: int, length: int, mask_bit: int) -> bytes:
    """A data frame's header (RFC 6455 5.2), the mask key apart."""
    if length < 126:
        return _LEN1(first, length | mask_bit)
    if length < 65536:
        return _LEN2(first, 126 | mask_bit, length)
    return _LEN3(first, 127 | mask_bit, length)


class FrameOutput:
    """Writes whole WebSocket data frames to the socket under an aiohttp WebSocket."""

    __slots__ = ("_mask", "_protocol", "_transport")

    def __init__(self, ws: Any, *, mask: bool) -> None:
        # aiohttp's WebSocketWriter (server and client side alike) holds the transport and the
        # protocol whose writing_paused says the socket buffer is over its high-water mark.
        writer = ws._writer
        self._transport: asyncio.WriteTransport = writer.transport
        self._protocol: Any = writer.protocol
        self._mask = mask

    @property
    def paused(self) -> bool:
        """The transport's buffer is over its high-water mark: the peer does not keep up."""
        return bool(self._protocol.writing_paused)

    async def drained(self) -> None:
        """Wait until the transport's buffer is back under its low-water mark."""
        await self._protocol._drain_helper()

    def write(self, frames: Iterable[Outgoing]) -> int:
        """Encode `frames` and write them with one call; returns the bytes written. A Spliced
        frame's body is copied once when masked (to a server), never when not (to a client).

        Raises ConnectionResetError when the socket is closing (nothing is written)."""
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("cannot write to a closing transport")
        chunks: list[bytes | bytearray | memoryview] = []
        append = chunks.append
        mask = self._mask
        mask_bit = _MASK_BIT if mask else 0
        size = 0
        for frame in frames:
            if isinstance(frame, Prepared):  # encoded and masked off the loop (bigframes.py)
                size += self._write_prepared(chunks, frame)
                chunks = []
                append = chunks.append
                continue
            if isinstance(frame, Spliced):
                length = len(frame)
                header = frame_header(_FIN | OP_BINARY, length, mask_bit)
                if mask:  # a request to a server: masked in one copy of both pieces
                    key = _MASK(_random_bits(32))
                    joined = bytearray(frame.head)
                    joined += frame.tail
                    websocket_mask(key, joined)
                    append(header + key)
                    append(joined)
                    size += len(header) + 4 + length
                else:  # an answer to a client: the server's bytes, as they came
                    append(header)
                    append(frame.head)
                    append(frame.tail)
                    size += len(header) + length
                continue
            if isinstance(frame, str):
                payload: bytes = frame.encode("utf-8")
                first = _FIN | OP_TEXT
            else:
                payload = frame
                first = _FIN | OP_BINARY
            length = len(payload)
            header = frame_header(first, length, mask_bit)
            if mask:
                key = _MASK(_random_bits(32))
                masked = bytearray(payload)
                websocket_mask(key, masked)
                append(header + key)
                append(masked)
                size += len(header) + 4 + length
            else:
                append(header)
                append(payload)
                size += len(header) + length
        if chunks:
            transport.writelines(chunks)
        return size

    def control(self, opcode: int, payload: bytes) -> None:
        """Write one control frame (a pong) at once; nothing if the socket is closing."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        header = frame_header(_FIN | opcode, len(payload), _MASK_BIT if self._mask else 0)
        if self._mask:
            key = _MASK(_random_bits(32))
            masked = bytearray(payload)
            websocket_mask(key, masked)
            transport.writelines([header + key, masked])
        else:
            transport.writelines([header, payload])

    def _write_prepared(self, before: list[bytes | bytearray | memoryview], frame: Prepared) -> int:
        """Write the frames encoded so far, then `frame` as it is: its payload as a memoryview,
        which the transport copies once into its buffer (writelines would join everything
        into one more copy on Python 3.11). The payload is let go of once written."""
        transport = self._transport
        before.append(frame.head)
        transport.writelines(before)
        transport.write(memoryview(frame.payload))
        size = frame.size
        frame.payload = bytearray()
        return size
