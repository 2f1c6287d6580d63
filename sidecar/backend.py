"""The connections to each backend host: one pool per host and channel, least loaded first,
opened on demand, retired when the host leaves rotation or a connection grows old.

The connections themselves (one multiplexed WebSocket each) are in backend_connection.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import aiohttp
from gremlinlb.sidecar.backend_connection import BackendConnection
from gremlinlb.sidecar.frames import Channel
from gremlinlb.sidecar.idle_pools import close_idle_pools
from gremlinlb.sidecar.ids import IdSource
from gremlinlb.sidecar.options import BackendOptions

from gremlinlb.core import (
    BalancerSettings,
    ConnectionFailure,
    Endpoint,
    EventKind,
    HostEvent,
    HostState,
    NotSentError,
    Outcome,
    ResponseTimeoutError,
)
from gremlinlb.core.recycling import heartbeat, past_max_age

log = logging.getLogger(__name__)


# States that take a host out of rotation: its pooled connections are retired, and the
# proxy moves reads stranded there elsewhere.
OUT_OF_ROTATION = (HostState.DOWN, HostState.EJECTED)


class PoolBusyError(ConnectionFailure):
    """Every connection to the host is at its in-flight cap: not sent there, try elsewhere."""

    outcome = Outcome.OVERLOADED


class ConnectionWaitTimeoutError(PoolBusyError, TimeoutError):
    """No connection to the host had room for the request within its wait (the buffer's
    max_wait): nothing was sent, so another host may take it, and the host is not blamed (a
    busy host is not a slow one: its request timeouts are counted from each send). Also a
    TimeoutError, so callers catch either."""


def _consume_error(task: asyncio.Task[BackendConnection]) -> None:
    """A connection opened ahead of need may fail with nobody awaiting it; the request that
    next needs the host finds out itself."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("opening a connection failed: %s", task.exception())


