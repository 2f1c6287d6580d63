"""Large client frames: assembled by the inbound meter read by read, never by aiohttp's reader
(issue 20, point 6). The reader is a stand-in that records what the meter passes on."""

from __future__ import annotations

import os

import pytest
from aiohttp._websocket.helpers import websocket_mask
from gremlinlb.sidecar.bigframes import LARGE_FRAME_BYTES, FrameAssembly, encode_masked
from gremlinlb.sidecar.frames import FrameType
from gremlinlb.sidecar.inbound import InboundMeter

from tests.helpers import masked_frame_head
from tests.unit.test_sidecar_inbound import Reader

KEY = b"\x11\x22\x33\x44"
LIMIT = 1 << 20


def masked_frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """A client frame as a driver sends it: FIN, masked with KEY."""
    head = masked_frame_head(len(payload), 0x80 | opcode)
    body = bytearray(payload)
    websocket_mask(KEY, body)
    return head + KEY + bytes(body)


def feed(meter: InboundMeter, stream: bytes, step: int) -> None:
    for start in range(0, len(stream), step):
        meter.feed_data(stream[start : start + step])


@pytest.mark.parametrize("step", [7, 1000, 65_536, 1 << 22])
def test_a_large_frame_reaches_the_handler_unmasked_and_whole_however_the_bytes_are_split(
    step: int,
) -> None:
    big = os.urandom(LARGE_FRAME_BYTES * 3 + 5)
    small_before, small_after = masked_frame(b"before"), masked_frame(b"after")
    reader = Reader()
    meter = InboundMeter(reader, LIMIT)
    feed(meter, small_before + masked_frame(big) + small_after, step)
    placeholder = reader.fed[len(small_before) : -len(small_after)]
    assert reader.fed.startswith(small_before)
    assert reader.fed.endswith(small_after)
    assert len(placeholder) < 64  # aiohttp's reader never held the large frame
    assert meter.claim(placeholder[2:]) is not None


def test_the_claimed_assembly_is_the_payload_the_client_sent() -> None:
    big = os.urandom(LARGE_FRAME_BYTES + 3)
    reader = Reader()
    meter = InboundMeter(reader, LIMIT)
    feed(meter, masked_frame(big), 4093)
    assembly = meter.claim(reader.fed[2:])
    assert assembly is not None
    assert assembly.materialize() == big
    assert meter.take() == len(big)  # counted as held until the handler took it


def test_a_large_text_frame_becomes_text() -> None:
    text = "ü" * LARGE_FRAME_BYTES
    reader = Reader()
    meter = InboundMeter(reader, LIMIT)
    feed(meter, masked_frame(text.encode(), opcode=0x1), 10_000)
    assembly = meter.claim(reader.fed[2:])
    assert assembly is not None
    assert assembly.materialize() == text


def test_a_frame_over_the_limit_is_left_to_aiohttp_to_refuse() -> None:
    stream = masked_frame(bytes(LIMIT + 1))
    reader = Reader()
    meter = InboundMeter(reader, LIMIT)
    feed(meter, stream, 65_536)
    assert reader.fed == stream


def test_a_message_that_only_looks_like_a_placeholder_is_not_claimed() -> None:
    reader = Reader()
    meter = InboundMeter(reader, LIMIT)
    feed(meter, masked_frame(os.urandom(LARGE_FRAME_BYTES + 1)), 65_536)
    assert meter.claim(b"\0" * 16) is None
    assert meter.claim(reader.fed[2:]) is not None
    assert meter.claim(reader.fed[2:]) is None  # one placeholder, one claim


def test_a_prepared_backend_frame_unmasks_to_the_frame() -> None:
    payload = os.urandom(70_000)
    head, masked = encode_masked(payload, FrameType.BINARY)
    assert head[:2] == bytes([0x82, 0x80 | 127])
    key = head[-4:]
    websocket_mask(key, masked)
    assert bytes(masked) == payload


def test_an_assembly_unmasks_across_reads_that_split_the_key_cycle() -> None:
    payload = os.urandom(1001)
    body = bytearray(payload)
    websocket_mask(KEY, body)
    assembly = FrameAssembly(len(payload), KEY, text=False)
    for start, stop in ((0, 1), (1, 6), (6, 999), (999, 1001)):
        assembly.add(bytes(body), start, stop)
    assert assembly.materialize() == payload


def test_an_unfinished_large_frame_holds_only_the_bytes_received_so_far() -> None:
    reader = Reader()
    meter = InboundMeter(reader, LIMIT)
    stream = masked_frame(bytes(LIMIT))
    meter.feed_data(stream[:5000])
    assembly = meter._assembly  # the frame being assembled: not exposed otherwise
    assert assembly is not None
    assert assembly.filled < 5000  # not the declared megabyte, zeroed up front
    assert sum(len(chunk) for chunk in assembly.chunks) == meter.partial == assembly.filled
