"""Neptune's errors as rules (core.neptune_errors), the sidecar's reading of them off an answer
frame, and the Neptune front's framing (devservers.neptunefront)."""

from __future__ import annotations

import json
import uuid

import pytest
from gremlinlb.sidecar.frames import Channel, FrameType, error_response
from gremlinlb.sidecar.neptune_retry import status_message

from gremlinlb.core import Outcome
from gremlinlb.core.endpoints import parse_endpoint
from gremlinlb.core.neptune_errors import (
    CONFLICT_BACKOFF_CAP,
    NeptuneVerdict,
    classify,
    conflict_backoff,
    neptune_code,
    new_writer,
)
from gremlinlb.devservers.neptunefront import error_answer, parse_request

GRAPHBINARY = Channel("application/vnd.graphbinary-v1.0", FrameType.BINARY)
GRAPHSON = Channel("application/vnd.gremlin-v3.0+json", FrameType.TEXT)


def neptune_message(code: str) -> str:
    return json.dumps({"detailedMessage": "d", "requestId": str(uuid.uuid4()), "code": code})


def test_the_code_is_read_from_neptunes_json_status_message() -> None:
    assert neptune_code(neptune_message("ReadOnlyViolationException")) == (
        "ReadOnlyViolationException"
    )


@pytest.mark.parametrize("message", [None, "", "Division by zero", "{not json", '["code"]'])
def test_a_message_that_is_not_neptunes_json_has_no_code(message: str | None) -> None:
    assert neptune_code(message) is None


def test_concurrent_modification_is_a_conflict() -> None:
    verdict = classify(500, neptune_message("ConcurrentModificationException"))
    assert verdict is NeptuneVerdict.CONFLICT


def test_read_only_violation_is_a_write_that_reached_a_reader() -> None:
    verdict = classify(400, neptune_message("ReadOnlyViolationException"))
    assert verdict is NeptuneVerdict.READ_ONLY


@pytest.mark.parametrize(
    "code",
    [
        "ThrottlingException",
        "TooManyRequestsException",
        "MemoryLimitExceededException",
        "QueryLimitExceededException",
    ],
)
def test_throttling_codes_are_backpressure(code: str) -> None:
    assert classify(500, neptune_message(code)) is NeptuneVerdict.THROTTLED


def test_other_neptune_codes_follow_the_generic_rules() -> None:
    assert classify(500, neptune_message("InternalFailureException")) is None


def test_a_success_is_never_a_neptune_error() -> None:
    assert classify(200, neptune_message("ConcurrentModificationException")) is None


def test_a_conflict_may_be_re_sent_for_reads_and_writes_alike() -> None:
    assert NeptuneVerdict.CONFLICT.outcome(read_only=False) is Outcome.OVERLOADED
    assert NeptuneVerdict.CONFLICT.outcome(read_only=True) is Outcome.OVERLOADED


def test_a_throttled_read_is_retried_and_a_throttled_write_is_answered_unchanged() -> None:
    assert NeptuneVerdict.THROTTLED.outcome(read_only=True) is Outcome.OVERLOADED
    assert NeptuneVerdict.THROTTLED.outcome(read_only=False) is Outcome.SERVER_ERROR


def test_throttling_is_no_evidence_against_the_host() -> None:
    for read_only in (True, False):
        outcome = NeptuneVerdict.THROTTLED.outcome(read_only)
        assert not outcome.counts_against_host
        assert not outcome.marks_host_down


def test_the_conflict_backoff_doubles_up_to_its_cap_with_full_jitter() -> None:
    assert conflict_backoff(1, 0.999) < conflict_backoff(2, 0.999) < conflict_backoff(3, 0.999)
    assert conflict_backoff(20, 0.999) < CONFLICT_BACKOFF_CAP
    assert conflict_backoff(3, 0.0) == 0.0


def test_a_new_writer_is_another_host_listed_as_writer() -> None:
    old = parse_endpoint("ws://w1:8182/gremlin?role=writer")
    demoted = parse_endpoint("ws://w1:8182/gremlin?role=reader")
    promoted = parse_endpoint("ws://r2:8182/gremlin?role=writer")
    reader = parse_endpoint("ws://r1:8182/gremlin?role=reader")
    assert new_writer(old, [old, reader]) is None
    assert new_writer(old, [demoted, reader, promoted]) == promoted


@pytest.mark.parametrize("channel", [GRAPHBINARY, GRAPHSON])
def test_the_sidecar_reads_the_status_message_of_an_error_frame(channel: Channel) -> None:
    message = neptune_message("ConcurrentModificationException")
    frame = error_response(channel, uuid.uuid4().bytes, 500, message)
    assert status_message(frame, channel) == message


def test_the_front_answers_in_graphbinary_with_neptunes_json_message() -> None:
    request_id = uuid.uuid4().bytes
    frame = error_answer(request_id, "ReadOnlyViolationException", 400, "read-only")
    assert frame[2:18] == request_id
    assert int.from_bytes(frame[18:22], "big") == 400
    body = json.loads(status_message(frame, GRAPHBINARY) or "")
    assert body == {
        "detailedMessage": "read-only",
        "requestId": str(uuid.UUID(bytes=request_id)),
        "code": "ReadOnlyViolationException",
    }


def _graphbinary_request(request_id: bytes, step: str) -> bytes:
    mime = b"application/vnd.graphbinary-v1.0"
    name = step.encode()
    return bytes([len(mime)]) + mime + b"\x81" + request_id + len(name).to_bytes(4, "big") + name


def test_the_front_reads_the_request_id_and_a_mutating_step() -> None:
    request_id = uuid.uuid4().bytes
    assert parse_request(_graphbinary_request(request_id, "addV")) == (request_id, True)
    assert parse_request(_graphbinary_request(request_id, "V")) == (request_id, False)


def test_the_front_passes_other_frames_through() -> None:
    assert parse_request(b'\x21application/vnd.gremlin-v3.0+json{"op":"eval"}') is None
