"""The traversal source a client request names (its `aliases` argument), read cheaply.

The sidecar routes on a request's header and never deserializes the traversal; the alias is
found by a byte search for the `aliases` argument's encoding and one small map read, so a
request costs one `find` over its frame. Anything unexpected reads as None (the default
source): the answer only steers which hosts are tried first, never what is sent.
"""

from __future__ import annotations

import json
import re
import struct

from gremlinlb.sidecar.frames import Format, Request

from gremlinlb.core.sources import UNKNOWN_SOURCE_MESSAGES

# GraphBinary: the string "aliases" (type 0x03, not null, length 7) then a map (0x0a, not null)
_GRAPHBINARY_ALIASES = b"\x03\x00\x00\x00\x00\x07aliases\x0a\x00"
_INT = struct.Struct(">i")
# GraphSON: the key (of a plain object, gremlinpython; or in a g:Map's list, the Java driver)
# and its value, a plain object or a g:Map of strings
_GRAPHSON_ALIASES = re.compile(
    r'"aliases"\s*[:,]\s*'
    r'(\{[^{}\[\]]*\}|\{\s*"@type"\s*:\s*"g:Map"\s*,\s*"@value"\s*:\s*\[[^\[\]]*\]\s*\})'
)
_GRAPHSON_ALIASES_BYTES = re.compile(_GRAPHSON_ALIASES.pattern.encode("ascii"))
_MAX_NAME = 256


def request_source(request: Request) -> str | None:
    """The traversal source bound to `g` in the request's aliases; None if it names none."""
    try:
        if request.format is Format.GRAPHBINARY:
            assert isinstance(request.frame, bytes)
            return _graphbinary_source(request.frame, request.body_start)
        return _graphson_source(request.frame, request.body_start)
    except (ValueError, UnicodeDecodeError, struct.error, IndexError, TypeError):
        return None


_UNKNOWN_SOURCE_BYTES = tuple(m.encode("utf-8") for m in UNKNOWN_SOURCE_MESSAGES)


def answer_says_source_unknown(frame: bytes | str) -> bool:
    """Whether an error answer's frame carries Gremlin Server's "traversal source not
    configured" message (the status code is checked by the caller); no decoding."""
    if isinstance(frame, str):
        return any(m in frame for m in UNKNOWN_SOURCE_MESSAGES)
    return any(m in frame for m in _UNKNOWN_SOURCE_BYTES)


def _graphbinary_source(frame: bytes, start: int) -> str | None:
    at = frame.find(_GRAPHBINARY_ALIASES, start)
    if at < 0:
        return None
    position = at + len(_GRAPHBINARY_ALIASES)
    (count,) = _INT.unpack_from(frame, position)
    position += 4
    for _ in range(min(count, 4)):
        key, position = _string(frame, position)
        value, position = _string(frame, position)
        if key == "g":
            return value
    return None


def _string(frame: bytes, position: int) -> tuple[str, int]:
    if frame[position : position + 2] != b"\x03\x00":
        raise ValueError("not a string")
    (length,) = _INT.unpack_from(frame, position + 2)
    if not 0 < length <= _MAX_NAME:
        raise ValueError("not a source name")
    start = position + 6
    return frame[start : start + length].decode("utf-8"), start + length


def _graphson_source(frame: bytes | str, start: int) -> str | None:
    if isinstance(frame, str):
        found = _GRAPHSON_ALIASES.search(frame, start)
        text = None if found is None else found.group(1)
    else:  # searched as bytes: only the match is decoded, not the whole frame
        found_bytes = _GRAPHSON_ALIASES_BYTES.search(frame, start)
        text = None if found_bytes is None else found_bytes.group(1).decode("utf-8")
    if text is None:
        return None
    aliases = json.loads(text)
    if "@value" in aliases:
        items = aliases["@value"]
        aliases = dict(zip(items[::2], items[1::2], strict=True))
    value = aliases.get("g")
    return value if isinstance(value, str) and 0 < len(value) <= _MAX_NAME else None