class BackendPool:
    """The connections to one host for one channel: least loaded first, opened on demand."""

    def __init__(
        self,
        endpoint: Endpoint,
        channel: Channel,
        options: BackendOptions,
        http: aiohttp.ClientSession,
        ids: IdSource,
        settings: Callable[[], BalancerSettings] = BalancerSettings,
    ) -> None:
        self.endpoint = endpoint
        self.channel = channel
        self._options = options
        self._http = http
        self._ids = ids
        self._settings = settings
        self._connections: list[BackendConnection] = []
        self._opening: asyncio.Task[BackendConnection] | None = None
        self._room: list[asyncio.Future[None]] = []
        self.closed = False
        self.last_used = time.monotonic()  # the last request handed a connection here

    @property
    def connections(self) -> list[BackendConnection]:
        return list(self._connections)

    @property
    def busy(self) -> bool:
        """A request is in flight on it or waits for room, or a connection is being opened."""
        return (
            self._opening is not None
            or bool(self._room)
            or any(c.in_flight for c in self._connections)
        )

    async def lease(self, connect_timeout: float, wait_timeout: float) -> BackendConnection:
        """A connection with room for one more request.

        Opens connections up to connections_per_host (one at a time, each within
        `connect_timeout`), spreading load across them; when all are full, waits up to
        `wait_timeout` for room, then raises ConnectionWaitTimeoutError. Nothing is sent
        meanwhile: the request's timeout starts only once it is written (see `send`).
        """
        self.last_used = now = time.monotonic()
        deadline = now + wait_timeout
        while True:
            if self.closed:
                raise NotSentError(f"connections to {self.endpoint.address} are closed")
            best = self._least_loaded()
            can_grow = len(self._connections) < self._options.connections_per_host
            if best is not None and (best.in_flight == 0 or not can_grow):
                return best
            if can_grow and self._opening is None:
                self._opening = asyncio.create_task(self._open(connect_timeout))
                self._opening.add_done_callback(_consume_error)
            if best is not None:
                return best  # a busy but usable one now beats waiting for the new one
            if self._opening is not None:
                await asyncio.shield(self._opening)
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConnectionWaitTimeoutError(
                    f"all {len(self._connections)} connections to {self.endpoint.address} carried "
                    f"{self._options.max_in_flight_per_connection} requests for {wait_timeout:g}s "
                    "(max_wait); nothing was sent there"
                )
            room: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._room.append(room)
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await room
            except asyncio.CancelledError:  # its client left: room given to it goes to the next
                if room.done() and not room.cancelled():
                    self._wake_one(None)
                raise
            finally:
                with contextlib.suppress(ValueError):
                    self._room.remove(room)

    def ready(self, connect_timeout: float) -> BackendConnection | None:
        """A connection that can take a request right now, without waiting; None if there is
        none (the caller then waits in `lease`). Grows the pool in the background when every
        connection is busy, so load spreads over connections_per_host sockets."""
        self.last_used = time.monotonic()
        best = self._least_loaded()
        can_grow = len(self._connections) < self._options.connections_per_host
        if can_grow and self._opening is None and (best is None or best.in_flight > 0):
            self._opening = asyncio.create_task(self._open(connect_timeout))
            self._opening.add_done_callback(_consume_error)
        return best

    def _least_loaded(self) -> BackendConnection | None:
        best: BackendConnection | None = None
        for connection in self._connections:
            if (
                connection.usable
                and connection.has_room()
                and (best is None or connection.in_flight < best.in_flight)
            ):
                best = connection
        return best

    async def _open(self, connect_timeout: float) -> BackendConnection:
        connection = BackendConnection(
            self.endpoint,
            self.channel,
            self._options,
            self._http,
            self._ids,
            on_route_done=self._wake_one,
            on_closed=self._forget,
            heartbeat=heartbeat(self._settings()),
            signing=self._settings().sigv4,
        )
        try:
            await connection.open(connect_timeout)
        finally:
            self._opening = None
        if self.closed:
            connection.close("pool closed")
            raise NotSentError(f"connections to {self.endpoint.address} are closed")
        self._connections.append(connection)
        log.debug("opened %r", connection)
        self._wake_all()
        return connection

    def _wake_one(self, _connection: BackendConnection | None) -> None:
        while self._room:
            room = self._room.pop(0)
            if not room.done():
                room.set_result(None)
                return

    def _wake_all(self) -> None:
        rooms, self._room = self._room, []
        for room in rooms:
            if not room.done():
                room.set_result(None)

    def _forget(self, connection: BackendConnection) -> None:
        with contextlib.suppress(ValueError):
            self._connections.remove(connection)
        self._wake_all()

    def recycle(self, connection: BackendConnection, connect_timeout: float) -> None:
        """Drain `connection` (past its maximum age) and open its replacement now, so the
        next request does not wait for the handshake."""
        connection.retire()
        with contextlib.suppress(ValueError):
            self._connections.remove(connection)
        if not self.closed and self._opening is None:
            self._opening = asyncio.create_task(self._open(connect_timeout))
            self._opening.add_done_callback(_consume_error)

    def retire(self) -> None:
        """New requests get new connections; the current ones finish what they carry."""
        for connection in list(self._connections):
            connection.retire()
            with contextlib.suppress(ValueError):
                self._connections.remove(connection)

    def close(self) -> None:
        self.closed = True
        if self._opening is not None:
            self._opening.cancel()
        for connection in list(self._connections):
            connection.close("pool closed")
        self._connections.clear()
        self._wake_all()


