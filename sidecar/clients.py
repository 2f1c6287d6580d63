"""One client WebSocket: reading its frames, writing its answers, and its leaving.

A client's frames are read one at a time (so its requests keep their order), checked, and
handed to the proxy; answers are queued for it and written a few frames per system call.
Every byte held for the client (answers queued, request frames in flight, frames aiohttp
holds before they are received) counts against the proxy's memory budget: a client that
holds too much is not read (backpressure), one that does not read is cut off, and one whose
unfinished frames would take the sidecar past its budget is refused (see sidecar.memory).

However a client leaves (a close frame, a FIN or reset, a frame cut short, a failed write, a
cut-off, a refusal), `leave` runs once and the proxy withdraws its requests not yet sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from gremlinlb.sidecar import frames
from gremlinlb.sidecar.answers import PREFIX
from gremlinlb.sidecar.bigframes import FrameAssembly, off_loop
from gremlinlb.sidecar.frames import Channel, MalformedFrameError, Spliced
from gremlinlb.sidecar.inbound import InboundMeter, MeteredWebSocketResponse
from gremlinlb.sidecar.memory import release_free_memory
from gremlinlb.sidecar.sessions import SessionPin, open_pin
from gremlinlb.sidecar.wsout import BATCH_FRAMES, FrameOutput

if TYPE_CHECKING:
    from gremlinlb.sidecar.proxy import Proxy

log = logging.getLogger(__name__)

_CLOSE_REASON_BYTES = 120  # a WebSocket close reason must fit a 125-byte control frame
# Bytes handed to a client's socket per system call when much is queued: large enough that
# small answers of a loop turn leave together, small enough that a client that stops reading
# leaves little beyond its socket's high-water mark uncounted.
_WRITE_SLICE = 64 * 1024
# Module constants: a tuple of enum members written inline is built anew on every frame.
_DATA = (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT)
_CLOSED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)
# Seconds between checks that a client whose reader is held back is still there.
_DEPARTURE_CHECK = 0.25
# Frames larger than this are parsed and write-checked on a worker thread, so that one client's
# large request (the check walks every value: about 40 ms per MB) does not hold up everyone's;
# at or below it (almost every request) they are checked in place, which costs less than the
# hop (a few hundred microseconds at most).
OFF_LOOP_FRAME_BYTES = 64 * 1024


class ClientConnection:
    """One client WebSocket: reads requests, writes answers through a queue of its own.

    Every byte held for the client (answers queued, request frames in flight) is counted here
    and in the proxy's memory budget; see gremlinlb.sidecar.memory for the bounds.

    How a client goes, each a flag of its own: `closed` (it left, or the sidecar is closing
    it: nothing more is read for it and its unsent requests are withdrawn, once, by `leave`);
    cut off (`cut_off`: it did not read its answers, its queue is dropped); refused
    (`refuse_input`: its unfinished frames would take the sidecar past its budget, 1013);
    gone (its reader ended: nothing more is queued for it)."""

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
        self.closed = False  # left or being closed: see `leave`
        # Bytes of its frames aiohttp holds before they are received (see sidecar.inbound).
        self._meter = meter
        self._refused = False  # closed for its unfinished frames (see `refuse_input`)
        self.pin: SessionPin | None = None
        self._transport = transport
        self._pin_lock = asyncio.Lock()
        self._outbound: deque[bytes | str | Spliced] = deque()
        self.queued_bytes = 0  # answers queued or being written
        self._request_bytes = 0  # request frames in flight
        self.in_flight = 0
        self.last_active = time.monotonic()
        self._cut_off = False  # closed for not reading its answers (see `cut_off`)
        self._gone = False  # its reader ended: nothing more is queued for it
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
                if message.type in _DATA:
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
                request, read_only = await proxy.check_off_loop(data)
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
            proxy.dispatch_failed(request, self, error)
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

    def send(self, frame: bytes | str | Spliced) -> None:
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
                batch: list[bytes | str | Spliced] = []
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
        """The backend connection this client's sessions live on, opened by the first."""
        async with self._pin_lock:
            if self.pin is None:
                self.pin = await open_pin(self.proxy, self, channel, source)
            return self.pin
