"""A loopback front that answers as one Amazon Neptune instance would (tests only).

No Neptune is reachable from the tests. This front stands before a real Gremlin Server as one
instance of a cluster whose management API is moto: it reads its own role from the API
(`DescribeDBClusters`, polled: the member named `instance` with `IsClusterWriter`), as a real
instance knows its own, and relays WebSocket frames both ways, except:

- as a reader, a request that writes is refused with `ReadOnlyViolationException`, in
  Neptune's wire format, and not forwarded (nothing is written);
- `conflicts = N`: the next N writes are answered `ConcurrentModificationException` and not
  forwarded (Neptune rolled them back);
- `throttle = N`: the next N requests of any kind are answered `ThrottlingException`, not
  forwarded.

Neptune's error answer: a final response, status 500 (400 for ReadOnlyViolationException, the
HTTP status Neptune's error table gives it), whose status message is the JSON object
`{"detailedMessage", "requestId", "code"}` (docs/neptune-errors.md). GraphBinary v1 requests
only (every driver's default); other frames pass through untouched.

A request "writes" by this front's own reading, independent of gremlinlb's write check: its
GraphBinary bytecode names a mutating step (`addV`, `addE`, `property`, `drop`, `mergeV`,
`mergeE`), found as the step name's length-prefixed bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import uuid
from collections import Counter
from typing import Any

import aiohttp
import botocore.session
from aiohttp import web

from gremlinlb.devservers.faults import LOOPBACK, parse_loopback_address
from gremlinlb.devservers.loopthread import LoopThread
from gremlinlb.tasks import cancel_and_wait

log = logging.getLogger(__name__)

GRAPHBINARY = "application/vnd.graphbinary-v1.0"
_VERSION = 0x81
_INT32 = struct.Struct(">i")
MUTATING_STEPS = ("addV", "addE", "property", "drop", "mergeV", "mergeE")
_MUTATING = tuple(_INT32.pack(len(s)) + s.encode("ascii") for s in MUTATING_STEPS)

# Neptune's codes, HTTP statuses and messages (docs/neptune-errors.md).
READ_ONLY = (
    "ReadOnlyViolationException",
    400,
    "The request is rejected because it violates some read-only restriction, such as a "
    "designation of a replica as read-only.",
)
CONFLICT = (
    "ConcurrentModificationException",
    500,
    "Failed to complete operation due to conflicting concurrent operations. Please retry. "
    "0 transactions are currently rolling back.",
)
THROTTLED = ("ThrottlingException", 500, "Rate of requests exceeds the maximum throughput.")


def parse_request(frame: bytes) -> tuple[bytes, bool] | None:
    """(request id, writes) of a GraphBinary request frame; None for any other frame."""
    if len(frame) < 2:
        return None
    size = frame[0]
    mime = frame[1 : 1 + size].decode("ascii", errors="replace")
    start = 1 + size
    if not mime.startswith(GRAPHBINARY) or len(frame) < start + 17 or frame[start] != _VERSION:
        return None
    request_id = frame[start + 1 : start + 17]
    body = frame[start + 17 :]
    return request_id, any(step in body for step in _MUTATING)


def error_answer(request_id: bytes, code: str, status: int, detail: str) -> bytes:
    """Neptune's final error response to `request_id` (GraphBinary v1): the status message is
    its JSON error object."""
    message = json.dumps(
        {"detailedMessage": detail, "requestId": str(uuid.UUID(bytes=request_id)), "code": code},
        separators=(",", ":"),
    ).encode("utf-8")
    return (
        bytes([_VERSION, 0x00])
        + request_id
        + _INT32.pack(status)
        + b"\x00"
        + _INT32.pack(len(message))
        + message
        + _INT32.pack(0)  # status attributes: empty map
        + _INT32.pack(0)  # result meta: empty map
        + b"\xfe\x01"  # result data: unspecified null
    )


class NeptuneFront:
    """One instance's front: its role from moto, Neptune's errors, the rest relayed."""

    def __init__(
        self,
        upstream: str,
        *,
        instance: str,
        cluster: str,
        region: str,
        endpoint_url: str,
        poll: float = 0.1,
    ) -> None:
        self._upstream = "{}:{}".format(*parse_loopback_address(upstream))
        self.instance = instance
        self.cluster = cluster
        self._region = region
        self._endpoint_url = endpoint_url
        self._poll = poll
        self.writer: bool | None = None  # None until the API was read once
        self.conflicts = 0  # the next N writes are answered ConcurrentModificationException
        self.throttle = 0  # the next N requests are answered ThrottlingException
        self.answered: Counter[str] = Counter()  # Neptune errors written, by code
        self.forwarded_writes = 0
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._thread: LoopThread | None = None
        self._polling: asyncio.Task[None] | None = None
        self._clients: set[web.WebSocketResponse] = set()

    @property
    def address(self) -> str:
        assert self._site is not None, "not started"
        server: Any = self._site._server
        return f"{LOOPBACK}:{server.sockets[0].getsockname()[1]}"

    async def start(self) -> None:
        self._client = botocore.session.Session().create_client(
            "neptune", region_name=self._region, endpoint_url=self._endpoint_url
        )
        await asyncio.to_thread(self._read_role)
        self._polling = asyncio.create_task(self._poll_role())
        self._http = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_get("/gremlin", self._serve)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, LOOPBACK, 0)
        await self._site.start()

    async def close(self) -> None:
        """Stop serving, then end every task still running here (connections' handlers, the
        poll), so none is left suspended when the loop stops."""
        for open_client in list(self._clients):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await open_client.close()
        if self._runner is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self._runner.cleanup()
        await self._http.close()
        current = asyncio.current_task()
        await cancel_and_wait(*(t for t in asyncio.all_tasks() if t is not current))

    def _read_role(self) -> None:
        clusters = self._client.describe_db_clusters(DBClusterIdentifier=self.cluster)
        for member in clusters["DBClusters"][0].get("DBClusterMembers", []):
            if member["DBInstanceIdentifier"] == self.instance:
                self.writer = bool(member["IsClusterWriter"])

    async def _poll_role(self) -> None:
        while True:
            await asyncio.sleep(self._poll)
            try:
                await asyncio.to_thread(self._read_role)
            except Exception as error:  # the API stopped: keep the last role
                log.debug("cannot read the role of %s: %s", self.instance, error)

    async def _serve(self, request: web.Request) -> web.WebSocketResponse:
        client = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
        await client.prepare(request)
        self._clients.add(client)
        async with self._http.ws_connect(
            f"ws://{self._upstream}/gremlin", max_msg_size=16 * 1024 * 1024
        ) as server:
            upstream = asyncio.create_task(self._relay_answers(server, client))
            try:
                async for message in client:
                    if message.type is aiohttp.WSMsgType.BINARY:
                        answer = self._refusal(message.data)
                        if answer is not None:
                            await client.send_bytes(answer)
                            continue
                        await server.send_bytes(message.data)
                    elif message.type is aiohttp.WSMsgType.TEXT:
                        await server.send_str(message.data)
            finally:
                upstream.cancel()
                self._clients.discard(client)
        return client

    async def _relay_answers(
        self, server: aiohttp.ClientWebSocketResponse, client: web.WebSocketResponse
    ) -> None:
        async for message in server:
            if message.type is aiohttp.WSMsgType.BINARY:
                await client.send_bytes(message.data)
            elif message.type is aiohttp.WSMsgType.TEXT:
                await client.send_str(message.data)
        await client.close()

    def _refusal(self, frame: bytes) -> bytes | None:
        """Neptune's error answer to `frame`, or None to forward it."""
        parsed = parse_request(frame)
        if parsed is None:
            return None
        request_id, writes = parsed
        refusal = None
        if self.throttle > 0:
            self.throttle -= 1
            refusal = THROTTLED
        elif writes and self.writer is False:
            refusal = READ_ONLY
        elif writes and self.conflicts > 0:
            self.conflicts -= 1
            refusal = CONFLICT
        if refusal is None:
            self.forwarded_writes += writes
            return None
        self.answered[refusal[0]] += 1
        return error_answer(request_id, *refusal)

    # -- on a thread of its own, for synchronous tests --------------------------------------

    def __enter__(self) -> NeptuneFront:
        self._thread = LoopThread("neptune-front")
        self._thread.run(self.start(), 30)
        return self

    def __exit__(self, *_: object) -> None:
        thread = self._thread
        if thread is not None:
            self._thread = None
            thread.stop(self.close())
