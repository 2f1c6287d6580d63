"""Multiplexed WebSocket connections to Gremlin Servers, routing answers by request id.

One connection carries many requests at once (as the Java, .NET, JS and Go drivers do); its
frames are parsed as they arrive (sidecar/wsread.py, no task or coroutine per message), so a
slow client or a long stream never stalls the others sharing it, and every frame is handed to
its request from the socket's data_received. A connection is
dedicated to one `Channel` (mime type and frame type) because Gremlin Server picks the
serializer per connection when it writes.

When a connection fails, every request on it fails with the outcome the core needs for a safe
retry: NOT_SENT if its frame was never written, CONNECTION_LOST once it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from typing import Protocol

import aiohttp
from gremlinlb.sidecar import frames, wsread
from gremlinlb.sidecar.bigframes import Prepared
from gremlinlb.sidecar.frames import Channel, FrameType, ResponseHeader
from gremlinlb.sidecar.ids import IdSource
from gremlinlb.sidecar.options import BackendOptions
from gremlinlb.sidecar.wsout import BATCH_FRAMES, FrameOutput, Outgoing

from gremlinlb import sigv4
from gremlinlb.core import (
    ConnectionFailure,
    ConnectionLostError,
    Endpoint,
    NotSentError,
    SigV4Settings,
    UpgradeBusyError,
)

log = logging.getLogger(__name__)


class ResponseSink(Protocol):
    """Where a connection delivers the frames of one request (called on the event loop)."""

    written: bool
    # When its frame was queued for the socket, then when its last answer frame arrived: the
    # request timeout runs from the send, never from a wait for a host or a connection.
    last_activity: float

    def on_frame(self, frame: bytes | str, header: ResponseHeader) -> None: ...

    def on_failure(self, error: ConnectionFailure) -> None: ...

    def on_oversize(self, size: int, limit: int) -> None:
        """An answer frame of `size` bytes, over `limit`, was read and dropped; no further
        frame of this request will be delivered."""


class BackendConnection:
    """One multiplexed WebSocket to one server for one channel."""

    def __init__(
        self,
        endpoint: Endpoint,
        channel: Channel,
        options: BackendOptions,
        http: aiohttp.ClientSession,
        ids: IdSource,
        *,
        on_route_done: Callable[[BackendConnection], None] | None = None,
        on_closed: Callable[[BackendConnection], None] | None = None,
        heartbeat: float | None = None,
        signing: SigV4Settings | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._signing = signing  # SigV4 on the upgrade, signed when it opens (gremlinlb.sigv4)
        self.channel = channel
        self._options = options
        self._http = http
        self._ids = ids
        self._on_route_done = on_route_done
        self._on_closed = on_closed
        self._heartbeat = heartbeat
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._close_code = aiohttp.WSCloseCode.OK  # what our close frame says
        self._routes: dict[bytes, ResponseSink] = {}
        self._output: FrameOutput | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # kept: see _queue
        self._pending: list[Outgoing] = []  # frames of this turn, written together
        self._pending_sinks: list[ResponseSink] = []  # whose frames are among them
        self.retired = False
        self.closed = False
        self.opened_at = 0.0

    def __repr__(self) -> str:
        return f"<BackendConnection {self.endpoint.address} {self.channel.mime} {self.in_flight}>"

    @property
    def in_flight(self) -> int:
        return len(self._routes)

    @property
    def usable(self) -> bool:
        return not self.closed and not self.retired and self._ws is not None

    def has_room(self) -> bool:
        return self.in_flight < self._options.max_in_flight_per_connection

    def routes(self) -> list[tuple[bytes, ResponseSink]]:
        return list(self._routes.items())

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self, connect_timeout: float) -> None:
        """Connect (and authenticate) within `connect_timeout` seconds, or raise NotSentError."""
        try:
            async with asyncio.timeout(connect_timeout):
                headers = await sigv4.upgrade_headers_off_loop(self._signing, self.endpoint)
                self._ws = await self._http.ws_connect(
                    self.endpoint.url,
                    headers=headers,
                    max_msg_size=self._options.hard_answer_bytes,
                    ssl=self._ssl(),
                    autoping=True,
                    heartbeat=self._heartbeat,  # keepalive: pings while nothing is received
                    compress=0,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0),
                )
                if self._options.credentials:
                    await self._authenticate()
        except BaseException as error:  # cancelled too (its client left): no socket is kept
            await self._abort()
            if isinstance(error, ConnectionFailure) or not isinstance(error, Exception):
                raise
            raise _refused(self.endpoint.url, error) from error
        self.opened_at = time.monotonic()
        self._output = FrameOutput(self._ws, mask=True)
        self._loop = asyncio.get_running_loop()
        wsread.take_over(self._ws, self, self._options.hard_answer_bytes)

    def _ssl(self) -> ssl.SSLContext | bool:
        if self.endpoint.scheme != "wss":
            return True  # ignored for ws://
        return self._options.ssl_context if self._options.ssl_context is not None else True

    async def _authenticate(self) -> None:
        """SASL PLAIN before any traffic: Gremlin Server answers a second request sent while it
        negotiates with 401, so a multiplexed connection must be authenticated up front.

        The first message of a connection is held by the server and answered with 407; the
        answer to our credentials is the held message's result (ignored: it is our own no-op).
        """
        assert self._ws is not None
        request_id = self._ids.next()
        sasl = {"sasl": self._options.sasl_plain()}
        await self._send_raw(
            frames.build_request(self.channel, request_id, "authentication", "", sasl)
        )
        header = await self._receive_header()
        if header.code == frames.AUTHENTICATE:
            await self._send_raw(
                frames.build_request(self.channel, request_id, "authentication", "", sasl)
            )
            header = await self._receive_header()
        if header.code in (frames.UNAUTHORIZED, 403, frames.AUTHENTICATE):
            raise NotSentError(
                f"{self.endpoint.address} refused the configured credentials for user "
                f"{self._options.username!r} (status {header.code}); check the username and "
                "password given to the sidecar"
            )

    async def _receive_header(self) -> ResponseHeader:
        assert self._ws is not None
        message = await self._ws.receive()
        if message.type not in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
            raise NotSentError(
                f"{self.endpoint.address} closed the connection during authentication "
                f"({message.type.name})"
            )
        return frames.parse_response(message.data, self.channel)

    async def _send_raw(self, frame: bytes | str) -> None:
        assert self._ws is not None
        if isinstance(frame, str):
            await self._ws.send_str(frame)
        else:
            await self._ws.send_bytes(frame)

    def close(self, reason: str = "closed") -> None:
        """Fail what is still in flight and close the socket (in the background)."""
        if self.closed:
            return
        self.closed = True
        for sink in self._pending_sinks:  # queued, never written: safe to send elsewhere
            sink.written = False
        self._pending, self._pending_sinks = [], []
        self._fail_all(ConnectionLostError(f"connection to {self.endpoint.address} {reason}"))
        if self._on_closed is not None:
            self._on_closed(self)
        task = asyncio.get_running_loop().create_task(self._abort())
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)

    def retire(self) -> None:
        """Take no new requests; close once the ones in flight are done."""
        self.retired = True
        if not self._routes:
            self.close("retired")

    async def _abort(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await ws.close(code=self._close_code)

    # -- requests ------------------------------------------------------------------------

    def send(self, frame: Outgoing, request_id: bytes, sink: ResponseSink) -> None:
        """Register `sink` for `request_id` and queue `frame`; raise NotSentError if the
        connection is not open (the sink is then not registered and has NOT been told).

        The frames queued in one event-loop turn are written together at its end (one system
        call); if that write fails, the connection closes and every sink on it fails as
        CONNECTION_LOST, since its frame may have reached the server."""
        ws = self._ws
        if self.closed or ws is None or ws.closed or self._output is None:
            raise NotSentError(f"connection to {self.endpoint.address} is not open")
        assert isinstance(frame, Prepared) or (
            isinstance(frame, str) is (self.channel.frame_type is FrameType.TEXT)
        )
        self._routes[request_id] = sink
        sink.written = True  # from here on, assume the server may have it
        sink.last_activity = time.monotonic()  # its request timeout starts now, not before
        self._pending_sinks.append(sink)
        self._queue(frame)

    def _queue(self, frame: Outgoing) -> None:
        # The loop is kept rather than asked for: on Python 3.11 every get_running_loop() is a
        # getpid() system call.
        if not self._pending:
            assert self._loop is not None
            self._loop.call_soon(self._flush)
        self._pending.append(frame)
        if len(self._pending) >= BATCH_FRAMES:
            self._flush()  # the scheduled call then finds nothing to do

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        self._pending_sinks = []
        if self.closed or self._output is None or not pending:
            return
        try:
            self._output.write(pending)
        except Exception as error:
            self.close(f"failed while sending: {_describe(error)}")

    def expire(self, request_id: bytes, error: ConnectionFailure) -> None:
        """Give up on one request (its answer, should it come, is dropped)."""
        sink = self._routes.pop(request_id, None)
        if sink is not None:
            sink.on_failure(error)
            self._route_done()

    def _route_done(self) -> None:
        if self.retired and not self._routes:
            self.close("retired")
        elif self._on_route_done is not None:
            self._on_route_done(self)

    # -- reading: sidecar/wsread.py calls these from the socket's data_received -----------

    def on_message(self, payload: bytes | str) -> None:
        try:
            self._dispatch(payload)
        except Exception as error:
            log.exception("handling a frame from %s failed", self.endpoint.address)
            self.close(f"failed: {_describe(error)}")

    def on_ping(self, payload: bytes) -> None:
        if self._output is not None:
            self._output.control(wsread.OP_PONG, payload)

    def on_close(self, code: int | None, reason: str) -> None:
        if self._ws is not None:
            wsread.tell_aiohttp(self._ws, code, reason)
        self.close(f"closed by the server ({reason})" if reason else "closed by the server")

    def on_protocol_error(self, error: wsread.WebSocketProtocolError) -> None:
        if self._ws is not None:
            wsread.tell_aiohttp(self._ws, None, "")
        self._close_code = aiohttp.WSCloseCode(error.code)
        self.close(f"failed: {_describe(error)}")

    def _dispatch(self, frame: bytes | str) -> None:
        try:
            header = frames.parse_response(frame, self.channel)
        except ValueError as error:  # its request times out: evidence, not a verdict
            log.warning("unreadable frame from %s dropped: %s", self.endpoint.address, error)
            return
        if len(frame) > self._options.max_message_bytes:
            self._drop_oversized(header, len(frame))
            return
        if header.request_id is None:
            log.warning(
                "%s answered status %d without a request id; dropped",
                self.endpoint.address,
                header.code,
            )
            return
        if header.code == frames.AUTHENTICATE:
            self._answer_challenge(header.request_id)
            return
        if header.final:
            sink = self._routes.pop(header.request_id, None)
            if sink is None:
                return  # the answer to a request that already timed out
            sink.on_frame(frame, header)
            self._route_done()
            return
        sink = self._routes.get(header.request_id)
        if sink is not None:
            sink.on_frame(frame, header)

    def _drop_oversized(self, header: ResponseHeader, size: int) -> None:
        """An answer over max_message_bytes fails its own request only; the connection and
        everything else on it carry on (the rest of that request's frames are dropped)."""
        limit = self._options.max_message_bytes
        log.warning(
            "%s sent a %d-byte answer frame, over the %d-byte limit; dropped, its request fails",
            self.endpoint.address,
            size,
            limit,
        )
        if header.request_id is None:
            return
        sink = self._routes.pop(header.request_id, None)
        if sink is None:
            return
        sink.on_oversize(size, limit)
        self._route_done()

    def _answer_challenge(self, request_id: bytes) -> None:
        """A 407 after the handshake (a server that re-authenticates): answer it in place."""
        sink = self._routes.get(request_id)
        if sink is None:
            return
        if not self._options.credentials:
            self._routes.pop(request_id, None)
            sink.on_frame(
                frames.error_response(
                    self.channel,
                    request_id,
                    frames.UNAUTHORIZED,
                    f"gremlinlb sidecar: {self.endpoint.address} requires authentication; give "
                    "the sidecar --backend-username and a password",
                ),
                ResponseHeader(request_id, frames.UNAUTHORIZED),
            )
            self._route_done()
            return
        self._queue(
            frames.build_request(
                self.channel, request_id, "authentication", "", {"sasl": self._options.sasl_plain()}
            )
        )

    def _fail_all(self, error: ConnectionLostError) -> None:
        routes, self._routes = self._routes, {}
        for sink in routes.values():
            sink.on_failure(error if sink.written else NotSentError(str(error)))


_BACKGROUND: set[asyncio.Task[None]] = set()


async def background_closes(within: float) -> None:
    """Let this loop's socket closes finish (bounded): a stop must not destroy them pending."""
    loop = asyncio.get_running_loop()
    if mine := [task for task in _BACKGROUND if task.get_loop() is loop]:
        await asyncio.wait(mine, timeout=within)


def _describe(error: object) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _refused(url: str, error: BaseException) -> NotSentError:
    """Neptune answers a missing, wrong or stale SigV4 signature with 403 on the upgrade, and
    a connection over its limit with 429: that host is busy, not down (UpgradeBusyError)."""
    text = f"cannot connect to {url}: {_describe(error)}"
    status = error.status if isinstance(error, aiohttp.WSServerHandshakeError) else 0
    if status == 429:
        return UpgradeBusyError(f"{text} (429 on the WebSocket upgrade: busy, not down)")
    if status == 403:
        text += " (403 on the WebSocket upgrade: IAM auth refused it; check --sigv4-enabled, "
        text += "--sigv4-region and the credentials)"
    return NotSentError(text)
