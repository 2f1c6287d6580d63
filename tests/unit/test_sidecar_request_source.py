"""The traversal source a client request names, read from its frame without decoding it."""

from __future__ import annotations

import uuid

import pytest
from gremlin_python.driver.request import RequestMessage
from gremlin_python.driver.serializer import (
    GraphBinarySerializersV1,
    GraphSONSerializersV2d0,
    GraphSONSerializersV3d0,
)
from gremlin_python.process.graph_traversal import __
from gremlinlb.sidecar.frames import parse_request
from gremlinlb.sidecar.sources import answer_says_source_unknown, request_source

SERIALIZERS = [GraphBinarySerializersV1, GraphSONSerializersV3d0, GraphSONSerializersV2d0]


def frame(serializer: type, args: dict[str, object], op: str = "bytecode") -> bytes:
    processor = "traversal" if op == "bytecode" else ""
    message = RequestMessage(processor, op, args)
    data: bytes = serializer().serialize_message(str(uuid.uuid4()), message)
    return data


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_the_alias_of_g_in_a_bytecode_request_is_its_source(serializer: type) -> None:
    data = frame(serializer, {"gremlin": __.V().limit(1).bytecode, "aliases": {"g": "g2"}})
    assert request_source(parse_request(data)) == "g2"


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_a_script_requests_alias_is_its_source(serializer: type) -> None:
    data = frame(serializer, {"gremlin": "g.V()", "aliases": {"g": "graph_b"}}, op="eval")
    assert request_source(parse_request(data)) == "graph_b"


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_a_request_without_aliases_names_no_source(serializer: type) -> None:
    data = frame(serializer, {"gremlin": "1+1"}, op="eval")
    assert request_source(parse_request(data)) is None


def test_a_java_driver_style_typed_map_of_aliases_is_read() -> None:
    request_id = str(uuid.uuid4())
    text = (
        '{"requestId":{"@type":"g:UUID","@value":"' + request_id + '"},"op":"eval",'
        '"processor":"","args":{"@type":"g:Map","@value":["gremlin","g.V()","aliases",'
        '{"@type":"g:Map","@value":["g","g3"]}]}}'
    )
    assert request_source(parse_request(text)) == "g3"


def test_a_data_string_named_aliases_is_not_mistaken_for_the_argument() -> None:
    bytecode = __.V().has("aliases", "x").bytecode
    data = frame(GraphBinarySerializersV1, {"gremlin": bytecode, "aliases": {"g": "g"}})
    assert request_source(parse_request(data)) == "g"


def test_gremlin_servers_unknown_source_answer_is_recognised_in_the_raw_frame() -> None:
    message = "The traversal source [g2] for alias [g] is not configured on the server."
    assert answer_says_source_unknown(b"\x81\x00..." + message.encode())
    assert answer_says_source_unknown('{"status":{"message":"' + message + '","code":499}}')
    assert not answer_says_source_unknown(b"\x81\x00...Could not locate method: V()")
