"""Deciding whether a request can write, so a retry or a hedge can never apply a write twice.

The rule errs on the side of "may write": a false alarm only costs a retry, a miss could
duplicate data. Two forms are judged:

- a gremlinpython Bytecode object (the in-process client): `bytecode_may_write`;
- a serialized request as a proxy receives it (the sidecar): `frame_may_write` decodes the
  request (GraphBinary v1 or GraphSON v2/v3) as Gremlin Server will, walks every instruction
  of the traversal and of every traversal nested in its arguments, and answers "may write" for
  a mutating step, a lambda, or anything it cannot decode with certainty.

Provider types. Graph providers send values of their own in requests: JanusGraph's text and geo
predicates (`textContains`, `geoWithin`...), its `Geoshape` and its `RelationIdentifier` edge
and property ids. GraphBinary carries them as custom types (type code 0x00, then the type's
name as a String, then bytes only the provider's serializer knows); GraphSON as typed values
with the provider's prefix (`janusgraph:JanusGraphP`). Without a reader for one, the decoder
cannot tell where it ends, and the request counts as "may write" (no retry, no hedge). The
registry below maps a custom type's name to a reader that walks its value as the provider's
server reads it: `register_graphbinary_type(name, reader)` and
`register_graphson_type(name, check)`, with the public helpers below for walking nested values.
JanusGraph's are registered by `gremlinlb.core.janusgraph_types`, written against that API
alone (a model for another provider's). A reader raises (any exception) for anything it does
not understand; a name nobody registered stays "may write".
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

# Steps that change the graph or can run arbitrary code (call, io, program, lambdas).
MUTATING_STEPS = frozenset(
    {
        "addV",
        "addE",
        "addVertex",
        "addEdge",
        "property",
        "properties_set",
        "drop",
        "mergeV",
        "mergeE",
        "io",
        "call",
        "program",
        "tx",  # commit / rollback graph operations
    }
)

# A strategy is server code that rewrites the traversal. TinkerPop's own never add a
# mutating step; a provider's might, so only these count as read-safe.
TINKERPOP_PACKAGE = "org.apache.tinkerpop.gremlin."

# Deeper nesting than this is no real traversal: it counts as "may write" (and bounds recursion).
MAX_NESTING = 100


class BytecodeLike(Protocol):
    """What gremlinpython's Bytecode offers; typed structurally so the core stays I/O free."""

    @property
    def source_instructions(self) -> Sequence[Sequence[Any]]: ...

    @property
    def step_instructions(self) -> Sequence[Sequence[Any]]: ...


def bytecode_may_write(bytecode: BytecodeLike) -> bool:
    """True if the traversal, or any child traversal inside it, has a mutating step or lambda,
    or configures a strategy that is not TinkerPop's own."""
    pending: list[Any] = [bytecode]
    while pending:
        current = pending.pop()
        for instruction in _instructions(current):
            if not instruction:
                continue
            if instruction[0] in MUTATING_STEPS:
                return True
            for argument in _flatten(instruction[1:]):
                if isinstance(argument, type):
                    continue  # a class, as in withoutStrategies(ReadOnlyStrategy)
                if callable(argument):
                    return True  # a lambda: arbitrary code on the server
                own = _own_attributes(argument)
                if "strategy_name" in own and not _tinkerpop_class(own.get("fqcn")):
                    return True
                if "step_instructions" in own:
                    pending.append(argument)
    return False


def _instructions(bytecode: Any) -> Iterator[Sequence[Any]]:
    yield from getattr(bytecode, "source_instructions", ())
    yield from getattr(bytecode, "step_instructions", ())


def _own_attributes(value: Any) -> dict[str, Any]:
    # Never hasattr()/getattr() a traversal: GraphTraversal.__getattr__ appends a values() step
    # for any unknown name, which would change the caller's traversal.
    own = getattr(value, "__dict__", None)
    return own if isinstance(own, dict) else {}


def _flatten(values: Iterable[Any]) -> Iterator[Any]:
    """Every argument value, with collections, bindings, traversals (as their bytecode) and
    strategies (the strategy, then its settings) opened up."""
    for value in values:
        if isinstance(value, dict):
            yield from _flatten(value.keys())
            yield from _flatten(value.values())
        elif isinstance(value, (list, tuple, set, frozenset)):
            yield from _flatten(value)
        elif isinstance(value, type):
            yield value
        else:
            own = _own_attributes(value)
            if type(value).__name__ == "Binding" and "value" in own:
                yield from _flatten([own["value"]])
            elif "bytecode" in own and "step_instructions" not in own:  # a Traversal
                yield own["bytecode"]
            elif "strategy_name" in own and isinstance(own.get("configuration"), dict):
                yield value
                yield from _flatten(own["configuration"].values())
            else:
                yield value


