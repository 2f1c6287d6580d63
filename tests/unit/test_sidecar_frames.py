"""Frame headers and request-id rewriting, checked against gremlinpython's own serializers."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from gremlin_python.driver.request import RequestMessage
from gremlin_python.driver.serializer import (
    GraphBinarySerializersV1,
    GraphSONSerializersV2d0,
    GraphSONSerializersV3d0,
)
from gremlin_python.process.graph_traversal import __
from gremlinlb.sidecar import frames
from gremlinlb.sidecar.frames import (
    GRAPHBINARY_CHANNEL,
    TEXT_CHANNEL,
    Channel,
    Format,
    FrameType,
    MalformedFrameError,
)
from hypothesis import given
from hypothesis import strategies as st

SERIALIZERS = {
    "graphbinary": GraphBinarySerializersV1,
    "graphson3": GraphSONSerializersV3d0,
    "graphson2": GraphSONSerializersV2d0,
}
CHANNELS = {
    "graphbinary": GRAPHBINARY_CHANNEL,
    "graphson3": Channel(frames.GRAPHSON_V3_MIME, FrameType.BINARY),
    "graphson2": Channel(frames.GRAPHSON_V2_MIME, FrameType.BINARY),
    "text": TEXT_CHANNEL,
}

uuids = st.uuids()
values = st.one_of(
    st.integers(min_value=-(2**31), max_value=2**31 - 1),
    st.text(max_size=30),
    st.booleans(),
)
serializer_names = st.sampled_from(sorted(SERIALIZERS))


def bytecode_request(serializer: Any, request_id: uuid.UUID, args: list[Any]) -> bytes:
    message = RequestMessage(
        "traversal",
        "bytecode",
        {"gremlin": __.inject(*args).bytecode, "aliases": {"g": "g"}},
    )
    data: bytes = serializer.serialize_message(str(request_id), message)
    return data


def eval_request(serializer: Any, request_id: uuid.UUID, processor: str, script: str) -> bytes:
    args: dict[str, Any] = {"gremlin": script, "aliases": {"g": "g"}}
    if processor == "session":
        args["session"] = str(uuid.uuid4())
    data: bytes = serializer.serialize_message(
        str(request_id), RequestMessage(processor, "eval", args)
    )
    return data


def graphson_body(frame: bytes) -> Any:
    return json.loads(frame[1 + frame[0] :])


@given(serializer_names, uuids, st.lists(values, max_size=5))
def test_bytecode_request_header_is_read_from_every_serializer(
    name: str, request_id: uuid.UUID, args: list[Any]
) -> None:
    request = frames.parse_request(bytecode_request(SERIALIZERS[name](), request_id, args))
    assert request.request_id == request_id.bytes
    assert (request.op, request.processor) == ("bytecode", "traversal")
    assert request.channel == CHANNELS[name]


@given(serializer_names, uuids, st.sampled_from(["", "session"]), st.text(max_size=40))
def test_eval_request_header_names_its_processor(
    name: str, request_id: uuid.UUID, processor: str, script: str
) -> None:
    request = frames.parse_request(eval_request(SERIALIZERS[name](), request_id, processor, script))
    assert (request.request_id, request.op) == (request_id.bytes, "eval")
    assert request.session is (processor == "session")


@given(uuids, uuids, st.lists(values, max_size=5))
def test_graphbinary_id_rewrite_changes_only_the_sixteen_id_bytes(
    original: uuid.UUID, replacement: uuid.UUID, args: list[Any]
) -> None:
    frame = bytecode_request(GraphBinarySerializersV1(), original, args)
    rewritten = frames.parse_request(frame).with_request_id(replacement.bytes)
    assert isinstance(rewritten, bytes)
    assert rewritten == bytecode_request(GraphBinarySerializersV1(), replacement, args)


@given(st.sampled_from(["graphson2", "graphson3"]), uuids, uuids, st.lists(values, max_size=5))
def test_graphson_id_rewrite_keeps_the_rest_of_the_document(
    name: str, original: uuid.UUID, replacement: uuid.UUID, args: list[Any]
) -> None:
    frame = bytecode_request(SERIALIZERS[name](), original, args)
    rewritten = frames.parse_request(frame).with_request_id(replacement.bytes)
    assert isinstance(rewritten, bytes)
    assert graphson_body(rewritten) == graphson_body(
        bytecode_request(SERIALIZERS[name](), replacement, args)
    )
    assert frames.parse_request(rewritten).request_id == replacement.bytes


@given(uuids, uuids)
def test_text_frame_with_plain_string_id_is_rewritten_in_place(
    original: uuid.UUID, replacement: uuid.UUID
) -> None:
    text = json.dumps(
        {"requestId": str(original), "op": "eval", "processor": "", "args": {"gremlin": "1"}}
    )
    request = frames.parse_request(text)
    assert request.channel == TEXT_CHANNEL
    rewritten = request.with_request_id(replacement.bytes)
    assert isinstance(rewritten, str)
    assert json.loads(rewritten)["requestId"] == str(replacement)
    assert json.loads(rewritten)["args"] == {"gremlin": "1"}


def test_graphson_keys_in_any_order_are_found() -> None:
    rid = uuid.uuid4()
    text = json.dumps(
        {"args": {"gremlin": "g.V()"}, "processor": "", "op": "eval", "requestId": str(rid)}
    )
    request = frames.parse_request(text)
    assert (request.request_id, request.op, request.processor) == (rid.bytes, "eval", "")


def test_non_ascii_before_the_id_keeps_byte_offsets_exact() -> None:
    rid, new = uuid.uuid4(), uuid.uuid4()
    body = json.dumps(
        {"args": {"gremlin": "'ünïcödé'"}, "op": "eval", "processor": "", "requestId": str(rid)},
        ensure_ascii=False,
    ).encode("utf-8")
    mime = frames.GRAPHSON_V3_MIME.encode()
    frame = bytes([len(mime)]) + mime + body
    rewritten = frames.parse_request(frame).with_request_id(new.bytes)
    assert isinstance(rewritten, bytes)
    assert json.loads(rewritten[1 + len(mime) :])["requestId"] == str(new)


# -- malformed requests --------------------------------------------------------------------


def test_zero_mime_length_is_malformed_without_an_id() -> None:
    with pytest.raises(MalformedFrameError) as caught:
        frames.parse_request(b"\x00abc")
    assert caught.value.code == frames.MALFORMED_REQUEST
    assert not caught.value.answerable


def test_negative_mime_length_is_malformed_without_an_id() -> None:
    with pytest.raises(MalformedFrameError, match="mime type length -1"):
        frames.parse_request(b"\xffabc")


def test_mime_longer_than_the_frame_is_malformed() -> None:
    with pytest.raises(MalformedFrameError, match="truncated"):
        frames.parse_request(b"\x20application/vnd")


def test_truncated_graphbinary_after_the_id_is_answerable() -> None:
    rid = uuid.uuid4()
    frame = bytecode_request(GraphBinarySerializersV1(), rid, [1])[:60]
    with pytest.raises(MalformedFrameError) as caught:
        frames.parse_request(frame)
    assert caught.value.request_id == rid.bytes
    assert caught.value.answerable


def test_truncated_graphbinary_inside_the_id_is_not_answerable() -> None:
    frame = bytecode_request(GraphBinarySerializersV1(), uuid.uuid4(), [1])[:40]
    with pytest.raises(MalformedFrameError) as caught:
        frames.parse_request(frame)
    assert not caught.value.answerable


def test_unknown_op_is_malformed_with_the_id_as_the_server_answers_it() -> None:
    rid = uuid.uuid4()
    frame = frames.build_request(GRAPHBINARY_CHANNEL, rid.bytes, "frob", "", {})
    with pytest.raises(MalformedFrameError) as caught:
        frames.parse_request(frame)
    assert (caught.value.code, caught.value.request_id) == (frames.MALFORMED_REQUEST, rid.bytes)


def test_unknown_processor_is_an_invalid_argument() -> None:
    frame = frames.build_request(GRAPHBINARY_CHANNEL, uuid.uuid4().bytes, "eval", "x", {})
    with pytest.raises(MalformedFrameError, match="processor 'x'"):
        frames.parse_request(frame)


def test_unsupported_mime_is_malformed() -> None:
    with pytest.raises(MalformedFrameError, match="unsupported mime"):
        frames.parse_request(b"\x0aapplicatio" + b"\x81" * 40)


def test_graphson_that_is_not_json_is_malformed() -> None:
    with pytest.raises(MalformedFrameError, match="not a JSON object"):
        frames.parse_request("{not json")


def test_graphson_without_a_uuid_id_is_malformed() -> None:
    with pytest.raises(MalformedFrameError, match="not a UUID"):
        frames.parse_request(json.dumps({"requestId": "abc", "op": "eval", "processor": ""}))


@pytest.mark.parametrize(
    "request_id", [5, None, {"a": 1}, {"@type": "g:Int32", "@value": 5}, [1]], ids=repr
)
def test_graphson_id_that_is_not_a_string_is_malformed_without_an_id(request_id: Any) -> None:
    text = json.dumps({"requestId": request_id, "op": "eval", "processor": "", "args": {}})
    with pytest.raises(MalformedFrameError, match="is not a UUID: send it as a string") as raised:
        frames.parse_request(text)
    assert raised.value.target is None


DEEP = "[" * 100_000 + "]" * 100_000


def test_graphson_nested_100000_deep_after_its_id_is_malformed_with_the_id() -> None:
    request_id = uuid.uuid4()
    text = json.dumps({"requestId": str(request_id), "op": "eval", "processor": "", "args": {}})
    with pytest.raises(MalformedFrameError, match="too deeply") as raised:
        frames.parse_request(text.replace("{}", '{"x": ' + DEEP + "}"))
    assert raised.value.target == (frames.TEXT_CHANNEL, request_id.bytes)


def test_graphson_nested_100000_deep_before_its_id_is_malformed_without_an_id() -> None:
    text = '{"x": ' + DEEP + ', "requestId": "' + str(uuid.uuid4()) + '", "op": "eval"}'
    with pytest.raises(MalformedFrameError, match="too deeply") as raised:
        frames.parse_request(text)
    assert raised.value.target is None


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(
    st.dictionaries(
        st.sampled_from(["requestId", "op", "processor", "args"]) | st.text(max_size=5),
        JSON_VALUES,
    ),
    st.booleans(),
)
def test_any_json_object_is_read_or_refused_as_malformed(body: dict[str, Any], text: bool) -> None:
    """Any other exception would escape the proxy's handling and drop the client's socket."""
    frame = json.dumps(body)
    mime = frames.GRAPHSON_V3_MIME.encode()
    outcome: Any
    try:
        outcome = frames.parse_request(
            frame if text else bytes([len(mime)]) + mime + frame.encode()
        )
    except MalformedFrameError as error:
        outcome = error
    assert isinstance(outcome, (frames.Request, MalformedFrameError))


def test_graphson_with_many_brackets_but_shallow_nesting_is_read() -> None:
    args = {"gremlin": "g.inject(x)", "bindings": {"x": [[i] for i in range(5000)]}}
    text = json.dumps({"requestId": str(uuid.uuid4()), "op": "eval", "processor": "", "args": args})
    assert frames.parse_request(text).op == "eval"


# -- responses -----------------------------------------------------------------------------

# Frames captured from Gremlin Server 3.8.1 (WsAndHttpChannelizer, default serializers).
SERVER_GRAPHSON3_OK = (
    '{"requestId":"5ab4ac98-d4cb-438a-a8a6-2ee6d2789dd7","status":{"message":"","code":200,'
    '"attributes":{"@type":"g:Map","@value":["host","/127.0.0.1:52786"]}},"result":{"data":'
    '{"@type":"g:List","@value":[{"@type":"g:Int32","@value":1}]},'
    '"meta":{"@type":"g:Map","@value":[]}}}'
)
SERVER_GRAPHBINARY_BAD_OP = (
    b"\x81\x00\x16\xbc+K\x8a\xdbG\x0e\xbf\x19/\x04$\x06\x1d\xf3\x00\x00\x01\xf2\x00\x00\x00"
    b"\x00.Message with op code [frob] is not recognized.\x00\x00\x00\x00\x00\x00\x00\x00\xfe\x01"
)


def test_server_graphson_response_header_is_read() -> None:
    header = frames.parse_response(SERVER_GRAPHSON3_OK, TEXT_CHANNEL)
    assert header.request_id == uuid.UUID("5ab4ac98-d4cb-438a-a8a6-2ee6d2789dd7").bytes
    assert (header.code, header.final) == (200, True)


def test_server_graphbinary_error_header_is_read() -> None:
    header = frames.parse_response(SERVER_GRAPHBINARY_BAD_OP, GRAPHBINARY_CHANNEL)
    assert header.request_id == b"\x16\xbc+K\x8a\xdbG\x0e\xbf\x19/\x04$\x06\x1d\xf3"
    assert header.code == frames.MALFORMED_REQUEST


def test_partial_content_is_not_final() -> None:
    frame = frames.error_response(GRAPHBINARY_CHANNEL, uuid.uuid4().bytes, 206, "")
    assert not frames.parse_response(frame, GRAPHBINARY_CHANNEL).final


@given(st.sampled_from(sorted(CHANNELS)), uuids, uuids, st.integers(200, 599), st.text())
def test_error_response_round_trips_through_gremlinpython(
    name: str, backend: uuid.UUID, client: uuid.UUID, code: int, message: str
) -> None:
    channel = CHANNELS[name]
    frame = frames.error_response(channel, backend.bytes, code, message, {"why": message})
    header = frames.parse_response(frame, channel)
    assert (header.request_id, header.code) == (backend.bytes, code)
    restored = wire(frames.with_response_id(frame, header, client.bytes))
    decoded = deserializer_for(name).deserialize_message(restored)
    assert decoded["requestId"] == str(client)
    assert decoded["status"]["code"] == code
    assert decoded["status"]["message"] == message
    assert decoded["status"]["attributes"] == {"why": message}
    assert decoded["result"]["data"] is None


def test_a_large_answer_is_spliced_around_the_clients_id_not_copied() -> None:
    backend, client = uuid.uuid4(), uuid.uuid4()
    message = "x" * frames.SPLICE_BYTES
    frame = frames.error_response(GRAPHBINARY_CHANNEL, backend.bytes, 500, message)
    header = frames.parse_response(frame, GRAPHBINARY_CHANNEL)
    relayed = frames.with_response_id(frame, header, client.bytes)
    assert isinstance(relayed, frames.Spliced)
    assert relayed.tail.obj is frame  # a view of the server's frame
    decoded = deserializer_for("graphbinary").deserialize_message(bytes(relayed))
    assert (decoded["requestId"], decoded["status"]["message"]) == (str(client), message)


def wire(frame: bytes | str | frames.Spliced) -> bytes | str:
    """What the client reads: a spliced frame's two pieces, one after the other."""
    return bytes(frame) if isinstance(frame, frames.Spliced) else frame


