"""JanusGraph's own types in requests, registered with the write check (see
`gremlinlb.core.readonly`): its text and geo predicates (`janusgraph.P`), `Geoshape` and
`RelationIdentifier`, over GraphBinary and GraphSON, so a read that uses them stays a read
(retried and hedged like any other). Written against the registry's public API only: the
model for registering another provider's types.

Layouts from janusgraph-driver's serializers (org.janusgraph.graphdb.tinkerpop.io.binary and
io.graphson.JanusGraphSONModule).
"""

from __future__ import annotations

import struct
from typing import Any

from gremlinlb.core.readonly import (
    MAX_NESTING,
    GraphBinaryReader,
    graphbinary_count,
    graphbinary_string,
    graphbinary_value,
    graphson_typed,
    graphson_walk,
    register_graphbinary_type,
    register_graphson_type,
)

# JanusGraph (janusgraph-driver: GraphBinaryType, JanusGraphTypeSerializer and its subclasses).
# Each of its custom types is `{int32 type id}{value flag}{value}` after the name.

JANUSGRAPH_PREDICATES = frozenset(
    {
        "geoIntersect",
        "geoDisjoint",
        "geoWithin",
        "geoContains",
        "textContains",
        "textNotContains",
        "textContainsFuzzy",
        "textNotContainsFuzzy",
        "textContainsPrefix",
        "textNotContainsPrefix",
        "textContainsRegex",
        "textNotContainsRegex",
        "textContainsPhrase",
        "textNotContainsPhrase",
        "textFuzzy",
        "textNotFuzzy",
        "textPrefix",
        "textNotPrefix",
        "textRegex",
        "textNotRegex",
    }
)
_JANUSGRAPH_PREDICATE_BYTES = frozenset(name.encode("ascii") for name in JANUSGRAPH_PREDICATES)


def _janusgraph_type(type_id: int, read_value: GraphBinaryReader) -> GraphBinaryReader:
    def read(data: bytes, position: int, depth: int) -> int:
        if struct.unpack_from(">i", data, position)[0] != type_id:
            raise ValueError("a JanusGraph type whose id does not match its name")
        flag = data[position + 4]
        if flag == 0x01:
            return position + 5  # null
        if flag != 0x00:
            raise ValueError(f"value flag {flag:#x}")
        return read_value(data, position + 5, depth)

    return read


def _janusgraph_predicate(data: bytes, position: int, depth: int) -> int:
    name, position = graphbinary_string(data, position)  # the predicate's name, then its argument
    if name not in _JANUSGRAPH_PREDICATE_BYTES:
        raise ValueError(f"JanusGraph predicate {name!r}")
    return graphbinary_value(data, position, depth)


def _janusgraph_vertex_id(data: bytes, position: int) -> int:
    if data[position] != 0x01:  # any other marker: a long
        return position + 9
    position += 1
    while data[position] < 0x80:  # ASCII; the last character carries the 0x80 end marker
        position += 1
    return position + 1


def _janusgraph_relation_identifier(data: bytes, position: int, depth: int) -> int:
    position = _janusgraph_vertex_id(data, position) + 16  # out-vertex, type id, relation id
    return _janusgraph_vertex_id(data, position)  # in-vertex (0 for a property)


_GEOSHAPE_FORMAT_VERSION = 2
_GEOSHAPE_FIXED = {0: 16, 1: 24, 2: 32}  # point, circle, box: doubles
_GEOSHAPE_POINTS = frozenset({3, 4, 5})  # line, polygon, multi-point: one list of points
_GEOSHAPE_POINT_LISTS = frozenset({6, 7})  # multi-line, multi-polygon
_GEOSHAPE_COLLECTION = 8


def _geoshape(data: bytes, position: int, depth: int) -> int:
    if depth > MAX_NESTING:
        raise ValueError("nested too deep")
    if data[position] != _GEOSHAPE_FORMAT_VERSION:
        raise ValueError(f"Geoshape format {data[position]}")
    shape, position = graphbinary_count(data, position + 1)
    fixed = _GEOSHAPE_FIXED.get(shape)
    if fixed is not None:
        return position + fixed
    if shape in _GEOSHAPE_POINTS:
        return _geoshape_points(data, position)
    if shape in _GEOSHAPE_POINT_LISTS:
        count, position = graphbinary_count(data, position)
        for _ in range(count):
            position = _geoshape_points(data, position)
        return position
    if shape == _GEOSHAPE_COLLECTION:  # shapes, each with a value flag
        count, position = graphbinary_count(data, position)
        for _ in range(count):
            if data[position] == 0x01:
                position += 1
            elif data[position] == 0x00:
                position = _geoshape(data, position + 1, depth + 1)
            else:
                raise ValueError(f"value flag {data[position]:#x}")
        return position
    raise ValueError(f"Geoshape type {shape}")


def _geoshape_points(data: bytes, position: int) -> int:
    count, position = graphbinary_count(data, position)
    return position + 16 * count  # latitude and longitude of each, as doubles


def _graphson_object(content: Any) -> dict[str, Any]:
    if type(content) is not tuple or graphson_typed(content) is not None:
        raise ValueError("a JanusGraph value that is not an object")
    fields = dict(content)
    if len(fields) != len(content):
        raise ValueError("duplicate keys")
    return fields


def _janusgraph_predicate_json(content: Any, depth: int) -> None:
    fields = _graphson_object(content)
    if set(fields) != {"predicate", "value"} or fields["predicate"] not in JANUSGRAPH_PREDICATES:
        raise ValueError("a JanusGraph predicate not understood")
    graphson_walk([fields["value"]], depth)


def _janusgraph_relation_identifier_json(content: Any, depth: int) -> None:
    fields = _graphson_object(content)
    if set(fields) != {"relationId"} or type(fields["relationId"]) is not str:
        raise ValueError("a RelationIdentifier not understood")


def _janusgraph_geoshape_json(content: Any, depth: int) -> None:
    _graphson_object(content)  # coordinates or GeoJSON: data, walked for typed values
    graphson_walk(content, depth)


register_graphbinary_type("janusgraph.Geoshape", _janusgraph_type(0x1000, _geoshape))
register_graphbinary_type(
    "janusgraph.RelationIdentifier", _janusgraph_type(0x1001, _janusgraph_relation_identifier)
)
register_graphbinary_type("janusgraph.P", _janusgraph_type(0x1002, _janusgraph_predicate))
register_graphson_type("janusgraph:Geoshape", _janusgraph_geoshape_json)
register_graphson_type("janusgraph:RelationIdentifier", _janusgraph_relation_identifier_json)
register_graphson_type("janusgraph:JanusGraphP", _janusgraph_predicate_json)
