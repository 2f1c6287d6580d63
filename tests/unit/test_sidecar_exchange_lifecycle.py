"""The life of one request in the sidecar: the allowed moves, and what a reply makes final.

Pure parts only: `TRANSITIONS`/`may_become`, and an `Exchange`'s reply and state bookkeeping
with a stand-in client connection (the proxy's `end`, which does the rest, runs on real
servers in tests/integration/test_sidecar_*.py).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, cast

import pytest
from gremlin_python.driver.request import RequestMessage
from gremlin_python.driver.serializer import GraphBinarySerializersV1
from gremlin_python.process.graph_traversal import __
from gremlinlb.sidecar.exchange import TRANSITIONS, Exchange, ExchangeState, may_become
from gremlinlb.sidecar.frames import Channel, ResponseHeader, parse_request

if TYPE_CHECKING:
    from gremlinlb.sidecar.clients import ClientConnection

S = ExchangeState
FINAL = [S.ANSWERED, S.FAILED, S.WITHDRAWN, S.ABANDONED]


class StandInClient:
    """What an Exchange uses of its ClientConnection: the frames it would write."""

    def __init__(self) -> None:
        self.closed = False
        self.frames: list[bytes | str] = []
        self.errors: list[int] = []

    def send(self, frame: bytes | str) -> None:
        self.frames.append(frame)

    def send_error(
        self, channel: Channel, request_id: bytes | None, code: int, message: str
    ) -> None:
        self.errors.append(code)


def exchange(client: StandInClient) -> Exchange:
    message = RequestMessage("traversal", "bytecode", {"gremlin": __.V().bytecode})
    data = GraphBinarySerializersV1().serialize_message(str(uuid.uuid4()), message)
    request = parse_request(data)
    return Exchange(cast("ClientConnection", client), request, True, 3)


def header(code: int) -> ResponseHeader:
    return ResponseHeader(None, code)  # no id: the frame is passed on as it is


def test_every_state_has_its_moves_and_final_states_have_none() -> None:
    assert set(TRANSITIONS) == set(ExchangeState)
    for state in FINAL:
        assert state.final
        assert TRANSITIONS[state] == frozenset()
    assert not S.STARTED.final
    assert not S.SENT.final


def test_a_request_ends_from_sent_in_any_final_state_and_is_never_sent_again() -> None:
    for state in FINAL:
        assert may_become(S.SENT, state)
    assert not may_become(S.SENT, S.STARTED)
    assert not may_become(S.SENT, S.SENT)


def test_only_a_sent_request_can_have_a_servers_answer() -> None:
    assert may_become(S.STARTED, S.SENT)
    assert not may_become(S.STARTED, S.ANSWERED)
    for state in (S.FAILED, S.WITHDRAWN, S.ABANDONED):  # no host, its client left, a bug
        assert may_become(S.STARTED, state)


@pytest.mark.parametrize("final", FINAL)
def test_nothing_follows_an_end(final: ExchangeState) -> None:
    assert not any(may_become(final, state) for state in ExchangeState)


def test_the_state_follows_the_send_until_the_end() -> None:
    ex = exchange(StandInClient())
    states = [ex.state]
    assert not ex.ended
    assert not ex.replied
    ex.sent = True
    states.append(ex.state)
    ex.final = S.ANSWERED  # only Proxy.end sets it
    states.append(ex.state)
    assert states == [S.STARTED, S.SENT, S.ANSWERED]
    assert ex.ended


def test_a_stream_is_answered_by_its_final_frame_and_only_once() -> None:
    client = StandInClient()
    ex = exchange(client)
    ex.sent = True
    ex.forward(b"batch", header(206))
    assert ex.forwarded
    assert not ex.replied
    ex.forward(b"last", header(200))
    assert ex.reply is S.ANSWERED
    assert ex.settle() is S.ANSWERED
    ex.answer_error(500, "too late")  # the client has its final frame: nothing more is sent
    ex.forward(b"again", header(200))
    assert client.frames == [b"batch", b"last"]
    assert client.errors == []


def test_the_sidecars_own_error_is_a_failure() -> None:
    client = StandInClient()
    ex = exchange(client)
    ex.answer_error(596, "no host")
    assert ex.reply is S.FAILED
    assert client.errors == [596]
    ex.forward(b"late", header(200))  # a hedge that answered after the error
    assert client.frames == []


def test_a_reply_after_its_client_left_is_abandoned() -> None:
    client = StandInClient()
    ex = exchange(client)
    ex.sent = True
    client.closed = True
    ex.forward(b"last", header(200))
    assert ex.reply is S.ABANDONED


def test_a_withdrawn_request_gets_no_reply() -> None:
    client = StandInClient()
    ex = exchange(client)
    ex.withdraw()
    assert ex.replied
    assert ex.settle() is S.WITHDRAWN
    ex.answer_error(596, "not sent")
    assert client.errors == []


def test_without_a_reply_it_settles_by_whether_it_was_sent() -> None:
    ex = exchange(StandInClient())
    assert ex.settle() is S.WITHDRAWN
    ex.sent = True
    assert ex.settle() is S.ABANDONED