def _tinkerpop_class(fqcn: Any) -> bool:
    return isinstance(fqcn, str) and fqcn.startswith(TINKERPOP_PACKAGE)


# -- serialized requests -------------------------------------------------------------------


class _MayWrite(Exception):
    """Raised inside the decoders: a mutating step, a lambda, or something not understood."""


def frame_may_write(payload: bytes | str, mime: str) -> bool:
    """True unless `payload` is a `bytecode` request shown to have no mutating step or lambda.

    `payload` is the request after the WebSocket mime prefix (the whole text of a text frame);
    `mime` is that prefix ("application/json" for text frames). GraphBinary v1 and GraphSON
    v2/v3 (typed or not) are decoded; any other mime type, op or anything that does not decode
    the one way Gremlin Server would read it (truncation, unknown or custom types, duplicate
    JSON keys, nesting deeper than MAX_NESTING) counts as "may write".
    """
    base = mime.split(";", 1)[0].strip()
    try:
        if base in _GRAPHBINARY_MIMES:
            if not isinstance(payload, bytes):
                return True
            _check_graphbinary_request(payload)
        elif base in _GRAPHSON_MIMES:
            _check_graphson_request(payload)
        else:
            return True
    except Exception:  # _MayWrite, truncation (IndexError, struct.error), bad text, recursion
        return True
    return False


_GRAPHBINARY_MIMES = frozenset(
    {"application/vnd.graphbinary-v1.0", "application/vnd.graphbinary-v1.0-stringd"}
)
# Text frames carry no mime type; Gremlin Server reads them as "application/json".
_GRAPHSON_MIMES = frozenset(
    {"application/json", "application/vnd.gremlin-v2.0+json", "application/vnd.gremlin-v3.0+json"}
)

# -- GraphBinary v1 (docs/src/dev/io/graphbinary.asciidoc; gremlin-core io/binary/types) ----

_INT = struct.Struct(">i")
_MUTATING_NAMES = frozenset(name.encode("ascii") for name in MUTATING_STEPS)
_TINKERPOP_PACKAGE_BYTES = TINKERPOP_PACKAGE.encode("ascii")

# Values of a fixed size after the value flag, by type code.
_FIXED_SIZE = {
    0x01: 4,  # Int
    0x02: 8,  # Long
    0x04: 8,  # Date
    0x05: 8,  # Timestamp
    0x07: 8,  # Double
    0x08: 4,  # Float
    0x0C: 16,  # UUID
    0x24: 1,  # Byte
    0x26: 2,  # Short
    0x27: 1,  # Boolean
    0x81: 12,  # Duration: long seconds, int nanos
    0x83: 12,  # Instant: long seconds, int nanos
    0x84: 6,  # LocalDate: int year, byte month, byte day
    0x85: 14,  # LocalDateTime: LocalDate, LocalTime
    0x86: 8,  # LocalTime: long nanos of the day
    0x87: 2,  # MonthDay
    0x88: 18,  # OffsetDateTime: LocalDateTime, ZoneOffset
    0x89: 12,  # OffsetTime: LocalTime, ZoneOffset
    0x8A: 12,  # Period: three ints
    0x8B: 4,  # Year
    0x8C: 5,  # YearMonth: int year, byte month
    0x8D: 18,  # ZonedDateTime: LocalDateTime, ZoneOffset
    0x8E: 4,  # ZoneOffset: int seconds
}
# An int32 length and that many bytes: String, Class, BigInteger, ByteBuffer, InetAddress.
_SIZED = frozenset({0x03, 0x06, 0x23, 0x25, 0x82})
# Enums: a fully qualified String naming the value.
_ENUMS = frozenset({0x13, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x1B, 0x1C, 0x1F, 0x20, 0x2E, 0x2F, 0x30})
_STRING_CODE = 0x03
_NULL_CODE = 0xFE
_CUSTOM_CODE = 0x00
_unpack_int = _INT.unpack_from

