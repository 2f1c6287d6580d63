"""Provider types in the write check: a read that carries JanusGraph's predicates, Geoshapes or
RelationIdentifiers is known to be a read (so it keeps its retries and hedges), the same with a
mutating step may write, and a custom type nobody registered may write.

Requests are encoded by gremlinpython's own serializers, extended with writers for JanusGraph's
types exactly as the janusgraphpython package (1.1.1) extends them (its JanusGraphBinaryWriter
and JanusGraphSONWriter): GraphBinary custom type 0x00, the type's name, JanusGraph's int32 type
id, a value flag, then the value in the layout of janusgraph-driver's serializers. Geoshape has
no writer in janusgraphpython; its bytes follow GeoshapeGraphBinarySerializer (format 2).
These writers were checked once against janusgraphpython 1.1.1 itself (not a dependency here:
it pins gremlinpython 3.7.3): textContains, textContainsFuzzy and RelationIdentifiers of long and
string vertex ids, edge and property, encode to the same GraphBinary bytes.
"""

from __future__ import annotations

import struct
import uuid
from typing import Any

import pytest
from gremlin_python.driver.request import RequestMessage
from gremlin_python.driver.serializer import (
    GraphBinarySerializersV1,
    GraphSONMessageSerializer,
)
from gremlin_python.process.graph_traversal import GraphTraversal, GraphTraversalSource, __
from gremlin_python.process.traversal import P
from gremlin_python.structure.graph import Graph
from gremlin_python.structure.io import graphbinaryV1, graphsonV3d0

from gremlinlb.core import frame_may_write

g = GraphTraversalSource(Graph(), None)
GRAPHBINARY_MIME = "application/vnd.graphbinary-v1.0"
GRAPHSON_MIME = "application/vnd.gremlin-v3.0+json"


# -- JanusGraph's types, as its Python and Java drivers write them -------------------------


class JanusGraphP(P):  # type: ignore[misc]
    """textContains("x"), geoWithin(shape)...: a predicate name and one argument."""

    def __init__(self, operator: str, value: Any) -> None:
        self.operator = operator
        self.value = value
        self.other = None


class RelationIdentifier:
    """An edge or property id: out-vertex id (long or string), type id, relation id, in-vertex
    id (None for a property)."""

    def __init__(
        self, out_vertex: int | str, type_id: int, relation_id: int, in_vertex: int | str | None
    ) -> None:
        self.out_vertex = out_vertex
        self.type_id = type_id
        self.relation_id = relation_id
        self.in_vertex = in_vertex
        self.text = f"{relation_id}-{out_vertex}-{type_id}"


class Geoshape:
    """A shape as GeoshapeGraphBinarySerializer writes it: its type code, then its body."""

    def __init__(self, shape_code: int, body: bytes) -> None:
        self.shape_code = shape_code
        self.body = body

    @staticmethod
    def circle(latitude: float, longitude: float, radius_km: float) -> Geoshape:
        return Geoshape(1, struct.pack(">ddd", latitude, longitude, radius_km))

    @staticmethod
    def polygon(*points: tuple[float, float]) -> Geoshape:
        body = struct.pack(">i", len(points)) + b"".join(struct.pack(">dd", *p) for p in points)
        return Geoshape(4, body)

    @staticmethod
    def collection(*shapes: Geoshape) -> Geoshape:
        body = struct.pack(">i", len(shapes))
        for shape in shapes:  # each with a value flag (readValue nullable)
            body += b"\x00\x02" + struct.pack(">i", shape.shape_code) + shape.body
        return Geoshape(8, body)


def _custom_prefix(name: str, type_id: int) -> bytes:
    encoded = name.encode("utf-8")
    return (
        b"\x00" + struct.pack(">i", len(encoded)) + encoded + struct.pack(">i", type_id) + b"\x00"
    )


def _marked(text: str) -> bytes:
    raw = bytearray(text.encode("ascii"))
    raw[-1] |= 0x80  # the end marker of RelationIdentifier's strings
    return bytes(raw)


def _vertex_id(value: int | str | None) -> bytes:
    if isinstance(value, str):
        return b"\x01" + _marked(value)
    return b"\x00" + struct.pack(">q", value or 0)


class _JanusGraphPIO(graphbinaryV1._GraphBinaryTypeIO):  # type: ignore[misc]
    @classmethod
    def dictify(cls, obj: JanusGraphP, writer: Any, to_extend: bytearray, *_: Any) -> bytearray:
        to_extend += _custom_prefix("janusgraph.P", 0x1002)
        operator = obj.operator.encode("utf-8")
        to_extend += struct.pack(">i", len(operator)) + operator
        writer.to_dict(obj.value, to_extend)
        return to_extend


