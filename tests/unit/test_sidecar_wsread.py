"""FrameReader (sidecar/wsread.py): RFC 6455 framing as bytes arrive, in whatever pieces."""

from __future__ import annotations

import struct

import pytest
from aiohttp import WSCloseCode
from aiohttp._websocket.helpers import websocket_mask
from gremlinlb.sidecar.wsout import frame_header
from gremlinlb.sidecar.wsread import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameReader,
    WebSocketProtocolError,
)


class Recorder:
    def __init__(self) -> None:
        self.messages: list[bytes | str] = []
        self.pings: list[bytes] = []
        self.closes: list[tuple[int | None, str]] = []
        self.errors: list[WebSocketProtocolError] = []

    def on_message(self, payload: bytes | str) -> None:
        self.messages.append(payload)

    def on_ping(self, payload: bytes) -> None:
        self.pings.append(payload)

    def on_close(self, code: int | None, reason: str) -> None:
        self.closes.append((code, reason))

    def on_protocol_error(self, error: WebSocketProtocolError) -> None:
        self.errors.append(error)


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bytes | None = None) -> bytes:
    """A frame with the header the sidecar's writer puts on its own (sidecar/wsout.py)."""
    head = frame_header((0x80 if fin else 0) | opcode, len(payload), 0x80 if mask else 0)
    if mask is None:
        return head + payload
    body = bytearray(payload)
    websocket_mask(mask, body)
    return head + mask + bytes(body)


def reader(max_size: int = 1 << 20, *, masked: bool = False) -> tuple[FrameReader, Recorder]:
    sink = Recorder()
    return FrameReader(sink, max_size=max_size, masked=masked), sink


def test_a_binary_frame_is_delivered_as_bytes() -> None:
    parser, sink = reader()
    assert parser.feed_data(frame(OP_BINARY, b"\x81answer")) == (False, b"")
    assert sink.messages == [b"\x81answer"]


def test_a_text_frame_is_delivered_as_str() -> None:
    parser, sink = reader()
    parser.feed_data(frame(OP_TEXT, "{'é': 1}".encode()))
    assert sink.messages == ["{'é': 1}"]


def test_a_frame_split_across_reads_is_delivered_once_whole() -> None:
    parser, sink = reader()
    data = frame(OP_BINARY, bytes(range(200)))
    for cut in (1, 3, 150):
        parser.feed_data(data[:cut])
        assert sink.messages == []
        data = data[cut:]
    parser.feed_data(data)
    assert sink.messages == [bytes(range(200))]


def test_one_byte_at_a_time_still_reads_every_frame() -> None:
    parser, sink = reader()
    data = frame(OP_BINARY, b"a" * 300) + frame(OP_TEXT, b"b") + frame(OP_BINARY, b"c" * 70000)
    for index in range(len(data)):
        parser.feed_data(data[index : index + 1])
    assert sink.messages == [b"a" * 300, "b", b"c" * 70000]


def test_several_frames_in_one_read_are_delivered_in_order() -> None:
    parser, sink = reader()
    parser.feed_data(frame(OP_BINARY, b"1") + frame(OP_BINARY, b"22") + frame(OP_BINARY, b"333"))
    assert sink.messages == [b"1", b"22", b"333"]


@pytest.mark.parametrize("size", [125, 126, 65535, 65536, 200_000])
def test_7_16_and_64_bit_lengths_are_read(size: int) -> None:
    parser, sink = reader()
    payload = bytes(index % 251 for index in range(size))
    parser.feed_data(frame(OP_BINARY, payload))
    assert sink.messages == [payload]


def test_fragments_are_joined_into_one_message() -> None:
    parser, sink = reader()
    parser.feed_data(frame(OP_BINARY, b"ab", fin=False) + frame(OP_CONTINUATION, b"cd", fin=False))
    assert sink.messages == []
    parser.feed_data(frame(OP_CONTINUATION, b"ef"))
    assert sink.messages == [b"abcdef"]


def test_a_ping_between_fragments_is_answered_and_the_message_still_joined() -> None:
    parser, sink = reader()
    parser.feed_data(
        frame(OP_TEXT, b"ab", fin=False) + frame(OP_PING, b"hi") + frame(OP_CONTINUATION, b"c")
    )
    assert sink.pings == [b"hi"]
    assert sink.messages == ["abc"]


def test_a_pong_is_read_and_delivers_nothing() -> None:
    parser, sink = reader()
    parser.feed_data(frame(OP_PONG, b"") + frame(OP_BINARY, b"x"))
    assert (sink.messages, sink.pings, sink.closes) == ([b"x"], [], [])