# Each reader below takes the frame and the position of a value and returns the position after
# it. They index and unpack without bounds checks: reading past the end raises IndexError or
# struct.error, and a frame that ends anywhere but after its last argument is refused at the top.


def _check_graphbinary_request(data: bytes) -> None:
    """`{0x81}{uuid}{op}{processor}{args map}`: op bytecode, a Bytecode under "gremlin"."""
    if not data or data[0] != 0x81:
        raise _MayWrite("not a GraphBinary v1 request")
    op, position = _gb_string(data, 17)
    if op != b"bytecode":
        raise _MayWrite("not a bytecode request")
    position = _gb_string(data, position)[1]  # processor
    count, position = _gb_count(data, position)
    traversal = False
    for _ in range(count):
        key = data[position : position + 13]
        position = _gb_value(data, position, 0)
        if key == b"\x03\x00\x00\x00\x00\x07gremlin":
            traversal = data[position : position + 2] == b"\x15\x00"  # a non-null Bytecode
        position = _gb_value(data, position, 0)
    if not traversal or position != len(data):
        raise _MayWrite("no traversal, or the arguments do not end with the frame")


def _gb_count(data: bytes, position: int) -> tuple[int, int]:
    (count,) = _unpack_int(data, position)
    if count < 0:
        raise _MayWrite(f"negative length {count}")
    return count, position + 4


def _gb_string(data: bytes, position: int) -> tuple[bytes, int]:
    """A value-only String: its UTF-8 bytes (compared as bytes: Java decodes them the same way
    for ASCII names, and anything else is no mutating step's name)."""
    size, start = _gb_count(data, position)
    return data[start : start + size], start + size


def _gb_value(data: bytes, position: int, depth: int) -> int:
    """One fully qualified value: `{type_code}{value_flag}{value}`."""
    if depth > MAX_NESTING:
        raise _MayWrite("nested too deep")
    code = data[position]
    if code == _CUSTOM_CODE:  # {0x00}{name: int32 length, UTF-8}{the provider's bytes}
        name, position = _gb_string(data, position + 1)
        custom = _GRAPHBINARY_TYPES.get(name)
        if custom is None:
            raise _MayWrite(f"custom type {name!r}")
        return custom(data, position, depth + 1)
    flag = data[position + 1]
    position += 2
    if code == _STRING_CODE and flag == 0x00:  # the most common argument, read inline
        size: int = _unpack_int(data, position)[0]
        if size < 0:
            raise _MayWrite(f"negative length {size}")
        return position + 4 + size
    if flag == 0x01:
        return position  # null: no value bytes
    if flag != 0x00 or code == _NULL_CODE:
        raise _MayWrite(f"value flag {flag:#x} for type code {code:#x}")
    fixed = _FIXED_SIZE.get(code)
    if fixed is not None:
        return position + fixed
    if code in _SIZED:
        size, position = _gb_count(data, position)
        return position + size
    if code in _ENUMS:
        if data[position] != _STRING_CODE:
            raise _MayWrite("an enum not named by a string")
        return _gb_value(data, position, depth + 1)
    reader = _GB_READERS.get(code)
    if reader is None:  # Lambda, Custom, Graph, Tree, Metrics or unknown
        raise _MayWrite(f"type code {code:#x}")
    return reader(data, position, depth + 1)


def _gb_items(data: bytes, position: int, depth: int) -> int:
    count: int = _unpack_int(data, position)[0]
    if count < 0:
        raise _MayWrite(f"negative length {count}")
    position += 4
    for _ in range(count):
        position = _gb_value(data, position, depth)
    return position


def _gb_map(data: bytes, position: int, depth: int) -> int:
    count, position = _gb_count(data, position)
    for _ in range(2 * count):
        position = _gb_value(data, position, depth)
    return position


def _gb_bulk_set(data: bytes, position: int, depth: int) -> int:
    count, position = _gb_count(data, position)
    for _ in range(count):
        position = _gb_value(data, position, depth) + 8  # the item, then its bulk (a long)
    return position


def _gb_bytecode(data: bytes, position: int, depth: int) -> int:
    for _ in range(2):  # steps, then source instructions: each a name and its arguments
        count, position = _gb_count(data, position)
        for _ in range(count):
            name, position = _gb_string(data, position)
            if name in _MUTATING_NAMES:
                raise _MayWrite(f"mutating step {name!r}")
            position = _gb_items(data, position, depth)
    return position


