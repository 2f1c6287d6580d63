"""A TCP proxy in front of one local Gremlin Server that injects gray failures (loopback only).

A hung server (SIGSTOP) and a dead one are easy to make with :class:`GremlinServerProcess`; the
failures that are hard to make are the ones where the server still looks alive:

- **slow answers** (``answer_delay``): every byte the server sends is passed on ``answer_delay``
  seconds after it arrived, in order and unchanged. Requests go through at once, so the server
  keeps working at full speed and passes every health probe; its answers (probes included) just
  arrive late, as from an overloaded host or a slow link.
- **black hole** (``black_hole``): connections are accepted and whatever the client sends is read
  and dropped; the upstream is never contacted, so a WebSocket upgrade never completes.
- **idle close** (``idle_close``): a connection with no bytes in either direction for that many
  seconds is closed on both sides, as NAT tables and cloud load balancers do.
- **stall** (``stalled``): nothing passes in either direction, on open connections and new ones
  alike, as in a network partition: calls neither fail nor return. When the stall ends, every
  connection that tried to carry bytes during it is closed without relaying them (TCP would have
  given up on it); connections that stayed quiet carry on.

Settings may be changed while the proxy runs (from any thread): ``answer_delay`` applies to bytes
arriving from then on, ``black_hole`` to connections accepted from then on, ``idle_close`` to every
open connection, ``stalled`` at once. ``await proxy.start()`` runs it on the caller's event loop;
``with FaultProxy(...) as proxy`` (or ``start_in_thread()``) on a thread of its own, for
synchronous code such as the tests and the benchmark.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
import time
from dataclasses import dataclass
from types import TracebackType

from gremlinlb.core.errors import GremlinLBError
from gremlinlb.tasks import cancel_and_wait

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
CHUNK = 65536


class FaultProxyError(GremlinLBError, ValueError):
    """The proxy was given something it cannot use (a non-loopback upstream, a bad setting)."""


def parse_loopback_address(address: str) -> tuple[str, int]:
    """``host:port`` -> (host, port), refusing anything that is not a loopback address.

    The proxy is a test tool: it must never relay traffic to another machine.
    """
    host, sep, port_text = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise FaultProxyError(
            f"upstream {address!r} is not host:port; give the Gremlin Server's address, "
            "e.g. 127.0.0.1:8182"
        )
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise FaultProxyError(
                f"upstream host {host!r} is not a loopback address; the fault proxy only relays "
                "to servers on this machine (127.0.0.0/8, ::1 or localhost)"
            )
    return host, int(port_text)


@dataclass
class ProxyCounters:
    """What went through the proxy since it started (read them from any thread)."""

    accepted: int = 0  # client connections accepted
    black_holed: int = 0  # of which were swallowed by the black hole
    idle_closed: int = 0  # connections closed for being idle
    upload_closed: int = 0  # connections closed after relaying close_after_upload bytes
    bytes_up: int = 0  # client -> server
    bytes_down: int = 0  # server -> client


class FaultProxy:
    """An asyncio TCP proxy on 127.0.0.1 in front of ``upstream`` (``host:port``, loopback)."""

    def __init__(
        self,
        upstream: str,
        *,
        port: int = 0,
        answer_delay: float = 0.0,
        black_hole: bool = False,
        idle_close: float | None = None,
        close_after_upload: int | None = None,
    ) -> None:
        """`close_after_upload`: once a client sent this many bytes on a connection, relay
        them and close it (the server received the request; its answer never comes back)."""
        self.upstream = upstream
        self._upstream_host, self._upstream_port = parse_loopback_address(upstream)
        self._port = port
        self.answer_delay = answer_delay
        self.black_hole = black_hole
        self.idle_close = idle_close
        self.close_after_upload = close_after_upload
        self._stalled = False
        self._flowing: asyncio.Event | None = None  # set while not stalled (on the proxy's loop)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.counters = ProxyCounters()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._thread: tuple[asyncio.AbstractEventLoop, threading.Thread] | None = None

    @property
    def answer_delay(self) -> float:
        return self._answer_delay

    @answer_delay.setter
    def answer_delay(self, seconds: float) -> None:
        if not seconds >= 0:
            raise FaultProxyError(f"answer_delay must be >= 0 seconds, got {seconds}")
        self._answer_delay = float(seconds)

    @property
    def stalled(self) -> bool:
        """While True nothing is relayed; see the module's docstring."""
        return self._stalled

    @stalled.setter
    def stalled(self, value: bool) -> None:
        self._stalled = bool(value)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._sync_flow)

    def _sync_flow(self) -> None:
        if self._flowing is not None:
            if self._stalled:
                self._flowing.clear()
            else:
                self._flowing.set()

    @property
    def idle_close(self) -> float | None:
        return self._idle_close

    @idle_close.setter
    def idle_close(self, seconds: float | None) -> None:
        if seconds is not None and not seconds > 0:
            raise FaultProxyError(f"idle_close must be > 0 seconds or None, got {seconds}")
        self._idle_close = None if seconds is None else float(seconds)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the fault proxy is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``: give this to the balancer instead of the server's address."""
        return f"{LOOPBACK}:{self.port}"

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._flowing = asyncio.Event()
        self._sync_flow()
        self._server = await asyncio.start_server(self._accept, LOOPBACK, self._port)

    async def close(self) -> None:
        """Stop listening and drop every open connection."""
        if self._server is not None:
            self._server.close()
        await cancel_and_wait(*self._connections)
        if self._server is not None:
            await self._server.wait_closed()

    # -- on a thread of its own, for synchronous callers ----------------------------------------

    def start_in_thread(self) -> FaultProxy:
        """Run the proxy on its own event loop thread (``with FaultProxy(...) as proxy`` does)."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=loop.run_forever, name=f"fault-proxy {self.upstream}", daemon=True
        )
        thread.start()
        self._thread = (loop, thread)
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(10)
        except BaseException:  # e.g. the port is taken: leave no loop thread behind
            self.stop_thread()
            raise
        return self

    def stop_thread(self) -> None:
        if self._thread is None:
            return
        loop, thread = self._thread
        self._thread = None
        try:
            asyncio.run_coroutine_threadsafe(self.close(), loop).result(10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start_in_thread()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop_thread()

    # -- connections -----------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self.counters.accepted += 1
        try:
            if self.black_hole:
                self.counters.black_holed += 1
                await self._swallow(reader)
            elif await self._held():
                pass  # accepted during a stall: closed without relaying anything
            else:
                await self._relay(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, OSError) as error:
            log.debug("fault proxy connection ended: %s", error)
        except asyncio.CancelledError:
            # only close() cancels a connection; ending quietly keeps asyncio's server from
            # logging every connection dropped at shutdown as an error
            pass
        finally:
            self._connections.discard(task)
            writer.close()

    async def _held(self) -> bool:
        """Wait out a stall; True if there was one (the caller then drops the connection)."""
        if self._flowing is None or self._flowing.is_set():
            return False
        await self._flowing.wait()  # until the stall ends, or close() cancels the connection
        return True

    async def _swallow(self, reader: asyncio.StreamReader) -> None:
        while await reader.read(CHUNK):
            pass

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(
                self._upstream_host, self._upstream_port
            )
        except OSError as error:  # the server is down: the client sees the connection drop
            log.debug("fault proxy: upstream %s refused: %s", self.upstream, error)
            return
        last_activity = [time.monotonic()]
        pending: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        cut = asyncio.Event()
        tasks = [
            asyncio.create_task(self._client_to_server(client_r, server_w, last_activity, cut)),
            asyncio.create_task(self._server_to_queue(server_r, pending, last_activity)),
            asyncio.create_task(self._queue_to_client(pending, client_w)),
        ]
        watchdog = asyncio.create_task(self._watch_idle(last_activity))
        cutter = asyncio.create_task(cut.wait())
        try:
            # the connection ends when the answers are delivered (the server or the client closed)
            # or when the watchdog finds it idle, or once close_after_upload bytes went up
            await asyncio.wait([tasks[2], watchdog, cutter], return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(*tasks, watchdog, cutter)
            server_w.close()

    async def _client_to_server(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        last_activity: list[float],
        cut: asyncio.Event,
    ) -> None:
        uploaded = 0
        while data := await reader.read(CHUNK):
            if await self._held():
                cut.set()
                return
            last_activity[0] = time.monotonic()
            self.counters.bytes_up += len(data)
            writer.write(data)
            await writer.drain()
            uploaded += len(data)
            limit = self.close_after_upload
            if limit is not None and uploaded >= limit:
                self.counters.upload_closed += 1
                cut.set()
                return
        # the client is done: closing the server side makes the server end the connection too,
        # and that end reaches the client after the answers still being delayed
        writer.close()

    async def _server_to_queue(
        self,
        reader: asyncio.StreamReader,
        pending: asyncio.Queue[tuple[float, bytes] | None],
        last_activity: list[float],
    ) -> None:
        try:
            while data := await reader.read(CHUNK):
                now = time.monotonic()
                last_activity[0] = now
                pending.put_nowait((now + self._answer_delay, data))
        finally:
            pending.put_nowait(None)

    async def _queue_to_client(
        self,
        pending: asyncio.Queue[tuple[float, bytes] | None],
        writer: asyncio.StreamWriter,
    ) -> None:
        while (item := await pending.get()) is not None:
            if await self._held():
                return
            due, data = item
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self.counters.bytes_down += len(data)
            writer.write(data)
            await writer.drain()

    async def _watch_idle(self, last_activity: list[float]) -> None:
        while True:
            limit = self._idle_close
            if limit is None:
                await asyncio.sleep(0.5)  # the setting may be switched on later
                continue
            idle = time.monotonic() - last_activity[0]
            if idle >= limit:
                self.counters.idle_closed += 1
                return
            await asyncio.sleep(min(0.5, limit - idle))
