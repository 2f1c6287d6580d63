"""Deciding whether a request can write, so a retry can never apply a write twice.

The check errs on the side of "may write": a false alarm only costs a retry, a miss could
duplicate data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
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


class BytecodeLike(Protocol):
    """What gremlinpython's Bytecode offers; typed structurally so the core stays I/O free."""

    @property
    def source_instructions(self) -> Sequence[Sequence[Any]]: ...

    @property
    def step_instructions(self) -> Sequence[Sequence[Any]]: ...


def bytecode_may_write(bytecode: BytecodeLike) -> bool:
    """True if the traversal, or any child traversal inside it, has a mutating step or lambda."""
    pending: list[Any] = [bytecode]
    while pending:
        current = pending.pop()
        for instruction in _instructions(current):
            if not instruction:
                continue
            if instruction[0] in MUTATING_STEPS:
                return True
            for argument in _flatten(instruction[1:]):
                if callable(argument) and not isinstance(argument, type):
                    return True  # a lambda: arbitrary code on the server
                child = getattr(argument, "bytecode", argument)
                if hasattr(child, "step_instructions"):
                    pending.append(child)
    return False


def _instructions(bytecode: Any) -> Iterator[Sequence[Any]]:
    yield from getattr(bytecode, "source_instructions", ())
    yield from getattr(bytecode, "step_instructions", ())


def _flatten(values: Iterable[Any]) -> Iterator[Any]:
    for value in values:
        if isinstance(value, dict):
            yield from _flatten(value.keys())
            yield from _flatten(value.values())
        elif isinstance(value, (list, tuple, set, frozenset)):
            yield from _flatten(value)
        elif (
            hasattr(value, "key") and hasattr(value, "value") and type(value).__name__ == "Binding"
        ):
            yield from _flatten([value.value])
        else:
            yield value


def _graphbinary_step_pattern() -> re.Pattern[bytes]:
    # In GraphBinary bytecode a step name is an int32 length and UTF-8 bytes; the length prefix
    # tells `property` from `properties`. A lambda is a fully qualified value: type code 0x1D,
    # the present flag 0x00, then its language as a string (gremlin-groovy, gremlin-lang, ...).
    names = sorted(MUTATING_STEPS)
    steps = [re.escape(len(name).to_bytes(4, "big") + name.encode("ascii")) for name in names]
    lambdas = rb"\x1d\x00\x00\x00\x00[\x01-\x40][a-zA-Z]"
    return re.compile(b"|".join([*steps, lambdas]))


def _graphson_step_pattern() -> re.Pattern[bytes]:
    # GraphSON writes step names as JSON strings ("addV") and lambdas as typed g:Lambda values.
    steps = [re.escape(b'"' + name.encode("ascii") + b'"') for name in sorted(MUTATING_STEPS)]
    return re.compile(b"|".join([*steps, rb'"g:Lambda"']))


_GRAPHBINARY_WRITES = _graphbinary_step_pattern()
_GRAPHSON_WRITES = _graphson_step_pattern()


def frame_may_write(payload: bytes | str, mime: str) -> bool:
    """True unless the raw bytecode request can be shown to have no mutating step or lambda.

    For proxies that route without deserializing: a byte scan of the serialized request. It
    can only err towards "may write" (a has('x', 'drop') value looks like a drop step), which
    costs a retry, never a duplicated write. `mime` picks GraphBinary or GraphSON (anything
    that is not GraphBinary, including text frames, is read as JSON).
    """
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    pattern = _GRAPHBINARY_WRITES if "graphbinary" in mime else _GRAPHSON_WRITES
    return pattern.search(data) is not None
