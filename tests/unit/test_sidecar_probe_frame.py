"""The sidecar writes its health probe itself (no gremlinpython in the sidecar): the frame must
be exactly the one gremlinpython writes, which every Gremlin Server reads."""

from __future__ import annotations

import uuid

import pytest
from gremlin_python.driver.request import RequestMessage
from gremlin_python.driver.serializer import GraphBinarySerializersV1
from gremlin_python.process.graph_traversal import __
from gremlinlb.sidecar.health import probe_frame


def gremlinpython_frame(request_id: bytes, script: str | None, source: str) -> bytes:
    if script is not None:
        message = RequestMessage("", "eval", {"gremlin": script, "aliases": {"g": source}})
    else:
        bytecode = __.V().limit(1).count().bytecode
        message = RequestMessage(
            "traversal", "bytecode", {"gremlin": bytecode, "aliases": {"g": source}}
        )
    frame: bytes = GraphBinarySerializersV1().serialize_message(
        str(uuid.UUID(bytes=request_id)), message
    )
    return frame


@pytest.mark.parametrize("source", ["g", "gmodern", "graph_é"])
def test_the_bytecode_probe_is_the_frame_gremlinpython_writes(source: str) -> None:
    request_id = uuid.uuid4().bytes
    assert probe_frame(request_id, None, source) == gremlinpython_frame(request_id, None, source)


@pytest.mark.parametrize("script", ["g.V().limit(1).count()", "1+1", "'é' * 3"])
def test_the_script_probe_is_the_frame_gremlinpython_writes(script: str) -> None:
    request_id = uuid.uuid4().bytes
    assert probe_frame(request_id, script, "g") == gremlinpython_frame(request_id, script, "g")