def _gb_predicate(data: bytes, position: int, depth: int) -> int:
    return _gb_items(data, _gb_string(data, position)[1], depth)  # P, TextP: name, arguments


def _gb_binding(data: bytes, position: int, depth: int) -> int:
    return _gb_value(data, _gb_string(data, position)[1], depth)  # key, value


def _gb_traverser(data: bytes, position: int, depth: int) -> int:
    return _gb_value(data, position + 8, depth)  # bulk, value


def _gb_big_decimal(data: bytes, position: int, depth: int) -> int:
    size, position = _gb_count(data, position + 4)  # scale, then a BigInteger
    return position + size


def _gb_strategy(data: bytes, position: int, depth: int) -> int:
    fqcn, position = _gb_string(data, position)  # a value-only Class, then a value-only Map
    if not fqcn.startswith(_TINKERPOP_PACKAGE_BYTES):
        raise _MayWrite("a strategy that is not TinkerPop's")
    return _gb_map(data, position, depth)


def _gb_vertex(data: bytes, position: int, depth: int) -> int:
    position = _gb_value(data, position, depth)  # id
    position = _gb_string(data, position)[1]  # label
    return _gb_value(data, position, depth)  # properties


def _gb_edge(data: bytes, position: int, depth: int) -> int:
    for _ in range(3):  # id and label, in-vertex id and label, out-vertex id and label
        position = _gb_string(data, _gb_value(data, position, depth))[1]
    position = _gb_value(data, position, depth)  # parent
    return _gb_value(data, position, depth)  # properties


def _gb_vertex_property(data: bytes, position: int, depth: int) -> int:
    position = _gb_string(data, _gb_value(data, position, depth))[1]  # id, label
    for _ in range(3):  # value, parent, properties
        position = _gb_value(data, position, depth)
    return position


def _gb_property(data: bytes, position: int, depth: int) -> int:
    position = _gb_string(data, position)[1]  # key
    position = _gb_value(data, position, depth)  # value
    return _gb_value(data, position, depth)  # parent


def _gb_path(data: bytes, position: int, depth: int) -> int:
    return _gb_value(data, _gb_value(data, position, depth), depth)  # labels, objects


def _gb_char(data: bytes, position: int, depth: int) -> int:
    first = data[position]  # one UTF-8 character: its first byte gives its length
    return position + (4 if first >= 0xF0 else 3 if first >= 0xE0 else 2 if first >= 0xC0 else 1)


# Composite values, by type code; anything neither here nor in the tables above is "may write".
_GB_READERS: dict[int, Callable[[bytes, int, int], int]] = {
    0x09: _gb_items,  # List
    0x0B: _gb_items,  # Set
    0x0A: _gb_map,
    0x2A: _gb_bulk_set,
    0x15: _gb_bytecode,
    0x1E: _gb_predicate,  # P
    0x28: _gb_predicate,  # TextP
    0x14: _gb_binding,
    0x21: _gb_traverser,
    0x22: _gb_big_decimal,
    0x29: _gb_strategy,
    0x11: _gb_vertex,
    0x0D: _gb_edge,
    0x12: _gb_vertex_property,
    0x0F: _gb_property,
    0x0E: _gb_path,
    0x80: _gb_char,
}


# -- GraphSON v2 / v3 ----------------------------------------------------------------------

# Objects decode to tuples of (key, value) pairs: duplicate keys stay visible, arrays are lists.
_PAIRS = json.JSONDecoder(object_pairs_hook=tuple)

