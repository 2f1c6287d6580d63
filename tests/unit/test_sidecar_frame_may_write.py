"""frame_may_write: the read-only test a proxy runs on a serialized request before it may send
the request twice (retry, hedge). It must never class a request that can write as read-only,
whatever the serializer and however the request is spelled; it should class plain reads as
read-only, or it protects nothing.

Requests are built with gremlinpython and encoded by gremlinpython's own serializers.
"""

from __future__ import annotations

import functools
import json
import random
import struct
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from gremlin_python.driver.request import RequestMessage
from gremlin_python.driver.serializer import (
    GraphBinarySerializersV1,
    GraphSONSerializersV2d0,
    GraphSONSerializersV3d0,
)
from gremlin_python.process.graph_traversal import GraphTraversal, GraphTraversalSource, __
from gremlin_python.process.strategies import (
    PartitionStrategy,
    ReadOnlyStrategy,
    SubgraphStrategy,
)
from gremlin_python.process.traversal import (
    Bindings,
    Bytecode,
    Cardinality,
    Merge,
    Order,
    P,
    TextP,
    TraversalStrategy,
)
from gremlin_python.structure.graph import Graph, Vertex
from hypothesis import given, settings
from hypothesis import strategies as st

from gremlinlb.core import bytecode_may_write, frame_may_write

g = GraphTraversalSource(Graph(), None)

GRAPHBINARY = GraphBinarySerializersV1
SERIALIZERS = [GraphBinarySerializersV1, GraphSONSerializersV3d0, GraphSONSerializersV2d0]
GRAPHSON = [GraphSONSerializersV3d0, GraphSONSerializersV2d0]


def encode(
    serializer: Any, gremlin: Any, op: str = "bytecode", processor: str = "traversal"
) -> tuple[bytes, str]:
    """(payload after the mime prefix, mime): what the sidecar hands to frame_may_write."""
    message = RequestMessage(processor, op, {"gremlin": gremlin, "aliases": {"g": "g"}})
    frame: bytes = serializer().serialize_message(str(uuid.uuid4()), message)
    return frame[1 + frame[0] :], frame[1 : 1 + frame[0]].decode("ascii")


def may_write(serializer: Any, traversal: GraphTraversal | Bytecode) -> bool:
    bytecode = traversal.bytecode if isinstance(traversal, GraphTraversal) else traversal
    return frame_may_write(*encode(serializer, bytecode))


def graphson_text(serializer: Any, traversal: GraphTraversal) -> tuple[str, str]:
    payload, mime = encode(serializer, traversal.bytecode)
    return payload.decode("utf-8"), mime


class CustomStrategy(TraversalStrategy):  # type: ignore[misc]  # gremlinpython is untyped
    """A provider's strategy: server code that could rewrite a read into a write."""

    def __init__(self) -> None:
        super().__init__(fqcn="com.example.graph.RewritingStrategy")


WRITES: dict[str, Callable[[], GraphTraversal | Bytecode]] = {
    "add_v": lambda: g.add_v("person").property("name", "x"),
    "add_e": lambda: g.V(1).add_e("knows").to(__.V(2)),
    "property": lambda: g.V(1).property(Cardinality.single, "age", 3),
    "drop": lambda: g.V().drop(),
    "merge_v": lambda: g.merge_v({"name": "x"}).option(Merge.on_create, {"a": 1}),
    "merge_e": lambda: g.merge_e({"weight": 1}),
    "io": lambda: g.io("graph.xml").read(),
    "call": lambda: g.call("tinker.search"),
    "commit": lambda: Bytecode.GraphOp.commit(),
    "lambda": lambda: g.V().map(lambda: "it.get()"),
    "groovy_lambda": lambda: g.V().map(lambda: ("it.get()", "gremlin-groovy")),
    "child": lambda: g.V().fold().coalesce(__.unfold(), __.add_v("person")),
    "grandchild": lambda: g.V().map(__.union(__.identity(), __.side_effect(__.drop()))),
    "filter_child": lambda: g.V().filter_(__.property("x", 1)),
    "side_effect_lambda_source": lambda: g.with_side_effect("a", lambda: "x -> 1").V(),
    "strategy_with_a_writing_child": lambda: g.with_strategies(
        SubgraphStrategy(vertices=__.add_v("x"))
    ).V(),
    "strategy_not_from_tinkerpop": lambda: g.with_strategies(CustomStrategy()).V(),
}
READS: dict[str, Callable[[], GraphTraversal]] = {
    "filter": lambda: g.V().has("person", "age", P.gt(30)).out("knows").limit(5),
    "properties": lambda: g.V().properties("name"),
    "value_map": lambda: g.V().value_map(True),
    "path": lambda: g.V().out().path().by("name"),
    "group": lambda: g.V().group().by("name").by(__.count()),
    "inject": lambda: g.inject(1, "two", 3.0, True, None, [1, 2], {"a": {3}}, uuid.uuid4()),
    "children": lambda: g.V().coalesce(__.out(), __.in_()).union(__.values("a"), __.id_()),
    "order_and_text": lambda: (
        g.V().has("name", TextP.containing("a")).order().by("age", Order.desc)
    ),
    "vertex_argument": lambda: g.V(Vertex(1, "person")).out(),
    "binding": lambda: g.V(Bindings.of("x", 1)),
    "with_side_effect": lambda: g.with_side_effect("a", [1, 2]).V().where(P.within("a")),
    "tinkerpop_strategies": lambda: g.with_strategies(
        SubgraphStrategy(vertices=__.has("name", "x")),
        ReadOnlyStrategy(),
        PartitionStrategy(partition_key="p", write_partition="a", read_partitions=["a"]),
    ).V(),
    "without_strategies": lambda: g.without_strategies(ReadOnlyStrategy).V(),
    "step_names_as_values": lambda: g.V().has("op", "drop").has("addV", P.within(["property"])),
}


