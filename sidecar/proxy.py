"""The client-facing Gremlin endpoint: every request is balanced on its own.

A thin adapter around the core. Per request it reads the header (frames), asks the core for a
host (waiting in the core's buffer when none is healthy), sends the request with a backend id
of its own, streams every answer frame back with the client's id restored, and retries per the
core's rules, but never once a frame was forwarded: the client would see results twice.

Reads may have more than one attempt in flight: a hedge (no answer after the core's hedge
delay) or a re-dispatch (their host was ejected). The first attempt to answer owns the
request; the others become orphans whose answers are read and dropped, so their leases still
end with a real latency. Requests are driven by callbacks; a task is spent only where one must
wait (the buffer, a connection being opened, a retry, a hedge, a session).

A backend failure never closes the client's socket (gremlinpython never reconnects one): the
request is retried or answered with a final error frame carrying the client's request id.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
from aiohttp import web
from gremlinlb.sidecar import frames
from gremlinlb.sidecar.backend import (
    OUT_OF_ROTATION,
    BackendConnection,
    Backends,
)
from gremlinlb.sidecar.bigframes import (
    FrameAssembly,
    backend_frame,
    off_loop,
    prepare_first_attempt,
)
from gremlinlb.sidecar.frames import Channel, MalformedFrameError, Request, ResponseHeader
from gremlinlb.sidecar.inbound import InboundMeter, MeteredWebSocketResponse
from gremlinlb.sidecar.memory import MemoryBudget, release_free_memory
from gremlinlb.sidecar.metrics import SidecarMetrics
from gremlinlb.sidecar.options import ProxyOptions as ProxyOptions  # moved to options.py
from gremlinlb.sidecar.sources import answer_says_source_unknown, request_source
from gremlinlb.sidecar.wsout import BATCH_FRAMES, FrameOutput

from gremlinlb.core import (
    OVERLOAD_STATUS_CODES,
    AttemptLimit,
    Balancer,
    BalancerClosedError,
    BufferFullError,
    BufferTimeoutError,
    ConnectionFailure,
    Endpoint,
    EventKind,
    GremlinLBError,
    HostEvent,
    Lease,
    NoHealthyEndpointError,
    Outcome,
    Waiter,
    frame_may_write,
    may_retry,
)
from gremlinlb.core.sources import INVALID_REQUEST_ARGUMENTS

log = logging.getLogger(__name__)

PREFIX = "gremlinlb sidecar: "
_CLOSE_REASON_BYTES = 120  # a WebSocket close reason must fit a 125-byte control frame
# Outcomes whose answer (or error frame) the client already has.
_ANSWERED = (Outcome.SUCCESS, Outcome.SERVER_ERROR, Outcome.OVERLOADED, Outcome.CLIENT_ERROR)
# Bytes handed to a client's socket per system call when much is queued: large enough that
# small answers of a loop turn leave together, small enough that a client that stops reading
# leaves little beyond its socket's high-water mark uncounted.
_WRITE_SLICE = 64 * 1024
_CLOSED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)
# Seconds between checks that a client whose reader is held back is still there.
_DEPARTURE_CHECK = 0.25
# The longest wait between two checks whether an unanswered read deserves a hedge.
_HEDGE_RECHECK_MAX = 0.25
# Frames larger than this are parsed and write-checked on a worker thread, so that one client's
# large request (the check walks every value: about 40 ms per MB) does not hold up everyone's;
# at or below it (almost every request) they are checked in place, which costs less than the
# hop (a few hundred microseconds at most).
OFF_LOOP_FRAME_BYTES = 64 * 1024


def _read_only(request: Request) -> bool:
    """Whether the core's write check shows `request` cannot write (only bytecode can)."""
    return request.op == "bytecode" and not frame_may_write(request.body, request.channel.mime)


def _parse_and_check(data: bytes | str, next_id: Callable[[], bytes]) -> tuple[Request, bool]:
    """Parse a large frame, check it and encode its first backend frame, on a worker thread
    (see OFF_LOOP_FRAME_BYTES and bigframes.py)."""
    request = frames.parse_request(data)
    return prepare_first_attempt(request, next_id), _read_only(request)


class StatusError(GremlinLBError):
    """A backend's own answer (429/596) recorded as the error of an attempt."""

    def __init__(self, endpoint: Endpoint, code: int) -> None:
        super().__init__(f"{endpoint.address} answered status {code}")
        self.code = code


class AnswerTooLargeError(GremlinLBError):
    """An answer frame over max_message_bytes: the request's own failure, not its host's."""


class ClientLeftError(ConnectionFailure):
    """The client left: its requests not yet sent are withdrawn (never sent), and a session
    statement in flight ends with the session. Says nothing about any host."""

    outcome = Outcome.CLIENT_ERROR


class Exchange:
    """One client request, across its attempts (a retry, a hedge, a re-dispatch)."""

    __slots__ = (
        "budget",
        "client",
        "deadline_timer",
        "done",
        "finished",
        "forwarded",
        "hedge_timer",
        "held",
        "last_error",
        "live",
        "owner",
        "read_only",
        "request",
        "sent",
        "sent_at",
        "sent_attempts",
        "source",
        "started",
        "tasks",
        "tried",
    )

    def __init__(
        self, client: ClientConnection, request: Request, read_only: bool, max_attempts: int
    ) -> None:
        self.client = client
        self.request = request
        self.read_only = read_only
        self.source = request_source(request)  # the traversal source it names (None: default)
        self.started = time.monotonic()
        self.forwarded = False  # a frame reached the client: committed to `owner`
        self.sent = False  # some attempt was written to a backend
        self.done = False  # the client got its final frame
        self.finished = False  # the sidecar is done with it (counted, slot given back)
        self.live: list[Attempt] = []  # attempts whose answer would still reach the client
        self.owner: Attempt | None = None  # the attempt whose answer the client gets
        self.tried: list[Endpoint] = []
        # Every attempt of it, of every kind, counts against max_attempts (see AttemptLimit).
        self.budget = AttemptLimit(max_attempts)
        self.sent_attempts: list[Attempt] = []  # handed to a backend connection
        self.sent_at = 0.0  # when its first attempt was sent: request_timeout runs from here
        self.deadline_timer: asyncio.TimerHandle | None = None
        self.held: tuple[bytes | str, ResponseHeader] | None = None  # a 429/596 to give back
        self.last_error: BaseException | None = None
        self.hedge_timer: asyncio.TimerHandle | None = None
        # Tasks waiting for a host or a connection for it, nothing of theirs sent yet: what
        # is cancelled when its client leaves. Made on the first; most requests never wait.
        self.tasks: set[asyncio.Task[None]] | None = None

    def received(self) -> int:
        """How many of its attempts a server received (written, whatever came of them)."""
        return sum(1 for a in self.sent_attempts if a.written)

    def carried(self) -> bool:
        """Some attempt of it was written and has not ended: it ends on its own."""
        return any(a.written and not a.ended for a in self.live)

    def forward(self, frame: bytes | str, header: ResponseHeader) -> None:
        if self.done:
            return
        self.forwarded = True
        if header.final:
            self.done = True
        self.client.send(frames.with_response_id(frame, header, self.request.request_id))

    def answer_error(self, code: int, message: str) -> None:
        if self.done:
            return
        self.done = True
        self.client.send_error(self.request.channel, self.request.request_id, code, message)