_STRATEGIES = frozenset(
    "g:" + name
    for name in (
        "TraversalStrategy",  # a strategy named by its "fqcn"
        "ConnectiveStrategy",
        "ElementIdStrategy",
        "EventStrategy",
        "HaltedTraverserStrategy",
        "PartitionStrategy",
        "SubgraphStrategy",
        "SeedStrategy",
        "LazyBarrierStrategy",
        "MatchAlgorithmStrategy",
        "AdjacentToIncidentStrategy",
        "ByModulatorOptimizationStrategy",
        "ProductiveByStrategy",
        "CountStrategy",
        "FilterRankingStrategy",
        "IdentityRemovalStrategy",
        "IncidentToAdjacentStrategy",
        "InlineFilterStrategy",
        "MatchPredicateStrategy",
        "OrderLimitStrategy",
        "OptionsStrategy",
        "PathProcessorStrategy",
        "PathRetractionStrategy",
        "RepeatUnrollStrategy",
        "ComputerVerificationStrategy",
        "LambdaRestrictionStrategy",
        "ReadOnlyStrategy",
        "StandardVerificationStrategy",
        "EarlyLimitStrategy",
        "EdgeLabelVerificationStrategy",
        "ReservedKeysVerificationStrategy",
        "ReferenceElementStrategy",
        "ComputerFinalizationStrategy",
        "MessagePassingReductionStrategy",
        "ProfileStrategy",
        "VertexProgramRestrictionStrategy",
        "GraphFilterStrategy",
        "VertexProgramStrategy",
    )
)
# Typed values that are data (GraphSONModule, GraphSONXModule): what they hold is walked like
# any other value.
_DATA_TYPES = frozenset(
    {
        "g:Int32",
        "g:Int64",
        "g:Float",
        "g:Double",
        "g:UUID",
        "g:Date",
        "g:Timestamp",
        "g:Class",
        "g:List",
        "g:Set",
        "g:Map",
        "g:Vertex",
        "g:Edge",
        "g:VertexProperty",
        "g:Property",
        "g:Path",
        "g:Traverser",
        "g:BulkSet",
        "g:Binding",
        "g:P",
        "g:TextP",
        "g:Cardinality",
        "g:Column",
        "g:Direction",
        "g:DT",
        "g:Merge",
        "g:GType",
        "g:Operator",
        "g:Order",
        "g:Pop",
        "g:Barrier",
        "g:Pick",
        "g:Scope",
        "g:T",
        "gx:BigDecimal",
        "gx:BigInteger",
        "gx:Byte",
        "gx:ByteBuffer",
        "gx:Char",
        "gx:Duration",
        "gx:Int16",
        "gx:InetAddress",
        "gx:Instant",
        "gx:LocalDate",
        "gx:LocalDateTime",
        "gx:LocalTime",
        "gx:MonthDay",
        "gx:OffsetDateTime",
        "gx:OffsetTime",
        "gx:Period",
        "gx:Year",
        "gx:YearMonth",
        "gx:ZonedDateTime",
        "gx:ZoneOffset",
    }
)


def _check_graphson_request(payload: bytes | str) -> None:
    """`{"requestId", "op", "processor", "args"}`: op bytecode, a g:Bytecode under "gremlin"."""
    text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
    document = _PAIRS.decode(text)
    if type(document) is not tuple:
        raise _MayWrite("not a JSON object")
    envelope = dict(document)
    if len(envelope) != len(document) or envelope.get("op") != "bytecode":
        raise _MayWrite("duplicate keys, or not a bytecode request")
    args = envelope.get("args")
    if type(args) is not tuple:
        raise _MayWrite("args is not an object")
    typed = _typed(args)
    if typed is None:  # a plain object, as gremlinpython writes it
        pairs = list(args)
    elif typed[0] == "g:Map" and type(typed[1]) is list and len(typed[1]) % 2 == 0:
        pairs = list(zip(typed[1][::2], typed[1][1::2], strict=True))  # as the Java driver does
    else:
        raise _MayWrite("args is neither an object nor a g:Map")
    if [key for key, _ in pairs].count("gremlin") != 1:
        raise _MayWrite("no single gremlin argument")
    for key, value in pairs:
        if key == "gremlin" and not (
            type(value) is tuple and (_typed(value) or ("",))[0] == "g:Bytecode"
        ):
            raise _MayWrite("the gremlin argument is not bytecode")
        _walk_json(key)
        _walk_json(value)


def _typed(value: tuple[tuple[str, Any], ...]) -> tuple[Any, Any] | None:
    """(type, value) of a GraphSON typed value, None for a plain object."""
    if len(value) == 2:
        (first, first_value), (second, second_value) = value
        if first == "@type" and second == "@value":
            return first_value, second_value
        if first == "@value" and second == "@type":
            return second_value, first_value
    if any(key == "@type" for key, _ in value):
        raise _MayWrite("an object with @type that is not exactly a typed value")
    return None


