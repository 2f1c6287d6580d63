"""frame_may_write: the byte-level read-only check a proxy uses, on frames gremlinpython writes.

It must flag every traversal bytecode_may_write flags (a miss could apply a write twice); it
may flag more (a false alarm only costs a retry).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from gremlin_python.driver.request import RequestMessage
from gremlin_python.driver.serializer import (
    GraphBinarySerializersV1,
    GraphSONSerializersV2d0,
    GraphSONSerializersV3d0,
)
from gremlin_python.process.graph_traversal import GraphTraversalSource, __
from gremlin_python.process.traversal import Bytecode, P
from gremlin_python.structure.graph import Graph
from hypothesis import given
from hypothesis import strategies as st

from gremlinlb.core import bytecode_may_write, frame_may_write

g = GraphTraversalSource(Graph(), None)

SERIALIZERS = [GraphBinarySerializersV1, GraphSONSerializersV3d0, GraphSONSerializersV2d0]

WRITES = {
    "add_v": lambda: g.add_v("person").property("name", "x"),
    "add_e": lambda: g.V(1).add_e("knows").to(__.V(2)),
    "property": lambda: g.V(1).property("age", 3),
    "drop": lambda: g.V().drop(),
    "merge_v": lambda: g.merge_v({"name": "x"}),
    "merge_e": lambda: g.merge_e({"weight": 1}),
    "nested": lambda: g.V().fold().coalesce(__.unfold(), __.add_v("person")),
    "deeply_nested": lambda: g.V().map(__.union(__.identity(), __.side_effect(__.drop()))),
    "lambda": lambda: g.V().map(lambda: "it.get()"),
    "groovy_lambda": lambda: g.V().map(lambda: ("it.get()", "gremlin-groovy")),
    "io": lambda: g.io("graph.xml").read(),
    "call": lambda: g.call("tinker.search"),
}
READS = {
    "filter": lambda: g.V().has("person", "age", P.gt(30)).out("knows").limit(5),
    "properties": lambda: g.V().properties("name"),
    "value_map": lambda: g.V().value_map(True),
    "path": lambda: g.V().out().path().by("name"),
    "group": lambda: g.V().group().by("name").by(__.count()),
    "inject": lambda: g.inject(1, "two", 3.0),
}


def frame(serializer: Any, bytecode: Any) -> bytes:
    message = RequestMessage("traversal", "bytecode", {"gremlin": bytecode, "aliases": {"g": "g"}})
    data: bytes = serializer.serialize_message(str(uuid.uuid4()), message)
    return data


def mime_of(data: bytes) -> str:
    return data[1 : 1 + data[0]].decode()


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=lambda s: s.__name__)
@pytest.mark.parametrize("name", sorted(WRITES))
def test_every_mutating_traversal_is_flagged(serializer: Any, name: str) -> None:
    bytecode = WRITES[name]().bytecode
    assert bytecode_may_write(bytecode)
    data = frame(serializer(), bytecode)
    assert frame_may_write(data, mime_of(data))


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=lambda s: s.__name__)
@pytest.mark.parametrize("name", sorted(READS))
def test_plain_reads_are_not_flagged(serializer: Any, name: str) -> None:
    data = frame(serializer(), READS[name]().bytecode)
    assert not frame_may_write(data, mime_of(data))


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=lambda s: s.__name__)
def test_transaction_commit_is_flagged(serializer: Any) -> None:
    data = frame(serializer(), Bytecode.GraphOp.commit())
    assert frame_may_write(data, mime_of(data))


def test_a_step_name_as_a_data_value_errs_towards_writing() -> None:
    data = frame(GraphBinarySerializersV1(), g.V().has("op", "drop").bytecode)
    assert frame_may_write(data, mime_of(data))


def test_text_frames_are_read_as_json() -> None:
    text = '{"requestId":"x","op":"bytecode","args":{"gremlin":{"step":[["drop"]]}}}'
    assert frame_may_write(text, "")


ANONYMOUS_WRITES = [
    lambda: __.add_v("person"),
    lambda: __.add_e("knows").to(__.V(2)),
    lambda: __.property("age", 3),
    lambda: __.drop(),
    lambda: __.merge_v({"name": "x"}),
    lambda: __.map(lambda: "it.get()"),
]
ANONYMOUS_READS = [
    lambda: __.out("knows"),
    lambda: __.values("name"),
    lambda: __.has("age", P.lt(3)),
    lambda: __.properties("name"),
]


@given(
    st.lists(st.sampled_from(ANONYMOUS_READS), max_size=3),
    st.sampled_from(ANONYMOUS_WRITES),
    st.integers(0, 3),
    st.sampled_from(SERIALIZERS),
)
def test_a_write_anywhere_among_reads_is_flagged(
    reads: list[Any], write: Any, position: int, serializer: Any
) -> None:
    children = [make() for make in reads]
    children.insert(min(position, len(children)), write())
    data = frame(serializer(), g.V().union(*children).bytecode)
    assert frame_may_write(data, mime_of(data))


@given(st.lists(st.sampled_from(ANONYMOUS_READS), min_size=1, max_size=4))
def test_reads_alone_are_not_flagged(reads: list[Any]) -> None:
    for serializer in SERIALIZERS:
        data = frame(serializer(), g.V().union(*[make() for make in reads]).bytecode)
        assert not frame_may_write(data, mime_of(data))