class _RelationIdentifierIO(graphbinaryV1._GraphBinaryTypeIO):  # type: ignore[misc]
    @classmethod
    def dictify(
        cls, obj: RelationIdentifier, writer: Any, to_extend: bytearray, *_: Any
    ) -> bytearray:
        to_extend += _custom_prefix("janusgraph.RelationIdentifier", 0x1001)
        to_extend += _vertex_id(obj.out_vertex)
        to_extend += struct.pack(">qq", obj.type_id, obj.relation_id)
        to_extend += _vertex_id(obj.in_vertex)
        return to_extend


class _GeoshapeIO(graphbinaryV1._GraphBinaryTypeIO):  # type: ignore[misc]
    @classmethod
    def dictify(cls, obj: Geoshape, writer: Any, to_extend: bytearray, *_: Any) -> bytearray:
        to_extend += _custom_prefix("janusgraph.Geoshape", 0x1000)
        to_extend += b"\x02" + struct.pack(">i", obj.shape_code) + obj.body
        return to_extend


class _JanusGraphPJson(graphsonV3d0._GraphSONTypeIO):  # type: ignore[misc]
    @classmethod
    def dictify(cls, p: JanusGraphP, writer: Any) -> Any:
        value = {"predicate": p.operator, "value": writer.to_dict(p.value)}
        return {"@type": "janusgraph:JanusGraphP", "@value": value}


class _RelationIdentifierJson(graphsonV3d0._GraphSONTypeIO):  # type: ignore[misc]
    @classmethod
    def dictify(cls, relation: RelationIdentifier, writer: Any) -> Any:
        return {"@type": "janusgraph:RelationIdentifier", "@value": {"relationId": relation.text}}


class _GeoshapeJson(graphsonV3d0._GraphSONTypeIO):  # type: ignore[misc]
    @classmethod
    def dictify(cls, shape: Geoshape, writer: Any) -> Any:  # as GeoshapeGsonSerializerV2d0
        coordinates = [writer.to_dict(1.5), writer.to_dict(2.5)]
        return {"@type": "janusgraph:Geoshape", "@value": {"coordinates": coordinates}}


def janusgraph_graphbinary() -> GraphBinarySerializersV1:
    writer = graphbinaryV1.GraphBinaryWriter(
        [
            (JanusGraphP, _JanusGraphPIO),
            (RelationIdentifier, _RelationIdentifierIO),
            (Geoshape, _GeoshapeIO),
        ]
    )
    return GraphBinarySerializersV1(graphbinaryV1.GraphBinaryReader(), writer)


def janusgraph_graphson() -> GraphSONMessageSerializer:
    writer = graphsonV3d0.GraphSONWriter(
        [
            (JanusGraphP, _JanusGraphPJson),
            (RelationIdentifier, _RelationIdentifierJson),
            (Geoshape, _GeoshapeJson),
        ]
    )
    return GraphSONMessageSerializer(graphsonV3d0.GraphSONReader(), writer)


def graphbinary(traversal: GraphTraversal) -> bytes:
    message = RequestMessage("traversal", "bytecode", {"gremlin": traversal.bytecode})
    frame: bytes = janusgraph_graphbinary().serialize_message(str(uuid.uuid4()), message)
    return frame[1 + frame[0] :]  # the payload after the mime prefix, as the sidecar passes it


def graphson(traversal: GraphTraversal) -> bytes:
    message = RequestMessage("traversal", "bytecode", {"gremlin": traversal.bytecode})
    frame: bytes = janusgraph_graphson().serialize_message(str(uuid.uuid4()), message)
    return frame[1 + frame[0] :]


def text_contains(query: str) -> JanusGraphP:
    return JanusGraphP("textContains", query)


def geo_within(shape: Geoshape) -> JanusGraphP:
    return JanusGraphP("geoWithin", shape)


EDGE = RelationIdentifier(4096, 1029, 8193, 8200)
EDGE_OF_STRING_IDS = RelationIdentifier("alice", 1029, 8193, "bob")
PROPERTY = RelationIdentifier(4096, 517, 12289, None)
PARIS = Geoshape.circle(48.85, 2.35, 10.0)
AREA = Geoshape.polygon((0.0, 0.0), (0.0, 1.0), (1.0, 1.0), (0.0, 0.0))