def _answer_outcome(code: int) -> Outcome:
    if code in OVERLOAD_STATUS_CODES:
        return Outcome.OVERLOADED
    return Outcome.SUCCESS if code in (frames.SUCCESS, frames.NO_CONTENT) else Outcome.SERVER_ERROR


class Attempt:
    """One try of an exchange on one host: the sink its backend connection delivers to.

    Only the exchange's owner (the first attempt to answer) reaches the client. Any other
    attempt (a hedge that lost, one re-dispatched away from an ejected host) is an orphan: its
    answer is read and dropped, and its lease ends then, so the core still learns its latency.
    """

    __slots__ = (
        "ended",
        "endpoint",
        "error",
        "exchange",
        "held",
        "last_activity",
        "lease",
        "on_end",
        "orphaned",
        "outcome",
        "report",
        "result",
        "written",
    )

    def __init__(
        self,
        exchange: Exchange,
        lease: Lease,
        report: Callable[[Lease, Outcome, BaseException | None], None],
        on_end: Callable[[Attempt], None] | None = None,
    ) -> None:
        self.exchange = exchange
        self.lease = lease
        self.endpoint = lease.endpoint
        self.report = report
        # Either someone awaits `result` (sessions) or `on_end` is called in place (every
        # other request: no task is spent on a request that succeeds at once).
        self.on_end = on_end
        self.result: asyncio.Future[Outcome] | None = (
            None if on_end is not None else asyncio.get_running_loop().create_future()
        )
        self.outcome: Outcome | None = None
        self.written = False
        self.last_activity = 0.0  # stamped by BackendConnection.send: the timeout starts there
        self.ended = False
        self.orphaned = False
        self.error: BaseException | None = None
        self.held: tuple[bytes | str, ResponseHeader] | None = None

    def _lost_the_race(self) -> bool:
        exchange = self.exchange
        return self.orphaned or exchange.done or exchange.owner not in (None, self)

    def _own(self) -> None:
        exchange = self.exchange
        if exchange.owner is None:
            exchange.owner = self
            if self.lease.hedge:
                exchange.client.proxy.balancer.hedge_won(self.lease)

    def on_frame(self, frame: bytes | str, header: ResponseHeader) -> None:
        self.last_activity = time.monotonic()
        if self._lost_the_race():
            if header.final:
                self._end(_answer_outcome(header.code), None)
            return
        if not header.final:
            self._own()  # a 206 went out: the request is committed to this attempt
            self.exchange.forward(frame, header)
            return
        outcome = _answer_outcome(header.code)
        if header.code == INVALID_REQUEST_ARGUMENTS and self._source_elsewhere(frame):
            outcome = Outcome.OVERLOADED  # refused before it ran: retried like a 429
        if outcome is Outcome.OVERLOADED:
            error = StatusError(self.endpoint, header.code)
            if not self.exchange.forwarded:
                self.held = (frame, header)  # the retry decides whether the client sees it
            else:
                self.exchange.forward(frame, header)
            self._end(outcome, error)
            return
        self._own()
        self.exchange.forward(frame, header)
        self._end(outcome, None)

    def on_failure(self, error: ConnectionFailure) -> None:
        self._end(error.outcome, error)

    def _source_elsewhere(self, frame: bytes | str) -> bool:
        """This host refused the request for lacking its traversal source (nothing ran): note
        that, and say whether a healthy host that may serve the source can take it instead.
        When none can, the client gets this server's own error."""
        exchange = self.exchange
        if exchange.forwarded or not answer_says_source_unknown(frame):
            return False
        balancer = exchange.client.proxy.balancer
        source = exchange.source or balancer.sources.default
        balancer.sources.record(self.endpoint, source, served=False)
        return balancer.serves_elsewhere(source, [*exchange.tried, self.endpoint])

    def on_oversize(self, size: int, limit: int) -> None:
        exchange = self.exchange
        incomplete = exchange.forwarded
        error = AnswerTooLargeError(
            f"{self.endpoint.address} answered with a {size}-byte frame, over the sidecar's "
            f"limit of {limit} bytes (max_message_bytes)"
        )
        if not self._lost_the_race():
            self._own()
            dropped = "; the answer was dropped"
            if incomplete:
                dropped += " after part of the results was sent, so they are incomplete"
            exchange.answer_error(
                frames.SERVER_ERROR,
                f"{error}{dropped}. Ask for less per request (limit(), range() paging, fewer "
                "properties), or raise --max-message-bytes here and in the client.",
            )
        self._end(Outcome.CLIENT_ERROR, error)

    def _end(self, outcome: Outcome, error: BaseException | None) -> None:
        if self.ended:
            return
        self.ended = True
        self.error = error
        self.outcome = outcome
        self.report(self.lease, outcome, error)
        if not isinstance(error, ClientLeftError):  # not how the host did
            self.exchange.client.proxy.metrics.count_request(self.endpoint, outcome)
        if self.on_end is not None:
            self.on_end(self)
        elif self.result is not None and not self.result.done():
            self.result.set_result(outcome)


class SessionPin:
    """The backend connection one client connection's sessions live on, for its whole life."""

    def __init__(self, balancer: Balancer, lease: Lease, connection: BackendConnection):
        self.lease = lease
        self.endpoint = lease.endpoint
        self.connection = connection
        self.broken: BaseException | None = None
        self._balancer = balancer
        self._closed = False

    def close(self) -> None:
        """The client left: end the session. A statement still running there ends as the
        client's doing, not as a lost connection: the host did nothing wrong."""
        if self._closed:
            return
        self._closed = True
        left = ClientLeftError(f"its client left while {self.endpoint.address} ran it")
        for request_id, _sink in self.connection.routes():
            self.connection.expire(request_id, left)
        self.connection.close("closed: its client left")  # Gremlin Server ends the session
        self._balancer.finish(self.lease, Outcome.SUCCESS)