# -- every serializer ---------------------------------------------------------------------


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=lambda s: s.__name__)
@pytest.mark.parametrize("name", sorted(WRITES))
def test_every_mutating_request_may_write(serializer: Any, name: str) -> None:
    traversal = WRITES[name]()
    bytecode = traversal.bytecode if isinstance(traversal, GraphTraversal) else traversal
    assert bytecode_may_write(bytecode)
    assert may_write(serializer, traversal)


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=lambda s: s.__name__)
@pytest.mark.parametrize("name", sorted(READS))
def test_plain_reads_are_read_only(serializer: Any, name: str) -> None:
    traversal = READS[name]()
    assert not bytecode_may_write(traversal.bytecode)
    assert not may_write(serializer, traversal)


def test_checking_a_traversal_leaves_it_unchanged() -> None:
    child = __.has("name", "x")
    traversal = g.with_strategies(SubgraphStrategy(vertices=child)).V().union(__.out())
    before = (str(traversal.bytecode), str(child.bytecode))
    bytecode_may_write(traversal.bytecode)
    assert (str(traversal.bytecode), str(child.bytecode)) == before


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=lambda s: s.__name__)
def test_scripts_may_write(serializer: Any) -> None:
    assert frame_may_write(*encode(serializer, "g.V().count()", "eval", ""))


@pytest.mark.parametrize("mime", ["application/vnd.gremlin-v1.0+json", "text/plain", ""])
def test_an_unknown_mime_type_may_write(mime: str) -> None:
    payload, _ = encode(GraphSONSerializersV3d0, g.V().bytecode)
    assert frame_may_write(payload, mime)


@pytest.mark.parametrize("serializer", GRAPHSON, ids=lambda s: s.__name__)
def test_untyped_graphson_mime_types_are_judged_by_the_same_rule(serializer: Any) -> None:
    read, mime = encode(serializer, g.V().out().bytecode)
    write, _ = encode(serializer, g.V().drop().bytecode)
    assert not frame_may_write(read, mime + ";types=false")
    assert frame_may_write(write, mime + ";types=false")


# -- GraphSON spelled differently ---------------------------------------------------------


@pytest.mark.parametrize("serializer", GRAPHSON, ids=lambda s: s.__name__)
def test_a_step_name_spelled_with_json_escapes_may_write(serializer: Any) -> None:
    text, mime = graphson_text(serializer, g.add_v("person"))
    escaped = text.replace('"addV"', '"add\\u0056"')
    assert escaped != text
    assert frame_may_write(escaped, mime)
    assert frame_may_write(escaped.encode("utf-8"), mime)


@pytest.mark.parametrize("serializer", GRAPHSON, ids=lambda s: s.__name__)
def test_a_lambda_type_spelled_with_json_escapes_may_write(serializer: Any) -> None:
    text, mime = graphson_text(serializer, g.V().map(lambda: "it.get()"))
    escaped = text.replace('"g:Lambda"', '"g:\\u004cambda"')
    assert escaped != text
    assert frame_may_write(escaped, mime)


def test_text_frames_are_read_as_graphson() -> None:
    text, _ = graphson_text(GraphSONSerializersV3d0, g.V().drop())
    read, _ = graphson_text(GraphSONSerializersV3d0, g.V().out())
    assert frame_may_write(text, "application/json")
    assert not frame_may_write(read, "application/json")