def deserializer_for(name: str) -> Any:
    return SERIALIZERS.get(name, GraphSONSerializersV3d0)()


@given(uuids, uuids, st.integers(0, 3000))
def test_graphson_response_id_rewrite_ignores_the_same_uuid_in_the_data(
    backend: uuid.UUID, client: uuid.UUID, padding: int
) -> None:
    frame = json.dumps(
        {
            "requestId": str(backend),
            "status": {"message": "", "code": 206, "attributes": {}},
            "result": {"data": [str(backend), "x" * padding], "meta": {}},
        }
    ).encode()
    header = frames.parse_response(frame, CHANNELS["graphson2"])
    restored = json.loads(wire(frames.with_response_id(frame, header, client.bytes)))
    assert restored["requestId"] == str(client)
    assert restored["result"]["data"][0] == str(backend)


def test_large_graphson_response_header_is_read_from_its_start() -> None:
    rid = uuid.uuid4()
    frame = (
        '{"requestId":"' + str(rid) + '","status":{"code":206,"message":"","attributes":{}},'
        '"result":{"data":["' + "é" * 50_000 + '"],"meta":{}}}'
    ).encode("utf-8")
    header = frames.parse_response(frame, CHANNELS["graphson3"])
    assert (header.request_id, header.code) == (rid.bytes, 206)