def test_a_close_frame_gives_its_code_and_reason_and_ends_reading() -> None:
    parser, sink = reader()
    parser.feed_data(
        frame(OP_CLOSE, struct.pack("!H", 1001) + b"going away") + frame(OP_BINARY, b"x")
    )
    assert sink.closes == [(1001, "going away")]
    assert sink.messages == []
    assert parser.feed_data(frame(OP_BINARY, b"y")) == (True, b"")
    parser.feed_eof()
    assert sink.closes == [(1001, "going away")]


def test_an_empty_close_frame_has_no_code() -> None:
    parser, sink = reader()
    parser.feed_data(frame(OP_CLOSE, b""))
    assert sink.closes == [(None, "")]


def test_the_end_of_the_stream_is_a_close_without_code_or_reason() -> None:
    parser, sink = reader()
    parser.feed_data(frame(OP_BINARY, b"x", fin=False))
    parser.feed_eof()
    assert sink.closes == [(None, "")]
    assert sink.messages == []


def _refused(data: bytes, *, max_size: int = 1 << 20, masked: bool = False) -> int:
    parser, sink = reader(max_size, masked=masked)
    assert parser.feed_data(data) == (True, b"")
    assert len(sink.errors) == 1
    assert not sink.messages
    assert parser.feed_data(frame(OP_BINARY, b"after")) == (True, b"")
    return sink.errors[0].code


def test_a_message_over_the_limit_is_refused_with_1009_before_its_payload_arrives() -> None:
    header_only = frame(OP_BINARY, b"x" * 2000)[:4]
    assert _refused(header_only, max_size=1000) == WSCloseCode.MESSAGE_TOO_BIG


def test_fragments_over_the_limit_together_are_refused_with_1009() -> None:
    data = frame(OP_BINARY, b"x" * 600, fin=False) + frame(OP_CONTINUATION, b"x" * 600)
    assert _refused(data, max_size=1000) == WSCloseCode.MESSAGE_TOO_BIG


@pytest.mark.parametrize("opcode", [0x3, 0x7, 0xB, 0xF])
def test_a_reserved_opcode_is_a_protocol_error(opcode: int) -> None:
    assert _refused(frame(opcode, b"x")) == WSCloseCode.PROTOCOL_ERROR


def test_a_reserved_bit_is_a_protocol_error() -> None:
    data = bytearray(frame(OP_BINARY, b"x"))
    data[0] |= 0x40  # RSV1: compression, never agreed
    assert _refused(bytes(data)) == WSCloseCode.PROTOCOL_ERROR


def test_a_masked_frame_from_a_server_is_a_protocol_error() -> None:
    assert _refused(frame(OP_BINARY, b"x", mask=b"abcd")) == WSCloseCode.PROTOCOL_ERROR


def test_a_continuation_with_no_message_started_is_a_protocol_error() -> None:
    assert _refused(frame(OP_CONTINUATION, b"x")) == WSCloseCode.PROTOCOL_ERROR


def test_a_new_message_inside_a_fragmented_one_is_a_protocol_error() -> None:
    data = frame(OP_BINARY, b"a", fin=False) + frame(OP_BINARY, b"b")
    assert _refused(data) == WSCloseCode.PROTOCOL_ERROR


def test_a_fragmented_control_frame_is_a_protocol_error() -> None:
    assert _refused(frame(OP_PING, b"x", fin=False)) == WSCloseCode.PROTOCOL_ERROR


def test_a_control_frame_over_125_bytes_is_a_protocol_error() -> None:
    assert _refused(frame(OP_PING, b"x" * 126)) == WSCloseCode.PROTOCOL_ERROR


def test_a_text_message_that_is_not_utf8_is_refused_with_1007() -> None:
    assert _refused(frame(OP_TEXT, b"\xff\xfe")) == WSCloseCode.INVALID_TEXT


def test_a_one_byte_close_frame_is_a_protocol_error() -> None:
    assert _refused(frame(OP_CLOSE, b"\x03")) == WSCloseCode.PROTOCOL_ERROR


def test_masked_client_frames_are_unmasked() -> None:
    parser, sink = reader(masked=True)
    parser.feed_data(frame(OP_BINARY, b"request", mask=b"\x01\x02\x03\x04"))
    assert sink.messages == [b"request"]


def test_an_unmasked_frame_from_a_client_is_a_protocol_error() -> None:
    assert _refused(frame(OP_BINARY, b"x"), masked=True) == WSCloseCode.PROTOCOL_ERROR
