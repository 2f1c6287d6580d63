"""answer_status: the probe reads an answer's status from its header, whatever its result holds."""

from __future__ import annotations

import json
import struct
import uuid

from gremlinlb.client.probe import answer_status

REQUEST_ID = uuid.UUID("3f2504e0-4f89-11d3-9a0c-0305e82c3301")


def graphbinary_answer(code: int, message: bytes | None, result: bytes) -> bytes:
    frame = b"\x81\x00" + REQUEST_ID.bytes + struct.pack(">i", code)
    frame += b"\x01" if message is None else b"\x00" + struct.pack(">i", len(message)) + message
    return frame + struct.pack(">i", 0) + struct.pack(">i", 0) + result  # attributes, meta


def test_a_graphbinary_success_is_read_without_its_result() -> None:
    tree = b"\x2b\x00" + b"\xff" * 12  # a Tree, then bytes no decoder would accept
    status = answer_status(graphbinary_answer(200, None, tree))
    assert (status.request_id, status.code, status.message) == (str(REQUEST_ID), 200, "")


def test_a_graphbinary_error_gives_its_code_and_message() -> None:
    status = answer_status(graphbinary_answer(597, b"No such property", b"\xfe\x01"))
    assert (status.code, status.message) == (597, "No such property")


def test_a_graphbinary_answer_naming_no_request_has_no_id() -> None:
    frame = b"\x81\x01" + struct.pack(">i", 499) + b"\x01"
    assert (answer_status(frame).request_id, answer_status(frame).code) == (None, 499)


def test_a_graphson_answer_with_a_provider_type_is_read_as_plain_json() -> None:
    answer = {
        "requestId": str(REQUEST_ID),
        "status": {"message": "", "code": 200, "attributes": {"@type": "g:Map", "@value": []}},
        "result": {"data": {"@type": "janusgraph:RelationIdentifier", "@value": {}}, "meta": {}},
    }
    status = answer_status(json.dumps(answer).encode())
    assert (status.request_id, status.code) == (str(REQUEST_ID), 200)
