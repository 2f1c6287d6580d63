"""Large client frames without large copies on the event loop (issue 20, point 6).

A 9 MB request frame used to be copied about nine times on the event loop: aiohttp joined its
reads, copied and unmasked it when it completed, the request id rewrite copied it twice, and
the write to the backend copied and masked it again and joined it with its neighbours. Each
copy of fresh memory costs milliseconds, and they came in a few long callbacks: one client's
large frame stalled every other client for 20-75 ms.

Here a large data frame takes another path:

- `FrameAssembly`: the inbound meter (inbound.py) keeps the frame's payload from aiohttp's
  reader and unmasks each read as it arrives (a few hundred KB per loop
  callback); when it completes, aiohttp's reader gets a small placeholder message instead,
  which the handler exchanges for the assembled reads (`InboundMeter.claim`);
- on a worker thread (already used to parse and write-check large frames): the reads become
  the frame, and the frame as the first backend attempt will send it (`prepare_first_attempt`):
  the request id rewritten and the WebSocket frame masked, ready to be written as it is;
- on the loop, that first attempt's write is one `transport.write` of a memoryview
  (`FrameOutput`): one copy, into the transport's buffer. A retry or hedge of the same request
  is encoded on the loop as before (rare, and bounded by max_attempts).
"""

from __future__ import annotations

import os
import random
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from aiohttp._websocket.helpers import websocket_mask
from gremlinlb.sidecar.frames import FrameType, Request, Spliced

# Data frames with a payload above this are assembled by the meter and prepared off the loop;
# smaller ones take aiohttp's path (cheaper than the hop, see clients.OFF_LOOP_FRAME_BYTES).
LARGE_FRAME_BYTES = 64 * 1024

T = TypeVar("T")

_FIN = 0x80
_OP_TEXT = 0x1
_OP_BINARY = 0x2
_MASK_BIT = 0x80


class FrameAssembly:
    """The payload of one large masked data frame, unmasked read by read as it arrives."""

    __slots__ = ("_key", "chunks", "filled", "text")

    def __init__(self, length: int, key: bytes, *, text: bool) -> None:
        # A list of the reads, joined once on the worker thread: not one buffer of `length`
        # (bytearray(length) zeroes every page at once, so a client declaring 20 MB and
        # sending little would make the sidecar hold 20 MB, while the memory budget counts
        # bytes received), nor one grown read by read (each growth may copy it all, on the
        # loop).
        self.chunks: list[bytearray] = []
        self.filled = 0
        self.text = text
        self._key = key

    def add(self, data: bytes, start: int, stop: int) -> None:
        """Unmask `data[start:stop]`, the next bytes of the payload, and keep them."""
        chunk = bytearray(memoryview(data)[start:stop])
        shift = self.filled % 4
        websocket_mask(self._key[shift:] + self._key[:shift], chunk)
        self.chunks.append(chunk)
        self.filled += len(chunk)

    def materialize(self) -> bytes | str:
        """The frame as aiohttp would have delivered it (bytes, or str for a text frame); on a
        worker thread. Raises UnicodeDecodeError for a text frame that is not UTF-8."""
        whole = b"".join(self.chunks)
        self.chunks = []
        return whole.decode("utf-8") if self.text else whole


def placeholder_token() -> bytes:
    """A per-connection secret: the payload of the placeholder messages (a client cannot send
    a message the handler would take for one without knowing it)."""
    return os.urandom(16)


def placeholder_frame(token: bytes) -> bytes:
    """An unmasked binary frame carrying `token`, fed to aiohttp's reader in place of a large
    frame (aiohttp accepts unmasked frames from clients)."""
    return bytes([_FIN | _OP_BINARY, len(token)]) + token


@dataclass(slots=True)
class Prepared:
    """A backend frame encoded in full off the loop: header and masked payload, for the
    request's first attempt under `backend_id`; `taken` once handed to a connection."""

    backend_id: bytes
    head: bytes
    payload: bytearray
    taken: bool = False

    @property
    def size(self) -> int:
        return len(self.head) + len(self.payload)


def encode_masked(payload: bytes | str, frame_type: FrameType) -> tuple[bytes, bytearray]:
    """(header + masking key, masked payload) of one WebSocket client frame, as aiohttp
    encodes it: FIN, no compression, a random key."""
    masked = bytearray(payload.encode("utf-8") if isinstance(payload, str) else payload)
    first = _FIN | (_OP_TEXT if frame_type is FrameType.TEXT else _OP_BINARY)
    length = len(masked)
    if length < 126:
        header = struct.pack("!BB", first, _MASK_BIT | length)
    elif length < 65536:
        header = struct.pack("!BBH", first, _MASK_BIT | 126, length)
    else:
        header = struct.pack("!BBQ", first, _MASK_BIT | 127, length)
    key = struct.pack("!I", random.getrandbits(32))
    websocket_mask(key, masked)
    return header + key, masked


def prepare_first_attempt(request: Request, next_id: Callable[[], bytes]) -> Request:
    """`request` carrying its first attempt's backend frame, encoded here (a worker thread)."""
    backend_id = next_id()
    head, payload = encode_masked(request.with_request_id(backend_id), request.channel.frame_type)
    return replace(request, prepared=Prepared(backend_id, head, payload))


def backend_frame(
    request: Request, next_id: Callable[[], bytes]
) -> tuple[bytes, bytes | str | Prepared | Spliced]:
    """(backend id, frame) of an attempt to send `request`: the frame prepared off the loop
    for its first attempt, else one encoded here, with a fresh id."""
    prepared = request.prepared
    if prepared is not None and not prepared.taken:
        prepared.taken = True
        return prepared.backend_id, prepared
    backend_id = next_id()
    return backend_id, request.relayed(backend_id)


# While the checker thread runs Python code, the loop thread waits for the GIL each time it
# comes back from a system call, up to the interpreter's switch interval (5 ms by default):
# a few such waits per request add up to a stall of their own. The checker's work asks for a
# shorter interval while it runs; it is process-wide, so it is set back afterwards.
CHECKER_SWITCH_INTERVAL = 0.0005


def off_loop(work: Callable[..., T], *args: Any) -> T:
    """Run `work(*args)` (on the checker thread) with a short GIL switch interval."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(min(previous, CHECKER_SWITCH_INTERVAL))
    try:
        return work(*args)
    finally:
        sys.setswitchinterval(previous)