class Backends:
    """Every pool and dedicated connection of the sidecar, kept in step with host events."""

    def __init__(
        self,
        options: BackendOptions,
        http: aiohttp.ClientSession,
        settings: Callable[[], BalancerSettings] = BalancerSettings,
    ) -> None:
        self.options = options
        self._http = http
        self._settings = settings
        self.ids = IdSource()
        self._pools: dict[tuple[Endpoint, Channel], BackendPool] = {}
        self._dedicated: set[BackendConnection] = set()
        self._retired: set[BackendConnection] = set()
        self.next_due = 0.0  # when expire_overdue has work next (monotonic seconds)

    @property
    def http(self) -> aiohttp.ClientSession:
        """The session every backend connection is opened with (the probes' ping uses it)."""
        return self._http

    def pool(self, endpoint: Endpoint, channel: Channel) -> BackendPool:
        key = (endpoint, channel)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = BackendPool(
                endpoint, channel, self.options, self._http, self.ids, self._settings
            )
        return pool

    async def dedicated(
        self, endpoint: Endpoint, channel: Channel, connect_timeout: float
    ) -> BackendConnection:
        """A connection of its own (a session, a probe), closed by its owner."""
        connection = BackendConnection(
            endpoint,
            channel,
            self.options,
            self._http,
            self.ids,
            on_closed=self._dedicated.discard,
            heartbeat=heartbeat(self._settings()),
            signing=self._settings().sigv4,
        )
        await connection.open(connect_timeout)
        self._dedicated.add(connection)
        return connection

    def connections(self) -> list[BackendConnection]:
        every = [c for pool in self._pools.values() for c in pool.connections]
        return every + list(self._dedicated) + [c for c in self._retired if not c.closed]

    def connection_counts(self) -> dict[Endpoint, int]:
        counts: dict[Endpoint, int] = {}
        for connection in self.connections():
            counts[connection.endpoint] = counts.get(connection.endpoint, 0) + 1
        return counts

    def on_host_event(self, event: HostEvent) -> None:
        """A host that went down, was ejected or removed gets fresh connections next time: a
        recovered host is never failed by a socket that died with its old process."""
        if event.kind is EventKind.REMOVED:
            for key in [k for k in self._pools if k[0] == event.endpoint]:
                self._pools.pop(key).close()
        elif event.kind is EventKind.STATE_CHANGED and event.state in OUT_OF_ROTATION:
            for (endpoint, _), pool in self._pools.items():
                if endpoint == event.endpoint:
                    self._retired.update(pool.connections)
                    pool.retire()
        self._retired = {c for c in self._retired if not c.closed}

    def expire_overdue(self, timeout: float, now: float | None = None) -> int:
        """Fail requests with no frame for `timeout` seconds (TIMEOUT); returns how many."""
        now = time.monotonic() if now is None else now
        expired = 0
        self.next_due = now + timeout  # the earliest a request left here can be overdue
        for connection in self.connections():
            for request_id, sink in connection.routes():
                due = sink.last_activity + timeout
                if due > now:
                    self.next_due = min(self.next_due, due)
                else:
                    connection.expire(
                        request_id,
                        ResponseTimeoutError(
                            f"no answer from {connection.endpoint.address} within {timeout}s"
                        ),
                    )
                    expired += 1
        return expired

    def recycle_aged(self, now: float | None = None) -> int:
        """Drain and replace pooled connections past `max_connection_age`; returns how many.

        Only pooled ones: a session's connection holds the session and ends with it, and a
        probe's is renewed by the health loop."""
        settings = self._settings()
        now = time.monotonic() if now is None else now
        recycled = 0
        for pool in list(self._pools.values()):
            for connection in pool.connections:
                if connection.usable and past_max_age(settings, connection.opened_at, now):
                    self._retired.add(connection)
                    pool.recycle(connection, settings.connect_timeout)
                    recycled += 1
        if recycled:
            self._retired = {c for c in self._retired if not c.closed}
        return recycled

    async def sweep_forever(self, request_timeout: Callable[[], float]) -> None:
        while True:
            limit = request_timeout()
            # Until the first request falls due (its caller waits for its 598 no longer than
            # request_timeout), at most every 0.5 s (requests sent meanwhile fall due later).
            period = min(0.5, max(0.05, limit / 10))
            await asyncio.sleep(max(0.01, min(period, self.next_due - time.monotonic())))
            try:
                self.expire_overdue(limit)
                self.recycle_aged()
                close_idle_pools(self._pools, self.options.mime_pool_idle)
            except Exception:
                log.exception("expiring overdue requests or recycling connections failed")

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        for connection in list(self._dedicated) + list(self._retired):
            connection.close("sidecar stopping")
        self._dedicated.clear()
        self._retired.clear()