class ClientConnection:
    """One client WebSocket: reads requests, writes answers through a queue of its own.

    Every byte held for the client (answers queued, request frames in flight) is counted here
    and in the proxy's memory budget; see gremlinlb.sidecar.memory for the bounds."""

    def __init__(
        self,
        proxy: Proxy,
        ws: web.WebSocketResponse,
        peer: str,
        transport: asyncio.Transport | None = None,
        meter: InboundMeter | None = None,
    ) -> None:
        self.proxy = proxy
        self.ws = ws
        self.peer = peer
        self.closed = False
        # Bytes of its frames aiohttp holds before they are received (see sidecar.inbound).
        self._meter = meter
        self._refused = False
        self.pin: SessionPin | None = None
        self._transport = transport
        self._pin_lock = asyncio.Lock()
        self._outbound: deque[bytes | str] = deque()
        self.queued_bytes = 0  # answers queued or being written
        self._request_bytes = 0  # request frames in flight
        self.in_flight = 0
        self.last_active = time.monotonic()
        self._cut_off = False
        self._gone = False
        self._left = False  # its unsent requests were withdrawn (see `leave`)
        # Kept: on Python 3.11 every asyncio.get_running_loop() is a getpid() system call.
        self.loop = asyncio.get_running_loop()
        self._output = FrameOutput(ws, mask=False)
        self._write_scheduled = False
        self._drainer: asyncio.Task[None] | None = None  # waits while the client lags behind
        self._idle = asyncio.Event()  # set while nothing is queued or being written
        self._idle.set()
        self._may_read = asyncio.Event()  # cleared while the client holds too much
        self._may_read.set()
        # Set while fewer than max_requests_per_client requests are in flight (a counter and
        # an event: asyncio.Semaphore.acquire costs a generator per call on Python 3.11).
        self._max_in_flight = proxy.options.memory.max_requests_per_client
        self._room_for_request = asyncio.Event()
        self._room_for_request.set()
        self._nothing_in_flight = asyncio.Event()
        self._nothing_in_flight.set()
        self.tasks: set[asyncio.Task[None]] = set()
        if meter is not None:
            meter.on_grow = self._inbound_grew
            if meter.held:  # sent before the connection was set up
                self._hold(meter.held)

    # -- reading -------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while True:
                if not self._reading_allowed():
                    await self._wait_for_room()
                message = await self.ws.receive()
                if message.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                    taken = self._meter.take() if self._meter is not None else 0
                    try:
                        data = message.data
                        assembly = self._meter.claim(data) if self._meter is not None else None
                        if assembly is not None:  # a large frame, assembled by the meter
                            data = await self._materialize(assembly)
                        if data is None or not await self._on_frame(data):
                            break
                    finally:
                        self._give_back(taken)  # counted from here on as a request, if it is one
                elif message.type is aiohttp.WSMsgType.ERROR:
                    log.info("client %s: %s", self.peer, message.data)
                    break
                elif message.type in _CLOSED:
                    break
        finally:
            self.leave()
            if self.pin is not None:
                self.pin.close()
            await self._flush(within=1.0)
            if self._drainer is not None:
                self._drainer.cancel()
            self._gone = True  # from here on nothing is queued for it
            self._forget_queue()
            self._give_back(self._request_bytes)
            self._request_bytes = 0
            if self._meter is not None:
                self._give_back(self._meter.release())
                self._meter.detach()  # its reader's buffers go with it, not with this object

    def leave(self) -> None:
        """The client is gone (or being closed by the sidecar): withdraw every request of it
        not yet sent, so none is sent after it left. Called from every way of leaving: the
        reader's end (a close frame, a FIN, a reset, a frame cut short), a failed write, a
        cut-off, and a departure noticed while the reader was held back."""
        self.closed = True
        if self._left:
            return
        self._left = True
        self._may_read.set()  # a reader held back for this client's sake finds out it left
        self._room_for_request.set()
        self.proxy.client_left(self)

    def departed(self) -> bool:
        """Whether the client's socket is gone, seen without reading from it (the reader may
        be held back: by backpressure, or by max_requests_per_client)."""
        return (
            self.closed
            or self._cut_off
            or self.ws.closed
            or (self._transport is not None and self._transport.is_closing())
        )

    async def _wait_or_leave(self, event: asyncio.Event) -> None:
        """Wait for `event`, checking now and then whether the client left meanwhile: a
        client that is not read from announces nothing, and its requests must not outlive it."""
        while not event.is_set():
            if self.departed():
                self.leave()
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_DEPARTURE_CHECK):
                    await event.wait()

    def _reading_allowed(self) -> bool:
        limits = self.proxy.options.memory
        return (
            self.queued_bytes + self._request_bytes < limits.client_pause_bytes
            and not self.proxy.memory.over
        )

    async def _wait_for_room(self) -> None:
        """Backpressure: read no more requests until this client reads its answers (and the
        sidecar as a whole is back under its budget). Its requests wait in socket buffers."""
        self.proxy.paused.add(self)
        try:
            while not (self._reading_allowed() or self.departed()):
                self._may_read.clear()
                await self._wait_or_leave(self._may_read)
        finally:
            self.proxy.paused.discard(self)

    async def _materialize(self, assembly: FrameAssembly) -> bytes | str | None:
        """A large frame as bytes or text, made on a worker thread; None when a text frame
        is not UTF-8 (the connection is closed with 1007, as aiohttp would)."""
        try:
            return await self.loop.run_in_executor(
                self.proxy.checker, off_loop, assembly.materialize
            )
        except UnicodeDecodeError:
            await self._close_after_in_flight(
                aiohttp.WSCloseCode.INVALID_TEXT, "invalid UTF-8 text message"
            )
            return None

    async def _on_frame(self, data: bytes | str) -> bool:
        """Handle one frame; False when the connection must close."""
        proxy = self.proxy
        self.last_active = time.monotonic()
        size = len(data)
        if size > proxy.options.max_message_bytes:
            return await self._refuse(
                data,
                frames.MALFORMED_REQUEST,
                f"the frame has {size} bytes, more than the limit of "
                f"{proxy.options.max_message_bytes} (max_message_bytes)",
            )
        read_only: bool | None = None  # checked in dispatch unless checked here
        try:
            if size > OFF_LOOP_FRAME_BYTES:
                request, read_only = await self.loop.run_in_executor(
                    proxy.checker, off_loop, _parse_and_check, data, proxy.backends.ids.next
                )
            else:
                request = frames.parse_request(data)
        except MalformedFrameError as error:
            proxy.metrics.malformed.inc()
            if error.target is not None:
                self.send_error(*error.target, error.code, str(error))
                return True
            if isinstance(error, frames.UnsupportedMimeError):
                await self._close_after_in_flight(error.close_code, str(error))
            else:
                await self._close_after_in_flight(
                    aiohttp.WSCloseCode.PROTOCOL_ERROR, f"malformed frame: {error}"
                )
            return False
        if request.op == "authentication":
            self.send_error(
                request.channel,
                request.request_id,
                frames.INVALID_REQUEST_ARGUMENTS,
                "clients need no credentials here; the sidecar authenticates to the backends "
                "itself",
            )
            return True
        if request.op == "close" and not request.session:
            self.send_error(
                request.channel,
                request.request_id,
                frames.INVALID_REQUEST_ARGUMENTS,
                "op 'close' belongs to the 'session' processor",
            )
            return True
        while self.in_flight >= self._max_in_flight and not self.closed:
            self._room_for_request.clear()
            await self._wait_or_leave(self._room_for_request)
        if self.closed or self._cut_off:
            return False  # it left while this frame waited: it is not served
        self.in_flight += 1
        self._nothing_in_flight.clear()
        self._request_bytes += size
        self._hold(size)
        try:
            proxy.dispatch(self, request, read_only)
        except Exception as error:  # a bug must cost one request, not the client's socket
            log.exception("dispatching a request from %s failed", self.peer)
            proxy.abandon(request, self, error)
        return True

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def release_slot(self, size: int) -> None:
        """A request of `size` bytes is over: its slot and its bytes are free again."""
        self.in_flight -= 1
        self._room_for_request.set()
        if not self.in_flight:
            self._nothing_in_flight.set()
        self.last_active = time.monotonic()
        if not self.closed:
            self._request_bytes -= size
            self._give_back(size)

    async def _refuse(self, data: bytes | str, code: int, message: str) -> bool:
        self.proxy.metrics.malformed.inc()
        try:  # a frame this large is read off the loop: GraphSON is decoded to find its id
            request = await self.loop.run_in_executor(
                self.proxy.checker, frames.parse_request, data
            )
        except MalformedFrameError as error:
            if error.target is not None:
                self.send_error(*error.target, code, message)
                return True
            await self._close_after_in_flight(aiohttp.WSCloseCode.MESSAGE_TOO_BIG, message)
            return False
        self.send_error(request.channel, request.request_id, code, message)
        return True

    async def _close_after_in_flight(self, code: int, reason: str) -> None:
        """Close for a frame that cannot be answered, but only once the requests already in
        flight on this connection were answered: a bad frame costs no other request its
        answer. Nothing more is read meanwhile; each request ends within its buffer wait and
        request timeout, so the wait is bounded by those."""
        settings = self.proxy.balancer.settings
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(settings.buffer.max_wait + settings.request_timeout):
                await self._nothing_in_flight.wait()
        await self.close(code, reason)

    # -- memory --------------------------------------------------------------------------

    def _hold(self, size: int) -> None:
        memory = self.proxy.memory
        memory.charge(size)
        if memory.over:
            self.proxy.shed()

    def _give_back(self, size: int) -> None:
        if size <= 0:
            return
        proxy = self.proxy
        was_over = proxy.memory.over
        proxy.memory.discharge(size)
        if was_over and not proxy.memory.over:
            proxy.resume_paused()
        elif not self._may_read.is_set() and self._reading_allowed():
            self._may_read.set()

    def _forget_queue(self) -> None:
        self._outbound.clear()
        queued, self.queued_bytes = self.queued_bytes, 0
        self._give_back(queued)

    def cut_off(self, reason: str) -> None:
        """Drop what is queued for this client and close it: it does not read its answers."""
        if self._cut_off:
            return
        self._cut_off = True
        self._forget_queue()
        if self.closed:
            return  # already leaving: dropping its queue was all there was to do
        self.loop.call_soon(self.leave)  # not from inside whatever answer overflowed it
        self.proxy.metrics.clients_cut_off.inc()
        log.warning("client %s cut off: %s", self.peer, reason)
        task = asyncio.get_running_loop().create_task(self._close_unread(reason))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    @property
    def inbound_bytes(self) -> int:
        """Bytes of its frames held before they were received (unfinished ones, mostly)."""
        return 0 if self._meter is None or self._refused else self._meter.held

    def _inbound_grew(self, size: int) -> bool:
        """aiohttp's reader took `size` more bytes of this client's frames: count them; past
        the budget, refuse whoever holds the most. False if that is this client (the bytes
        are then dropped)."""
        if self._refused:
            return False
        self._hold(size)
        return not self._refused

    def refuse_input(self, reason: str) -> None:
        """Close this client for what its unfinished frames would take past the memory budget
        (1013, try again later): nothing more of it is read or kept, its bytes are given back."""
        if self._refused:
            return
        self._refused = True
        meter = self._meter
        assert meter is not None
        meter.refused = True
        self._give_back(meter.release())
        if self._transport is not None:
            self._transport.pause_reading()
        if isinstance(self.ws, MeteredWebSocketResponse):
            self.ws.drop_reader()
            # The frame's pages go back now, not after the attack (off the loop: a trim walks
            # the whole heap).
            self.loop.run_in_executor(None, release_free_memory)
        self.proxy.metrics.clients_refused.inc()
        log.warning("client %s refused: %s", self.peer, reason)
        if self.closed:
            return
        self.loop.call_soon(self.leave)
        # No reply is waited for: a client in the middle of a frame cannot send its close frame
        # before finishing it, and its reader's buffers are freed only once the socket is gone.
        self.spawn(self._close_unread(reason, aiohttp.WSCloseCode.TRY_AGAIN_LATER, within=0.05))

    async def _close_unread(
        self,
        reason: str,
        code: int = aiohttp.WSCloseCode.POLICY_VIOLATION,
        within: float = 1.0,
    ) -> None:
        """Close a client that does not read: its socket buffers are full, so the close frame
        may never be written; then the connection is dropped."""
        encoded = reason.encode("utf-8")[:_CLOSE_REASON_BYTES]
        try:
            async with asyncio.timeout(within):
                await self.ws.close(code=code, message=encoded)
        except Exception:
            if self._transport is not None:
                self._transport.abort()
        self._may_read.set()

    def resume(self) -> None:
        if self._reading_allowed():
            self._may_read.set()

    # -- writing -------------------------------------------------------------------------

    def send(self, frame: bytes | str) -> None:
        """Queue a frame for the client; never blocks (backend readers call this)."""
        if self.ws.closed or self._cut_off or self._gone:
            return
        size = len(frame)
        limit = self.proxy.options.memory.client_max_queued_bytes
        if self.queued_bytes and self.queued_bytes + size > limit:
            self.cut_off(
                f"it does not read its answers ({self.queued_bytes} bytes queued, limit "
                f"{limit}: client_max_queued_bytes)"
            )
            return
        self._outbound.append(frame)
        self.queued_bytes += size
        self._idle.clear()
        self._hold(size)
        if self._drainer is not None:
            return  # written once the client's socket has drained
        if len(self._outbound) >= BATCH_FRAMES:
            self._write_out()
        elif not self._write_scheduled:
            self._write_scheduled = True
            self.loop.call_soon(self._write_out)

    def send_error(
        self, channel: Channel, request_id: bytes | None, code: int, message: str
    ) -> None:
        self.proxy.metrics.local_errors.labels(str(code)).inc()
        self.send(frames.error_response(channel, request_id, code, PREFIX + message))

    def _write_out(self) -> None:
        """Write what the loop turn queued, a few frames per system call.

        Frames stay queued (and counted) until handed to the socket, in slices of about
        _WRITE_SLICE bytes; while the client does not read, its socket buffer passes the
        high-water mark and a task waits for it to drain before the next slice, as aiohttp's
        own send would. So at most one slice sits in the socket buffer uncounted."""
        self._write_scheduled = False
        outbound = self._outbound
        output = self._output
        try:
            while outbound:
                if output.paused:
                    if self._drainer is None:
                        self._drainer = self.loop.create_task(self._drain())
                    return
                batch: list[bytes | str] = []
                size = 0
                while outbound and (not batch or size < _WRITE_SLICE):
                    frame = outbound.popleft()
                    batch.append(frame)
                    size += len(frame)
                self.queued_bytes -= size
                self._give_back(size)
                output.write(batch)
        except (ConnectionError, RuntimeError) as error:
            self._lost(error)
            return
        self._idle.set()

    async def _drain(self) -> None:
        try:
            await self._output.drained()
        except (ConnectionError, RuntimeError) as error:
            self._lost(error)
            return
        finally:
            self._drainer = None
        self._write_out()

    def _lost(self, error: BaseException) -> None:
        log.debug("client %s gone while writing: %s", self.peer, error)
        self.closed = True
        self.loop.call_soon(self.leave)  # not from inside the answer that found it gone
        self._forget_queue()
        self._idle.set()
        self._may_read.set()  # a reader paused for this client's sake finds out it left

    async def _flush(self, within: float) -> None:
        """Wait (at most `within` seconds) until every queued frame was written."""
        if self.ws.closed:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._idle.wait()

    def idle_for(self, now: float) -> float:
        """Seconds since this client last had a request in flight or an answer to read."""
        if self.in_flight or self.queued_bytes or self.pin is not None:
            return 0.0
        return now - self.last_active

    async def close(self, code: int, reason: str) -> None:
        await self._flush(within=1.0)
        encoded = reason.encode("utf-8")[:_CLOSE_REASON_BYTES]
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, message=encoded)

    # -- sessions ------------------------------------------------------------------------

    async def session_pin(self, channel: Channel, source: str | None = None) -> SessionPin:
        async with self._pin_lock:
            if self.pin is None:
                proxy = self.proxy
                lease = await proxy.acquire(0, (), session=True, source=source)
                settings = proxy.balancer.settings
                try:
                    connection = await proxy.backends.dedicated(
                        lease.endpoint, channel, settings.connect_timeout
                    )
                except ConnectionFailure as error:
                    proxy.balancer.finish(lease, error.outcome, error)
                    raise
                except asyncio.CancelledError:  # its client left: nothing was sent there
                    proxy.balancer.release(lease)
                    raise
                if self.closed:
                    connection.close("its client left")
                    proxy.balancer.release(lease)
                    raise ConnectionFailure("the client left while its session connection opened")
                self.pin = SessionPin(proxy.balancer, lease, connection)
                log.info("client %s: sessions pinned to %s", self.peer, lease.endpoint.address)
            return self.pin