def _walk_json(value: Any, depth: int = 0) -> None:
    """Raise _MayWrite if a decoded GraphSON value holds a mutating step, a lambda or anything
    not understood; nested bytecode is walked wherever it sits."""
    if type(value) is list:
        if depth > MAX_NESTING:
            raise _MayWrite("nested too deep")
        for item in value:
            if type(item) is list or type(item) is tuple:
                _walk_json(item, depth + 1)
        return
    if type(value) is not tuple:
        return
    if depth > MAX_NESTING:
        raise _MayWrite("nested too deep")
    typed = _typed(value)
    if typed is None:  # a plain object: a map (GraphSON 2, or untyped)
        for _, item in value:
            if type(item) is list or type(item) is tuple:
                _walk_json(item, depth + 1)
        return
    type_name, content = typed
    if type_name == "g:Bytecode":
        _walk_bytecode(content, depth + 1)
    elif type_name in _DATA_TYPES:
        _walk_json(content, depth + 1)
    elif type_name in _STRATEGIES:
        _check_strategy(type_name, content)
        _walk_json(content, depth + 1)
    else:
        check = _GRAPHSON_TYPES.get(type_name) if isinstance(type_name, str) else None
        if check is None:  # g:Lambda, a provider's type nobody registered, anything unknown
            raise _MayWrite(f"type {type_name!r}")
        check(content, depth + 1)


def _walk_bytecode(content: Any, depth: int) -> None:
    # Gremlin Server's reader takes every "step" and "source" key it meets, even inside another
    # key's value; only those two keys, each a list of [name, *arguments], are understood.
    if type(content) is not tuple:
        raise _MayWrite("bytecode that is not an object")
    for key, instructions in content:
        if (key != "step" and key != "source") or type(instructions) is not list:
            raise _MayWrite(f"bytecode key {key!r}")
        for instruction in instructions:
            if type(instruction) is not list or not instruction or type(instruction[0]) is not str:
                raise _MayWrite("an instruction that is not [name, *arguments]")
            if instruction[0] in MUTATING_STEPS:
                raise _MayWrite("mutating step")
            for argument in instruction[1:]:
                if type(argument) is list or type(argument) is tuple:
                    _walk_json(argument, depth)


def _check_strategy(type_name: str, content: Any) -> None:
    if type(content) is not tuple or _typed(content) is not None:
        raise _MayWrite("strategy settings that are not an object")
    if type_name == "g:TraversalStrategy" and not _tinkerpop_class(dict(content).get("fqcn")):
        raise _MayWrite("a strategy that is not TinkerPop's")


# -- provider types (see the module docstring) ---------------------------------------------

GraphBinaryReader = Callable[[bytes, int, int], int]
"""Reads a custom type's bytes after its name: `(frame, position, depth) -> position after the
value`. Read a nested fully qualified value with `graphbinary_value(frame, position, depth)`;
raise anything for bytes not understood."""

GraphSONCheck = Callable[[Any, int], None]
"""Checks the `@value` of a provider's typed GraphSON value: `(content, depth)`, where JSON
objects are tuples of (key, value) pairs and arrays are lists. Walk nested values with
`graphson_walk(value, depth)`; raise anything for a value not understood."""

_GRAPHBINARY_TYPES: dict[bytes, GraphBinaryReader] = {}
_GRAPHSON_TYPES: dict[str, GraphSONCheck] = {}


def register_graphbinary_type(name: str, reader: GraphBinaryReader) -> None:
    """Let requests carrying the GraphBinary custom type `name` be judged (e.g. "janusgraph.P")."""
    _GRAPHBINARY_TYPES[name.encode("utf-8")] = reader


def register_graphson_type(name: str, check: GraphSONCheck) -> None:
    """Let requests carrying the GraphSON type `name` be judged (e.g. "janusgraph:JanusGraphP")."""
    _GRAPHSON_TYPES[name] = check


def graphbinary_value(data: bytes, position: int, depth: int) -> int:
    """A fully qualified GraphBinary value at `position`, walked like any argument (a nested
    traversal's steps are checked too); the position after it."""
    return _gb_value(data, position, depth)


def graphbinary_count(data: bytes, position: int) -> tuple[int, int]:
    """A non-negative int32 length or count at `position`, and the position after it."""
    return _gb_count(data, position)


def graphbinary_string(data: bytes, position: int) -> tuple[bytes, int]:
    """A value-only String at `position` as UTF-8 bytes, and the position after it."""
    return _gb_string(data, position)


def graphson_walk(value: Any, depth: int) -> None:
    """A decoded GraphSON value, walked like any argument."""
    _walk_json(value, depth)


def graphson_typed(value: Any) -> tuple[Any, Any] | None:
    """(type, value) of a GraphSON typed value, None for a plain object (a tuple of pairs)."""
    return _typed(value)
