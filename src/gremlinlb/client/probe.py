"""The health probe reads only the status of an answer, never its result.

A probe asks whether a server answers, not whether this client can read what it answered. A
server may answer with types gremlinpython does not know (a JanusGraph vertex carries
`RelationIdentifier` property ids, a user's probe script may return a Tree): decoding the result
would fail the probe and keep a perfectly healthy server out of rotation. So the probe's
protocol reads the status code (and, for an error, the status message) from the frame's header
and skips the rest, for GraphBinary and GraphSON alike; only an authentication challenge (407)
goes through gremlinpython's own handling, which answers it.
"""

from __future__ import annotations

import json
import struct
import uuid
from dataclasses import dataclass
from typing import Any

from gremlin_python.driver.protocol import GremlinServerError, GremlinServerWSProtocol

SUCCESS = 200
NO_CONTENT = 204
PARTIAL_CONTENT = 206
AUTHENTICATE = 407

_GRAPHBINARY_VERSION = 0x81
_INT32 = struct.Struct(">i")


@dataclass(frozen=True, slots=True)
class AnswerStatus:
    """What a probe needs of an answer: whose it is and how it went."""

    request_id: str | None
    code: int
    message: str


def answer_status(frame: bytes) -> AnswerStatus:
    """The request id, status code and status message of a GraphBinary v1 or GraphSON answer
    frame, without decoding its result; ValueError if the frame has no readable status."""
    if frame[:1] == bytes([_GRAPHBINARY_VERSION]):
        return _graphbinary_status(frame)
    return _graphson_status(frame)


def _graphbinary_status(frame: bytes) -> AnswerStatus:
    # 0x81, request id (null flag, then 16 bytes unless null), int32 code, nullable message
    position = 2
    request_id: str | None = None
    if frame[1] == 0x00:
        request_id = str(uuid.UUID(bytes=frame[2:18]))
        position = 18
    elif frame[1] != 0x01:
        raise ValueError(f"request id flag {frame[1]:#x}")
    (code,) = _INT32.unpack_from(frame, position)
    position += 4
    message = ""
    if frame[position] == 0x00:  # a present message: int32 length, UTF-8
        (size,) = _INT32.unpack_from(frame, position + 1)
        start = position + 5
        message = frame[start : start + size].decode("utf-8", errors="replace")
    return AnswerStatus(request_id, code, message)


def _graphson_status(frame: bytes) -> AnswerStatus:
    # Plain JSON: typed values stay {"@type", "@value"} dicts, so no type can fail here.
    document = json.loads(frame)
    status = document.get("status") if isinstance(document, dict) else None
    if not isinstance(status, dict):
        raise ValueError("a GraphSON answer without status")
    code = _untyped(status.get("code"))
    if not isinstance(code, int) or isinstance(code, bool):
        raise ValueError("a GraphSON answer without status.code")
    raw_id = _untyped(document.get("requestId"))
    message = _untyped(status.get("message"))
    return AnswerStatus(
        str(raw_id) if raw_id is not None else None,
        code,
        message if isinstance(message, str) else "",
    )


def _untyped(value: Any) -> Any:
    if isinstance(value, dict) and "@value" in value:
        return value["@value"]
    return value


class StatusOnlyProtocol(GremlinServerWSProtocol):  # type: ignore[misc]
    """gremlinpython's protocol for the probe's one-socket client: the answer's status decides,
    its result is never decoded (a probe passes on 200/204, fails on any error status)."""

    def data_received(self, message: Any, results_dict: dict[str, Any]) -> Any:
        if message is None:  # the server cut the connection: gremlinpython says so
            return super().data_received(message, results_dict)
        status = answer_status(message)
        if status.code == AUTHENTICATE:
            return super().data_received(message, results_dict)  # answers the challenge
        request_id = status.request_id
        if request_id not in results_dict and len(results_dict) == 1:
            request_id = next(iter(results_dict))  # one request per socket: it is this one
        if status.code == PARTIAL_CONTENT:
            return status.code  # more frames of the same answer follow
        result_set = results_dict.pop(request_id, None) if request_id is not None else None
        if status.code in (SUCCESS, NO_CONTENT):
            if result_set is not None:
                result_set.stream.put_nowait([])
            return status.code
        raise GremlinServerError({"code": status.code, "message": status.message, "attributes": {}})
