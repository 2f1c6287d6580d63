"""Deciding whether a request can write, so a retry can never apply a write twice.

The check errs on the side of "may write": a false alarm only costs a retry, a miss could
duplicate data.
"""

from __future__ import annotations

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