def test_args_written_as_a_typed_map_like_the_java_driver_are_understood() -> None:
    for traversal, expected in [(g.V().out(), False), (g.V().drop(), True)]:
        text, mime = graphson_text(GraphSONSerializersV3d0, traversal)
        document = json.loads(text)
        flat = [item for pair in document["args"].items() for item in pair]
        document["args"] = {"@type": "g:Map", "@value": flat}
        assert frame_may_write(json.dumps(document), mime) is expected


def bytecode_text(steps: str) -> str:
    return (
        '{"requestId":"' + str(uuid.uuid4()) + '","op":"bytecode","processor":"traversal",'
        '"args":{"gremlin":{"@type":"g:Bytecode","@value":' + steps + '},"aliases":{"g":"g"}}}'
    )


def test_handwritten_graphson_bytecode_is_read_only_when_it_only_reads() -> None:
    assert not frame_may_write(
        bytecode_text('{"step":[["V"],["out","knows"]]}'), "application/json"
    )


@pytest.mark.parametrize(
    ("case", "steps"),
    [
        ("a second step list", '{"step":[["V"]],"step":[["drop"]]}'),
        ("a step list under another key", '{"step":[["V"]],"x":{"step":[["drop"]]}}'),
        ("a step name that is not a string", '{"step":[["V"],[{"@type":"g:Int32","@value":1}]]}'),
        ("an empty instruction", '{"step":[["V"],[]]}'),
        ("a custom type", '{"step":[["V",{"@type":"janusgraph:RelationIdentifier","@value":1}]]}'),
        ("a typed value with a third key", '{"step":[["V",{"@type":"g:Int32","@value":1,"x":2}]]}'),
        ("a typed value without @value", '{"step":[["V",{"@type":"g:Int32"}]]}'),
    ],
)
def test_graphson_bytecode_of_an_odd_shape_may_write(case: str, steps: str) -> None:
    assert frame_may_write(bytecode_text(steps), "application/json"), case


def test_a_second_op_key_may_write() -> None:
    text = bytecode_text('{"step":[["V"]]}')
    assert frame_may_write(text[:-1] + ',"op":"eval"}', "application/json")


def test_graphson_that_does_not_parse_may_write() -> None:
    text = bytecode_text('{"step":[["V"]]}')
    for broken in (text[:-1], text + "x", text.encode("utf-16"), b"\xff" + text.encode()):
        assert frame_may_write(broken, "application/json")


def test_json_nested_100000_deep_may_write() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    assert frame_may_write(bytecode_text('{"step":[["V",' + deep + "]]}"), "application/json")


def test_json_nested_just_within_the_bound_is_judged() -> None:
    nested = "[" * 50 + "1" + "]" * 50
    assert not frame_may_write(
        bytecode_text('{"step":[["inject",' + nested + "]]}"), "application/json"
    )


# -- GraphBinary ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["filter", "children", "tinkerpop_strategies", "inject"])
def test_every_truncation_of_a_graphbinary_read_may_write(name: str) -> None:
    payload, mime = encode(GRAPHBINARY, READS[name]().bytecode)
    assert not frame_may_write(payload, mime)
    for end in range(len(payload)):
        assert frame_may_write(payload[:end], mime), end


def test_bytes_after_the_graphbinary_arguments_may_write() -> None:
    payload, mime = encode(GRAPHBINARY, g.V().bytecode)
    assert frame_may_write(payload + b"\x00", mime)


def graphbinary_inject(value: bytes) -> tuple[bytes, str]:
    """A g.inject(<value>) request whose one argument is the given fully qualified bytes."""
    payload, mime = encode(GRAPHBINARY, g.inject("@@@@").bytecode)
    marker = b"\x03\x00" + struct.pack(">i", 4) + b"@@@@"
    assert payload.count(marker) == 1
    return payload.replace(marker, value), mime


def test_a_graphbinary_read_with_a_spliced_value_is_read_only() -> None:
    assert not frame_may_write(*graphbinary_inject(b"\x01\x00\x00\x00\x00\x07"))