READS = {
    "textContains": g.V().has("bio", text_contains("graph")).values("name"),
    "every text predicate": g.V().or_(
        *[__.has("bio", JanusGraphP(name, "x")) for name in ("textContainsPrefix", "textRegex")],
        __.has("bio", JanusGraphP("textContainsFuzzy", "grpah")),
        __.has("bio", JanusGraphP("textNotContainsPhrase", "a b")),
    ),
    "geoWithin a circle": g.V().has("place", geo_within(PARIS)).count(),
    "geoIntersect a polygon": g.V().has("place", JanusGraphP("geoIntersect", AREA)),
    "geoWithin a collection": g.V().has("place", geo_within(Geoshape.collection(PARIS, AREA))),
    "an edge by its RelationIdentifier": g.E(EDGE).in_v(),
    "edges of string vertex ids": g.E(EDGE_OF_STRING_IDS, EDGE).count(),
    "a property id": g.V().properties().has_id(PROPERTY),
    "all of them": g.E(EDGE).out_v().has("bio", text_contains("x")).has("place", geo_within(AREA)),
}

WRITES = {
    "addV after textContains": g.V().has("bio", text_contains("graph")).add_v("match"),
    "property on an edge by id": g.E(EDGE).property("weight", 0.5),
    "drop by a property id": g.V().properties().has_id(PROPERTY).drop(),
    "addE between geo matches": g.V()
    .has("place", geo_within(PARIS))
    .add_e("near")
    .to(__.V().has("place", geo_within(AREA))),
    # JanusGraph reads a predicate's argument as any value: a traversal in it is walked too
    "a mutating traversal as a predicate's argument": g.V().has(
        "bio", JanusGraphP("textContains", __.add_v("x"))
    ),
}


@pytest.mark.parametrize("name", sorted(READS))
def test_a_graphbinary_read_with_janusgraph_types_is_read_only(name: str) -> None:
    assert not frame_may_write(graphbinary(READS[name]), GRAPHBINARY_MIME)


@pytest.mark.parametrize("name", sorted(WRITES))
def test_a_graphbinary_write_with_janusgraph_types_may_write(name: str) -> None:
    assert frame_may_write(graphbinary(WRITES[name]), GRAPHBINARY_MIME)


@pytest.mark.parametrize("name", sorted(READS))
def test_a_graphson_read_with_janusgraph_types_is_read_only(name: str) -> None:
    assert not frame_may_write(graphson(READS[name]), GRAPHSON_MIME)


@pytest.mark.parametrize("name", sorted(WRITES))
def test_a_graphson_write_with_janusgraph_types_may_write(name: str) -> None:
    assert frame_may_write(graphson(WRITES[name]), GRAPHSON_MIME)


def test_every_truncation_of_a_read_with_janusgraph_types_may_write() -> None:
    payload = graphbinary(READS["all of them"])
    assert not frame_may_write(payload, GRAPHBINARY_MIME)
    for end in range(len(payload)):
        assert frame_may_write(payload[:end], GRAPHBINARY_MIME), end


def replaced(payload: bytes, old: bytes, new: bytes) -> bytes:
    assert payload.count(old) == 1
    return payload.replace(old, new)


def test_a_graphbinary_custom_type_nobody_registered_may_write() -> None:
    payload = graphbinary(g.V().has("bio", text_contains("graph")))
    renamed = replaced(payload, b"\x0cjanusgraph.P", b"\x0caerospike.PP")
    assert frame_may_write(renamed, GRAPHBINARY_MIME)


def test_a_janusgraph_type_whose_id_does_not_match_its_name_may_write() -> None:
    payload = graphbinary(g.V().has("bio", text_contains("graph")))
    wrong = replaced(payload, b"janusgraph.P\x00\x00\x10\x02", b"janusgraph.P\x00\x00\x10\x01")
    assert frame_may_write(wrong, GRAPHBINARY_MIME)


def test_a_janusgraph_predicate_name_janusgraph_does_not_know_may_write() -> None:
    payload = graphbinary(g.V().has("bio", JanusGraphP("textContains", "graph")))
    unknown = replaced(payload, b"textContains", b"textContainX")
    assert frame_may_write(unknown, GRAPHBINARY_MIME)


def test_a_geoshape_of_an_unknown_format_may_write() -> None:
    payload = graphbinary(g.V().has("place", geo_within(PARIS)))
    marker = b"\x10\x00\x00\x02\x00\x00\x00\x01"  # type id, value flag, format, circle
    legacy = replaced(payload, marker, b"\x10\x00\x00\x01\x00\x00\x00\x01")
    assert frame_may_write(legacy, GRAPHBINARY_MIME)


def test_a_graphson_type_nobody_registered_may_write() -> None:
    payload = graphson(g.E(EDGE))
    renamed = replaced(payload, b"janusgraph:RelationIdentifier", b"neptune:RelationIdentifier")
    assert frame_may_write(renamed, GRAPHSON_MIME)


def test_a_graphson_janusgraph_predicate_with_an_extra_field_may_write() -> None:
    payload = graphson(g.V().has("bio", text_contains("graph")))
    extra = replaced(payload, b'"predicate": ', b'"step": [["addV"]], "predicate": ')
    assert frame_may_write(extra, GRAPHSON_MIME)