class Proxy:
    def __init__(
        self,
        balancer: Balancer,
        backends: Backends,
        metrics: SidecarMetrics,
        options: ProxyOptions | None = None,
    ) -> None:
        self.balancer = balancer
        self.backends = backends
        self.metrics = metrics
        self.options = options or ProxyOptions()
        self.clients: set[ClientConnection] = set()
        self.exchanges: set[Exchange] = set()
        self._no_clients = asyncio.Event()
        self._no_clients.set()
        self.accepting = True
        self.memory = MemoryBudget(self.options.memory.budget_bytes)
        self.paused: set[ClientConnection] = set()  # not read until they read their answers
        # Asks a quiet host a ping (the health loop's check_alive); None: hedges go by timing.
        self.check_alive: Callable[[Endpoint], None] | None = None
        # One thread parses and checks large frames (OFF_LOOP_FRAME_BYTES): they queue there
        # rather than take both cores from the servers and the loop.
        self.checker = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="gremlinlb-check"
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """aiohttp handler of GET /gremlin (the WebSocket upgrade)."""
        if not self.accepting:
            raise web.HTTPServiceUnavailable(text="the sidecar is shutting down")
        ws = MeteredWebSocketResponse(
            max_msg_size=self.options.hard_message_bytes, autoping=True, compress=False
        )
        await ws.prepare(request)
        client = ClientConnection(self, ws, str(request.remote), request.transport, ws.meter)
        self.clients.add(client)
        self._no_clients.clear()
        self.metrics.client_connections.inc()
        try:
            await client.run()
        finally:
            self.clients.discard(client)
            if not self.clients:
                self._no_clients.set()
            self.metrics.client_connections.dec()
        return ws

    def shed(self) -> None:
        """Over the memory budget: cut off the clients with the longest queues (those that read
        least) until the sidecar is back under it."""
        while self.memory.over:
            worst = max(self.clients, key=lambda c: c.queued_bytes, default=None)
            if worst is None or worst.queued_bytes == 0:  # cut_off empties a queue for good
                self._shed_inbound()
                return  # what is held is requests in flight: reading pauses until they end
            worst.cut_off(
                f"the sidecar holds {self.memory.used} bytes, over its memory budget of "
                f"{self.memory.limit}, and this client has the most unread answers "
                f"({worst.queued_bytes} bytes)"
            )

    def _shed_inbound(self) -> None:
        """Still over the budget with no answer queue left to cut: refuse the clients holding
        the most bytes of frames not yet received (unfinished ones, mostly) until it is back
        under. A frame in progress cannot be paused for long: aiohttp reads it regardless, and
        one that is never finished would hold its bytes for good."""
        while self.memory.over:
            heaviest = max(self.clients, key=lambda c: c.inbound_bytes, default=None)
            if heaviest is None or heaviest.inbound_bytes == 0:
                return
            heaviest.refuse_input(
                f"memory budget full (memory_budget_bytes={self.memory.limit}); "
                f"{heaviest.inbound_bytes} B of unfinished frames dropped: retry"
            )

    def close(self) -> None:
        """The sidecar stopped: the checking thread ends once idle."""
        self.checker.shutdown(wait=False, cancel_futures=True)

    def resume_paused(self) -> None:
        for client in list(self.paused):
            client.resume()

    # -- one request ---------------------------------------------------------------------

    def dispatch(
        self, client: ClientConnection, request: Request, read_only: bool | None = None
    ) -> None:
        """Start serving one request. The common case (a healthy host with an open connection
        that has room) is sent right here, with no task of its own and one loop timer (the
        hedge, for reads); waiting, opening a connection, retrying, hedging and sessions
        continue in a task. `read_only` is the write check's verdict if it was already made
        (off the loop, for a large frame)."""
        if read_only is None:
            read_only = _read_only(request)
        exchange = Exchange(client, request, read_only, self.balancer.settings.max_attempts)
        self.exchanges.add(exchange)
        self.balancer.sources.seen(exchange.source)
        if client.closed:  # it left before this request could start: never sent
            self._withdraw(exchange)
            return
        if request.session:
            self._spawn(exchange, self._serve(exchange, self._serve_session(exchange)))
            return
        try:
            acquired: Lease | Waiter = self.balancer.acquire(
                len(request.frame), (), source=exchange.source, write=not read_only
            )
        except (NoHealthyEndpointError, BalancerClosedError):
            self._continue(exchange)
            return
        if isinstance(acquired, Lease):
            settings = self.balancer.settings
            pool = self.backends.pool(acquired.endpoint, request.channel)
            connection = pool.ready(settings.connect_timeout)
            if connection is not None:
                self._send(self._new_attempt(exchange, acquired), connection)
                return
        self._continue(exchange, acquired)

    def abandon(self, request: Request, client: ClientConnection, error: Exception) -> None:
        """Answer and forget the exchange of `request` that dispatch failed to start."""
        for exchange in list(self.exchanges):
            if exchange.client is client and exchange.request is request:
                self._conclude(exchange, frames.SERVER_ERROR, f"internal error: {error}")
                return
        client.release_slot(len(request.frame))

    def _new_attempt(self, exchange: Exchange, lease: Lease) -> Attempt:
        attempt = Attempt(exchange, lease, self.balancer.finish, self._attempt_ended)
        exchange.live.append(attempt)
        return attempt

    def _send(self, attempt: Attempt, connection: BackendConnection) -> None:
        exchange = attempt.exchange
        request = exchange.request
        backend_id, frame = backend_frame(request, self.backends.ids.next)
        was_sent, exchange.sent = exchange.sent, True  # say "may have run" if in doubt
        if not exchange.sent_attempts:
            exchange.sent_at = time.monotonic()
        exchange.sent_attempts.append(attempt)
        try:
            connection.send(frame, backend_id, attempt)
        except ConnectionFailure as error:
            if not attempt.written:
                exchange.sent = was_sent
            attempt.on_failure(error)
            return
        self._arm_hedge(exchange)

    def _continue(self, exchange: Exchange, acquired: Lease | Waiter | None = None) -> None:
        """The next attempt, in a task: it may wait for a host or a connection."""
        if exchange.client.closed:  # a retry after its client left: nothing more is sent
            self._give_back(acquired)
            self._withdraw(exchange)
            return
        work = self._guard(exchange, self._next_attempt(exchange, acquired))
        self._spawn(exchange, work, acquired)

    def _spawn(
        self,
        exchange: Exchange,
        work: Coroutine[Any, Any, None],
        holds: Lease | Waiter | None = None,
    ) -> None:
        """Run `work` for `exchange` in a task of its client, cancelled if the client leaves
        while the task still waits for a host or a connection. `holds` is the lease or the
        place in the buffer handed to `work`: given back if the task is cancelled, since a
        task cancelled before it ever ran cannot give it back itself. (Once `work` has sent
        its request it never waits again, so a cancelled task never sent with `holds`.)"""
        task = asyncio.create_task(work)
        if exchange.tasks is None:
            exchange.tasks = set()
        exchange.client.tasks.add(task)
        exchange.tasks.add(task)
        tasks = exchange.tasks

        def done(task: asyncio.Task[None]) -> None:
            exchange.client.tasks.discard(task)
            tasks.discard(task)
            if holds is not None and task.cancelled():
                self._give_back(holds)

        task.add_done_callback(done)

    def _give_back(self, acquired: Lease | Waiter | None) -> None:
        """Return what a request that will not be sent holds: its lease or its place in the
        buffer (or the lease the buffer gave it meanwhile). Giving back twice changes nothing."""
        if isinstance(acquired, Lease):
            self.balancer.release(acquired)
        elif (
            acquired is not None
            and not self.balancer.withdraw(acquired)
            and acquired.lease is not None
        ):
            self.balancer.release(acquired.lease)

    # -- a client leaving ------------------------------------------------------------------

    def client_left(self, client: ClientConnection) -> None:
        """Withdraw every request of `client` not yet sent: out of the core's buffer, out of
        connection waits, never sent (a driver that saw its socket drop may have re-sent it
        on another). Requests already written end on their own; their answers are dropped."""
        for exchange in [e for e in self.exchanges if e.client is client and not e.finished]:
            if exchange.request.session:
                if not exchange.sent:
                    self._withdraw(exchange)
                continue  # a statement in flight ends with its session (SessionPin.close)
            for task in list(exchange.tasks or ()):
                task.cancel()  # waits for a host or a connection: nothing of them was sent
            if not exchange.carried():
                self._withdraw(exchange)

    def _withdraw(self, exchange: Exchange) -> None:
        """End an exchange whose client left before it was (re-)sent: no attempt of it is
        sent from now on, whatever it waited for is given back, and it is counted."""
        if exchange.finished:
            return
        exchange.done = True  # nobody to answer
        for task in list(exchange.tasks or ()):
            task.cancel()  # each gives back what it held (see _spawn)
        for attempt in list(exchange.live):
            if not attempt.written:
                self._drop_unsent(attempt)
        self.metrics.withdrawn.inc()
        self._finish(exchange)

    def _drop_unsent(self, attempt: Attempt) -> None:
        """Forget an attempt that was never written; its lease goes back unused."""
        attempt.ended = True
        with contextlib.suppress(ValueError):
            attempt.exchange.live.remove(attempt)
        self.balancer.release(attempt.lease)

    async def _guard(self, exchange: Exchange, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception as error:  # a bug must cost one request, not the client's socket
            log.exception("request from %s failed inside the sidecar", exchange.client.peer)
            self._conclude(exchange, frames.SERVER_ERROR, f"internal error: {error}")

    async def _next_attempt(self, exchange: Exchange, acquired: Lease | Waiter | None) -> None:
        request = exchange.request
        try:
            if acquired is None:
                lease = await self.acquire(
                    len(request.frame),
                    exchange.tried,
                    source=exchange.source,
                    write=not exchange.read_only,
                )
            elif isinstance(acquired, Lease):
                lease = acquired
            else:
                lease = await self._wait(acquired)
        except BalancerClosedError:
            self._conclude(
                exchange,
                frames.SERVER_ERROR_TEMPORARY,
                "the sidecar is shutting down; " + self._retry_advice(exchange),
            )
            return
        except NoHealthyEndpointError as refused:  # all tried, buffer full or waited too long
            self._give_up(exchange, refused)
            return
        await self._attempt(exchange, lease)

    async def _attempt(self, exchange: Exchange, lease: Lease) -> None:
        """Send `exchange` on `lease`, opening or waiting for a pooled connection if needed.

        The wait has bounds of its own (connect_timeout to open one, the buffer's max_wait for
        room on a busy one) and its own error, which says nothing was sent; the request
        timeout starts only once the request is written."""
        settings = self.balancer.settings
        pool = self.backends.pool(lease.endpoint, exchange.request.channel)
        attempt = self._new_attempt(exchange, lease)
        if exchange.client.closed:  # handed a host just as its client left
            self._drop_unsent(attempt)
            if not exchange.carried():
                self._withdraw(exchange)
            return
        try:
            connection = await pool.lease(settings.connect_timeout, settings.buffer.max_wait)
        except ConnectionFailure as error:
            attempt.on_failure(error)
            return
        except asyncio.CancelledError:  # its client left while it waited: never sent
            self._drop_unsent(attempt)
            raise
        if attempt.orphaned or exchange.done:  # answered or re-dispatched while we waited
            self._drop_unsent(attempt)
            return
        self.balancer.sent(lease)
        self._send(attempt, connection)

    def _attempt_ended(self, attempt: Attempt) -> None:
        """Every attempt ends here: finish the exchange, wait for another attempt, or retry."""
        exchange = attempt.exchange
        with contextlib.suppress(ValueError):
            exchange.live.remove(attempt)
        if attempt.orphaned or exchange.finished:
            return  # a hedge that lost or an attempt re-dispatched away: its lease is done
        if exchange.done:
            self._finish(exchange)
            return
        outcome = attempt.outcome
        assert outcome is not None
        exchange.last_error = attempt.error or RuntimeError(outcome.value)
        if attempt.held is not None:
            exchange.held = attempt.held
        if exchange.owner is not None and exchange.owner is not attempt:
            return  # another attempt streams the answer
        if exchange.forwarded:
            self._conclude(
                exchange,
                frames.SERVER_ERROR,
                f"{attempt.endpoint.address} failed after part of the results was sent "
                f"({exchange.last_error}); the results are incomplete",
            )
            return
        if exchange.live:
            return  # a hedge (or the first attempt) still carries the request
        if not may_retry(outcome, exchange.read_only):
            self._answer_unsafe(exchange, attempt.endpoint, outcome, exchange.last_error)
            return
        exchange.tried.append(attempt.endpoint)
        if not exchange.budget.allows_another(outcome, exchange.received()) or (
            outcome.retry_costs_extra and not self.balancer.try_spend_extra()
        ):
            self._give_up(exchange, exchange.last_error)
            return
        log.info(
            "retrying elsewhere after %s on %s: %s",
            outcome.value,
            attempt.endpoint.address,
            attempt.error,
        )
        self.metrics.retries.labels(outcome.value).inc()
        self._arm_deadline(exchange)
        self._continue(exchange)

    def _conclude(self, exchange: Exchange, code: int, message: str) -> None:
        exchange.answer_error(code, message)
        self._finish(exchange)

    async def _serve(self, exchange: Exchange, work: Coroutine[Any, Any, None]) -> None:
        try:
            await self._guard(exchange, work)
        finally:
            self._finish(exchange)

    def _finish(self, exchange: Exchange) -> None:
        if exchange.finished:
            return
        exchange.finished = True
        if exchange.hedge_timer is not None:
            exchange.hedge_timer.cancel()
        if exchange.deadline_timer is not None:
            exchange.deadline_timer.cancel()
        self.exchanges.discard(exchange)
        exchange.client.release_slot(len(exchange.request.frame))
        self.metrics.latency.observe(time.monotonic() - exchange.started)

    # -- hedging and re-dispatch ---------------------------------------------------------

    def _arm_hedge(self, exchange: Exchange) -> None:
        """One loop timer per read: after the hedge delay, maybe a second attempt."""
        if not exchange.read_only or exchange.hedge_timer is not None or exchange.done:
            return
        if not self.balancer.settings.hedge.enabled:
            return
        delay = self.balancer.hedge_delay()
        exchange.hedge_timer = exchange.client.loop.call_later(
            delay, self._hedge_due, exchange, delay
        )

    def _hedge_due(self, exchange: Exchange, waited: float) -> None:
        """The read has no answer frame after the hedge delay: send it to a second host if
        the core says its host is not serving and the budgets allow. Not yet: asked again
        after twice the wait (the core judges a quiet host by its probe, seconds later), at
        most every _HEDGE_RECHECK_MAX seconds."""
        if exchange.finished or exchange.forwarded or len(exchange.live) != 1:
            return
        if exchange.client.closed:
            return  # nobody to answer faster
        first = exchange.live[0]
        if not exchange.budget.allows_resend(exchange.received()):
            return
        pings = self.check_alive is not None
        if not self.balancer.should_hedge(first.lease, pings=pings):
            if self.check_alive is not None and self.balancer.is_quiet(first.lease):
                self.check_alive(first.endpoint)  # hung or busy: its answer tells
            later = min(2 * waited, _HEDGE_RECHECK_MAX)
            exchange.hedge_timer = exchange.client.loop.call_later(
                later, self._hedge_due, exchange, later
            )
            return
        if not self.balancer.try_spend_extra():
            return
        exclude = [first.endpoint, *exchange.tried]
        try:
            lease = self.balancer.acquire(
                len(exchange.request.frame),
                exclude,
                hedge=True,
                source=exchange.source,
                write=False,
            )
        except (NoHealthyEndpointError, BalancerClosedError):
            return
        assert isinstance(lease, Lease)  # a hedge never waits
        exchange.budget.resend()
        self._arm_deadline(exchange)
        log.debug("hedging a read of %s away from %s", exchange.client.peer, first.endpoint)
        self._spawn(exchange, self._guard(exchange, self._attempt(exchange, lease)), lease)

    def on_host_event(self, event: HostEvent) -> None:
        """A host left rotation (ejected or down): reads stranded there that forwarded nothing
        go to another host at once; the old attempt's answer is dropped when it arrives. Only
        within the request's attempt budget (once per read, see AttemptLimit) and the
        extra-request budget, and never a read that ran normally there (a slow query: see
        Balancer.may_resend)."""
        if event.kind is not EventKind.STATE_CHANGED or event.state not in OUT_OF_ROTATION:
            return
        for exchange in list(self.exchanges):
            if not exchange.read_only or exchange.forwarded or exchange.done:
                continue
            if exchange.client.closed:
                continue  # nobody to answer: the attempt there ends on its own
            # An attempt that just ended (its failure is what changed the host's state) is
            # retried by its own end, under the retry rules.
            going = [a for a in exchange.live if not a.ended]
            if not going or any(a.endpoint != event.endpoint for a in going):
                continue  # nothing stranded there, or a hedge elsewhere carries it already
            if not exchange.budget.allows_resend(exchange.received()):
                continue  # re-sent once already, or out of attempts: the attempt there goes on
            if not all(self.balancer.may_resend(a.lease) for a in going):
                continue  # a slow query running there: re-sent, it would run twice
            exclude = [event.endpoint, *exchange.tried]
            try:
                acquired = self.balancer.acquire(
                    len(exchange.request.frame), exclude, source=exchange.source, write=False
                )
            except (NoHealthyEndpointError, BalancerClosedError):
                continue
            if not isinstance(acquired, Lease):  # no other host now: the old attempt goes on
                if not self.balancer.withdraw(acquired) and acquired.lease is not None:
                    self.balancer.release(acquired.lease)
                continue
            if not self.balancer.try_spend_extra():
                self.balancer.release(acquired)
                continue
            for stranded in exchange.live:
                stranded.orphaned = True
            exchange.live.clear()
            exchange.tried.append(event.endpoint)
            exchange.budget.resend()
            self._arm_deadline(exchange)
            self.metrics.redispatched.inc()
            work = self._guard(exchange, self._attempt(exchange, acquired))
            self._spawn(exchange, work, acquired)

    def _arm_deadline(self, exchange: Exchange) -> None:
        """A request re-sent (retried, hedged, re-dispatched) is answered by request_timeout
        from its first send: a new attempt's own timeout would start over, and a caller with
        a 30 s timeout got its 598 after 54.9 s (issue 20). A lone first attempt needs no
        timer: its own timeout is the request's."""
        if exchange.deadline_timer is not None or not exchange.sent_attempts:
            return
        timeout = self.balancer.settings.request_timeout
        delay = max(0.0, exchange.sent_at + timeout - time.monotonic())
        exchange.deadline_timer = exchange.client.loop.call_later(
            delay, self._deadline_due, exchange
        )

    def _deadline_due(self, exchange: Exchange) -> None:
        """request_timeout passed since the first send and nothing reached the client: answer
        598 now. Attempts still waiting for a host or a connection are never sent; those on a
        server end on their own, their answers dropped."""
        if exchange.finished or exchange.done or exchange.forwarded:
            return
        for task in list(exchange.tasks or ()):
            task.cancel()  # each gives back what it held (see _spawn)
        for attempt in list(exchange.live):
            if attempt.written:
                attempt.orphaned = True
            else:
                self._drop_unsent(attempt)
        exchange.live.clear()
        timeout = self.balancer.settings.request_timeout
        where = ", ".join(dict.fromkeys(a.endpoint.address for a in exchange.sent_attempts))
        self._conclude(
            exchange,
            frames.SERVER_TIMEOUT,
            f"no answer within request_timeout={timeout:g}s of the request's first send (sent "
            f"to {where}; {exchange.received()} attempts in all). It was not re-sent further: "
            "a slow query would run once per server (Gremlin Server cannot cancel it), and it "
            "may still be running. Raise request_timeout for slow queries, or make the query "
            "cheaper.",
        )

    # -- answering failures ----------------------------------------------------------------

    @staticmethod
    def _retry_advice(exchange: Exchange) -> str:
        if not exchange.sent:
            return "it was not sent to any server and may be retried"
        if exchange.read_only:
            return "it was sent, but it is read-only and may be retried"
        return "it may or may not have been applied; check before re-running it"

    def _give_up(self, exchange: Exchange, error: BaseException | None) -> None:
        if exchange.held is not None:  # the last overloaded backend's own answer says it best
            exchange.forward(*exchange.held)
            self._finish(exchange)
            return
        if exchange.sent and isinstance(error, BufferTimeoutError):  # its text says "not sent"
            max_wait = self.balancer.settings.buffer.max_wait
            error = RuntimeError(f"no Gremlin Server became healthy within max_wait={max_wait}s")
        elif exchange.sent and isinstance(error, BufferFullError):
            error = RuntimeError("no Gremlin Server is healthy and the wait buffer is full")
        retry = exchange.read_only or not exchange.sent
        self._conclude(
            exchange,
            frames.SERVER_ERROR_TEMPORARY if retry else frames.SERVER_ERROR,
            f"no Gremlin Server could take the request ({error}); " + self._retry_advice(exchange),
        )

    def _answer_unsafe(
        self, exchange: Exchange, endpoint: Endpoint, outcome: Outcome, error: BaseException
    ) -> None:
        if outcome is Outcome.TIMEOUT:
            timeout = self.balancer.settings.request_timeout
            message = (
                f"the request was sent to {endpoint.address}, which gave no answer within "
                f"request_timeout={timeout:g}s ({error}). It was not re-sent elsewhere: a slow "
                "query would run once per server (Gremlin Server cannot cancel it), and it may "
                "still be running there. "
                + (
                    "Raise request_timeout for slow queries, or make the query cheaper."
                    if exchange.read_only
                    else "It may or may not have been applied: check the graph before "
                    "re-running it, or make it idempotent (mergeV/mergeE)."
                )
            )
            self._conclude(exchange, frames.SERVER_TIMEOUT, message)
            return
        self._conclude(
            exchange,
            frames.SERVER_ERROR,
            f"the request was sent to {endpoint.address}, which lost the connection ({error}). "
            "It may write, so it was not retried: it may or may not have been applied. Check "
            "the graph before re-running it, or make it idempotent (mergeV/mergeE).",
        )

    async def _serve_session(self, exchange: Exchange) -> None:
        request = exchange.request
        client = exchange.client
        try:
            pin = await client.session_pin(request.channel, exchange.source)
        except (NoHealthyEndpointError, ConnectionFailure, BalancerClosedError) as error:
            exchange.answer_error(
                frames.SERVER_ERROR_TEMPORARY,
                f"could not open a session connection ({error}); nothing was sent",
            )
            return
        if pin.broken is not None:
            exchange.answer_error(
                frames.SERVER_ERROR,
                f"the session connection to {pin.endpoint.address} was lost ({pin.broken}); "
                "Gremlin Server rolled back uncommitted work. Start a new transaction on a new "
                "connection.",
            )
            return
        if client.closed:
            return  # it left while the session connection was found: withdrawn, not sent
        attempt = Attempt(exchange, pin.lease, self._observe_in_session)
        backend_id, frame = backend_frame(request, self.backends.ids.next)
        try:
            exchange.sent = True
            pin.connection.send(frame, backend_id, attempt)
        except ConnectionFailure as error:
            attempt.on_failure(error)
        assert attempt.result is not None
        outcome = await attempt.result
        if attempt.held is not None:  # 429/596 inside a session: no other host can take it
            exchange.forward(*attempt.held)
            return
        if outcome in _ANSWERED:
            return
        if outcome is Outcome.TIMEOUT:  # a long statement: this request's problem only
            timeout = self.balancer.settings.request_timeout
            exchange.answer_error(
                frames.SERVER_TIMEOUT,
                f"no answer from {pin.endpoint.address} within request_timeout={timeout:g}s "
                f"({attempt.error}). The statement may still be running in the session, and "
                "may or may not have been applied; the session stays open (its next request "
                "runs once this one ends). Raise request_timeout for long statements.",
            )
            return
        pin.broken = attempt.error or RuntimeError(outcome.value)
        pin.connection.close("lost its session")
        exchange.answer_error(
            frames.SERVER_ERROR,
            f"the session connection to {pin.endpoint.address} failed ({pin.broken}); Gremlin "
            "Server rolls back uncommitted work when it loses the connection, and this request "
            "may or may not have been applied. Start a new transaction on a new connection.",
        )

    def _observe_in_session(
        self, lease: Lease, outcome: Outcome, error: BaseException | None
    ) -> None:
        """A statement that outlives request_timeout says nothing about its host: it is not
        reported (a long transaction must not eject the host its session lives on). Nor is one
        ended because its client left (the session closes with it)."""
        if outcome is not Outcome.TIMEOUT and not isinstance(error, ClientLeftError):
            self.balancer.observe(lease, outcome, error)

    # -- waiting for a host --------------------------------------------------------------

    async def acquire(
        self,
        size: int,
        tried: list[Endpoint] | tuple[()],
        *,
        session: bool = False,
        source: str | None = None,
        write: bool = True,
    ) -> Lease:
        """A host of the request's kind (a writer unless `write` is False) from the core,
        waiting in its buffer (FIFO, bounded) while none is healthy."""
        acquired = self.balancer.acquire(size, tried, session=session, source=source, write=write)
        if isinstance(acquired, Lease):
            return acquired
        return await self._wait(acquired)

    async def _wait(self, waiter: Waiter) -> Lease:
        loop = asyncio.get_running_loop()
        released: asyncio.Future[None] = loop.create_future()

        def resolve() -> None:
            if not released.done():
                released.set_result(None)

        def notify() -> None:
            loop.call_soon_threadsafe(resolve)

        waiter.notify = notify
        if waiter.released:
            resolve()
        try:
            async with asyncio.timeout(max(0.0, waiter.deadline - time.monotonic())):
                await released
        except TimeoutError:
            self.balancer.time_out(waiter)
        except asyncio.CancelledError:
            if not self.balancer.withdraw(waiter) and waiter.lease is not None:
                self.balancer.release(waiter.lease)  # released to us but never used
            raise
        if waiter.error is not None:
            raise waiter.error
        assert waiter.lease is not None
        return waiter.lease

    # -- shutdown ------------------------------------------------------------------------

    async def drain(self, grace: float, idle_after: float = 1.0) -> None:
        """Shut down without breaking the application: for `grace` seconds requests on open
        connections are still served (new connections are refused by the caller); a
        connection idle for `idle_after` seconds is closed (1001), one with sessions only at
        the end. Then what is still in flight is answered with a final error and every client
        is closed."""
        self.accepting = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        closing: set[ClientConnection] = set()
        while self.clients and loop.time() < deadline:
            now = time.monotonic()
            for client in list(self.clients):
                if client not in closing and client.idle_for(now) >= idle_after:
                    closing.add(client)
                    client.spawn(
                        client.close(aiohttp.WSCloseCode.GOING_AWAY, "sidecar shutting down")
                    )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(0.1, max(0.0, deadline - loop.time()))):
                    await self._no_clients.wait()
        left = list(self.exchanges)
        if left:
            log.warning("%d requests still in flight after %.1fs; answering them", len(left), grace)
        for exchange in left:
            if exchange.sent:
                exchange.answer_error(
                    frames.SERVER_ERROR,
                    "the sidecar stopped before the backend answered; the request may or may "
                    "not have been applied",
                )
            else:
                exchange.answer_error(
                    frames.SERVER_ERROR_TEMPORARY,
                    "the sidecar stopped before the request was sent; it may be retried",
                )
        clients = list(self.clients)
        for client in clients:
            for task in list(client.tasks):
                task.cancel()
        await asyncio.gather(
            *(c.close(aiohttp.WSCloseCode.GOING_AWAY, "sidecar shutting down") for c in clients),
            return_exceptions=True,
        )