@pytest.mark.parametrize(
    ("case", "value"),
    [
        ("custom type", b"\x00\x00" + struct.pack(">i", 3) + b"abc" + b"\x00" * 8),
        ("unknown type code", b"\x7f\x00\x00\x00\x00\x01"),
        ("TinkerGraph", b"\x10\x00" + b"\x00" * 8),
        ("odd value flag", b"\x01\x02\x00\x00\x00\x07"),
        ("unspecified null without its null flag", b"\xfe\x00"),
        ("negative length", b"\x09\x00\xff\xff\xff\xff"),
        ("lambda", b"\x1d\x00" + struct.pack(">i", 6) + b"groovy" + struct.pack(">ii", 0, 0)),
        ("enum not named by a string", b"\x20\x00\x01\x00\x00\x00\x00\x01"),
    ],
)
def test_graphbinary_values_not_understood_may_write(case: str, value: bytes) -> None:
    assert frame_may_write(*graphbinary_inject(value)), case


def test_a_graphbinary_step_name_with_bytes_that_are_not_utf8_is_no_mutating_step() -> None:
    payload, mime = encode(GRAPHBINARY, g.V().bytecode)
    odd = payload.replace(struct.pack(">i", 1) + b"V", struct.pack(">i", 1) + b"\xff")
    assert not frame_may_write(odd, mime)  # Gremlin Server decodes it to U+FFFD, not a step


def test_a_graphbinary_request_that_is_not_bytecode_may_write() -> None:
    payload, mime = encode(GRAPHBINARY, g.V().bytecode)
    assert frame_may_write(payload.replace(b"bytecode", b"bytecodX", 1), mime)
    assert frame_may_write(payload.decode("latin-1"), mime)  # a text frame is never GraphBinary


def test_graphbinary_nested_deeper_than_the_bound_may_write() -> None:
    nested = b"\x09\x00\x00\x00\x00\x01" * 200 + b"\x01\x00\x00\x00\x00\x07"
    assert frame_may_write(*graphbinary_inject(nested))
    assert not frame_may_write(*graphbinary_inject(nested[6 * 150 :]))


# -- properties ----------------------------------------------------------------------------

VALUES = st.sampled_from(["name", "drop", "addV", "property", "x", 1, 2.5, True])
KEYS = st.sampled_from(["name", "age", "drop", "addV"])


LEAF_STEPS: st.SearchStrategy[Callable[[GraphTraversal], GraphTraversal]] = st.one_of(
    st.builds(lambda label: lambda t: t.out(label), KEYS),
    st.builds(lambda key, value: lambda t: t.has(key, value), KEYS, VALUES),
    st.builds(lambda key, value: lambda t: t.has(key, P.within([value])), KEYS, VALUES),
    st.builds(lambda key: lambda t: t.values(key), KEYS),
    st.builds(lambda n: lambda t: t.limit(n), st.integers(0, 100)),
    st.builds(lambda value: lambda t: t.constant(value), VALUES),
    st.sampled_from(
        [
            lambda t: t.identity(),
            lambda t: t.fold(),
            lambda t: t.unfold(),
            lambda t: t.count(),
            lambda t: t.id_(),
            lambda t: t.path(),
            lambda t: t.dedup(),
            lambda t: t.order().by("name", Order.desc),
        ]
    ),
)


# Steps that hold child traversals, each given its children.
PARENTS: list[tuple[int, Callable[..., Callable[[GraphTraversal], GraphTraversal]]]] = [
    (1, lambda c: lambda t: t.local(c)),
    (1, lambda c: lambda t: t.map(c)),
    (1, lambda c: lambda t: t.where(c)),
    (1, lambda c: lambda t: t.optional(c)),
    (1, lambda c: lambda t: t.side_effect(c)),
    (1, lambda c: lambda t: t.repeat(c).times(2)),
    (1, lambda c: lambda t: t.project("a").by(c)),
    (2, lambda a, b: lambda t: t.union(a, b)),
    (2, lambda a, b: lambda t: t.coalesce(a, b)),
    (3, lambda a, b, c: lambda t: t.choose(a, b, c)),
]

MUTATIONS: list[Callable[[GraphTraversal], GraphTraversal]] = [
    lambda t: t.add_v("person"),
    lambda t: t.add_e("knows").to(__.V(2)),
    lambda t: t.property("age", 3),
    lambda t: t.drop(),
    lambda t: t.merge_v({"name": "x"}),
    lambda t: t.merge_e({"weight": 1}),
    lambda t: t.map(lambda: "it.get()"),
    lambda t: t.side_effect(lambda: ("x -> x", "gremlin-groovy")),
    lambda t: t.call("tinker.search"),
]


