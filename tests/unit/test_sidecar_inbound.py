"""The inbound meter's frame-header walk: what it counts, however the bytes are split."""

from __future__ import annotations

import pytest
from gremlinlb.sidecar import frames
from gremlinlb.sidecar.inbound import InboundMeter

from tests.helpers import masked_frame_head


class Reader:
    """Stands in for aiohttp's reader: the meter only passes bytes on to it."""

    def __init__(self) -> None:
        self.fed = b""

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.fed += data
        return False, b""

    def feed_eof(self) -> None:
        pass


def frame(payload: bytes, opcode: int = 0x2, fin: bool = True) -> bytes:
    head = masked_frame_head(len(payload), (0x80 if fin else 0) | opcode)
    return head + b"\x01\x02\x03\x04" + payload


@pytest.mark.parametrize("step", [1, 3, 13, 1000, 1 << 20])
def test_counts_data_messages_until_taken_however_the_bytes_are_split(step: int) -> None:
    stream = (
        frame(b"a" * 100)
        + frame(b"", opcode=0x9)  # a ping: not a data message
        + frame(b"b" * 70_000, fin=False)
        + frame(b"c" * 5, opcode=0x0)
        + frame(b"d" * 300)[:-100]  # unfinished
    )
    reader = Reader()
    meter = InboundMeter(reader)
    for start in range(0, len(stream), step):
        meter.feed_data(stream[start : start + step])
    assert reader.fed == stream
    assert meter.held == 100 + 70_005 + 200
    assert meter.partial == 200
    assert meter.take() == 100
    assert meter.take() == 70_005
    assert meter.take() == 0  # the unfinished one is not a message yet
    assert meter.release() == 200


def test_a_refused_meter_passes_nothing_on() -> None:
    reader = Reader()
    meter = InboundMeter(reader)
    meter.on_grow = lambda size: False
    meter.feed_data(frame(b"x" * 10))
    assert reader.fed == b""
    assert meter.refused


def test_mime_spellings_normalise_to_the_served_set() -> None:
    assert frames.normalise_mime("Application/VND.Gremlin-v3.0+JSON ; Types=False") == (
        "application/vnd.gremlin-v3.0+json;types=false"
    )
    assert set(map(frames.normalise_mime, frames.SERVED_MIMES)) == set(frames.SERVED_MIMES)