def test_null_request_id_is_reported_as_none() -> None:
    frame = frames.error_response(GRAPHBINARY_CHANNEL, None, 498, "bad")
    assert frames.parse_response(frame, GRAPHBINARY_CHANNEL).request_id is None


def test_built_authentication_request_is_read_back() -> None:
    rid = uuid.uuid4().bytes
    for channel in CHANNELS.values():
        frame = frames.build_request(channel, rid, "authentication", "", {"sasl": "AGEAYg=="})
        request = frames.parse_request(frame)
        assert (request.request_id, request.op, request.channel) == (rid, "authentication", channel)
        assert request.format is channel.format


def test_graphbinary_and_graphson_channels_are_told_apart() -> None:
    assert GRAPHBINARY_CHANNEL.format is Format.GRAPHBINARY
    assert CHANNELS["graphson3"].format is Format.GRAPHSON
    assert CHANNELS["graphson3"].typed_json
    assert not CHANNELS["graphson2"].typed_json


def test_an_invented_mime_is_refused_with_the_close_code_for_unsupported_data() -> None:
    """1003 on the error itself, compiled (mypyc) as well as pure: clients.py closes with it."""
    mime = b"application/vnd.gremlin-v3.0+json;x=7"
    with pytest.raises(frames.UnsupportedMimeError, match="unsupported mime") as refused:
        frames.parse_request(bytes([len(mime)]) + mime + b"{}")
    assert refused.value.close_code == 1003