@st.composite
def anonymous_traversals(draw: st.DrawFn, depth: int = 0, write: bool = False) -> Bytecode:
    """A child traversal of up to 3 levels; with `write`, one mutation somewhere inside it, at
    this level or in one of its children at any depth. Bytecode, not the GraphTraversal: any
    attribute lookup on a GraphTraversal (even hypothesis printing it) appends a values() step."""
    count = draw(st.integers(1, 3))
    kinds = [draw(st.booleans()) and depth < 3 for _ in range(count)]  # True: a parent step
    write_here = write and (depth >= 3 or not any(kinds) or draw(st.booleans()))
    writing_parent = (
        draw(st.sampled_from([i for i, parent in enumerate(kinds) if parent]))
        if write and not write_here
        else -1
    )
    steps: list[Callable[[GraphTraversal], GraphTraversal]] = []
    for index, parent in enumerate(kinds):
        if not parent:
            steps.append(draw(LEAF_STEPS))
            continue
        arity, make = draw(st.sampled_from(PARENTS))
        carrier = draw(st.integers(0, arity - 1)) if index == writing_parent else -1
        children = [draw(children_of(depth + 1, i == carrier)) for i in range(arity)]
        steps.append(make(*children))
    if write_here:
        steps.insert(draw(st.integers(0, len(steps))), draw(st.sampled_from(MUTATIONS)))
    traversal = __.identity()
    for step in steps:
        traversal = step(traversal)
    return traversal.bytecode


@functools.cache
def children_of(depth: int, write: bool) -> st.SearchStrategy[Bytecode]:
    """One strategy object per (depth, write): hypothesis validates each new one, slowly."""
    return anonymous_traversals(depth, write)


@st.composite
def traversals(draw: st.DrawFn, write: bool) -> Bytecode:
    """g.V()/g.inject() then a child traversal's steps; the mutation may also sit in a source
    step's settings (a strategy's child traversal)."""
    in_strategy = write and draw(st.booleans())
    source = g
    if in_strategy or draw(st.booleans()):
        child = draw(children_of(1, in_strategy))
        source = g.with_strategies(SubgraphStrategy(vertices=child))
    if draw(st.booleans()):
        source = source.with_side_effect("s", draw(VALUES))
    start = source.V() if draw(st.booleans()) else source.inject(draw(VALUES))
    return start.local(draw(children_of(0, write and not in_strategy))).bytecode


def escaped_json(value: Any, rng: random.Random, share: float) -> str:
    """JSON for `value` with about `share` of all string characters (keys, type names, step
    names, values) written as \\uXXXX escapes: the same document to any JSON reader."""
    if isinstance(value, dict):
        items = (
            f"{escaped_json(k, rng, share)}:{escaped_json(v, rng, share)}" for k, v in value.items()
        )
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(escaped_json(item, rng, share) for item in value) + "]"
    if isinstance(value, str):
        chars = (f"\\u{ord(c):04x}" if rng.random() < share else json.dumps(c)[1:-1] for c in value)
        return '"' + "".join(chars) + '"'
    return json.dumps(value)


def encodings(bytecode: Bytecode, rng: random.Random) -> list[tuple[str, bytes | str, str]]:
    """Every real encoding of the request, named: GraphBinary, GraphSON 2 and 3 as gremlinpython
    writes them, as a text frame, under the untyped mime types, and re-written with random
    JSON escapes of some, many and all string characters."""
    forms: list[tuple[str, bytes | str, str]] = [("graphbinary", *encode(GRAPHBINARY, bytecode))]
    for serializer in GRAPHSON:
        payload, mime = encode(serializer, bytecode)
        document = json.loads(payload)
        forms += [
            (mime, payload, mime),
            (f"{mime} text frame", payload.decode("utf-8"), "application/json"),
            (f"{mime};types=false", payload, mime + ";types=false"),
        ]
        forms += [
            (f"{mime} escaped {share}", escaped_json(document, rng, share).encode("ascii"), mime)
            for share in (0.05, 0.3, 1.0)
        ]
    return forms


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_no_encoding_of_a_traversal_with_a_mutating_step_is_read_only(data: st.DataObject) -> None:
    bytecode = data.draw(traversals(write=True))
    rng = random.Random(data.draw(st.integers(0, 2**32)))  # a seed: cheap for hypothesis
    assert bytecode_may_write(bytecode)
    classed_read_only = [
        name
        for name, payload, mime in encodings(bytecode, rng)
        if not frame_may_write(payload, mime)
    ]
    assert classed_read_only == []


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_every_encoding_of_a_plain_read_is_read_only(data: st.DataObject) -> None:
    bytecode = data.draw(traversals(write=False))
    rng = random.Random(data.draw(st.integers(0, 2**32)))  # a seed: cheap for hypothesis
    assert not bytecode_may_write(bytecode)
    classed_may_write = [
        name for name, payload, mime in encodings(bytecode, rng) if frame_may_write(payload, mime)
    ]
    assert classed_may_write == []
