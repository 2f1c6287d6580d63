"""The client-facing Gremlin endpoint: every request is balanced on its own.

A thin adapter around the core. Per request it reads the header (frames), asks the core for a
host (waiting in the core's buffer when none is healthy), sends the request with a backend id
of its own, streams every answer frame back with the client's id restored, and retries per the
core's rules, but never once a frame was forwarded: the client would see results twice.

`Proxy` wires the units: client connections (clients.py) hand it checked requests; it keeps
one `Exchange` per request (exchange.py) with an `Attempt` per try on a host, has reads
hedged and re-dispatched (resend.py), pins sessions (sessions.py), writes its own answers
(answers.py), and ends every exchange through `Proxy.end`.
Requests are driven by callbacks; a task is spent only where one must wait (the buffer, a
connection being opened, a retry, a hedge, a session).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import aiohttp
from aiohttp import web
from gremlinlb.sidecar import answers, frames
from gremlinlb.sidecar.answers import AnswerTooLargeError as AnswerTooLargeError
from gremlinlb.sidecar.answers import ClientLeftError as ClientLeftError
from gremlinlb.sidecar.answers import StatusError as StatusError
from gremlinlb.sidecar.backend import Backends
from gremlinlb.sidecar.backend_connection import BackendConnection
from gremlinlb.sidecar.bigframes import backend_frame, off_loop, prepare_first_attempt
from gremlinlb.sidecar.clients import ClientConnection
from gremlinlb.sidecar.exchange import Attempt, Exchange, ExchangeState, may_become
from gremlinlb.sidecar.frames import Request
from gremlinlb.sidecar.inbound import MeteredWebSocketResponse
from gremlinlb.sidecar.memory import MemoryBudget
from gremlinlb.sidecar.metrics import SidecarMetrics
from gremlinlb.sidecar.neptune_retry import NeptuneRetrier
from gremlinlb.sidecar.options import ProxyOptions as ProxyOptions  # moved to options.py
from gremlinlb.sidecar.resend import Resender
from gremlinlb.sidecar.sessions import serve_statement

from gremlinlb.core import (
    Balancer,
    BalancerClosedError,
    ConnectionFailure,
    Endpoint,
    HostEvent,
    Lease,
    NoHealthyEndpointError,
    Waiter,
    frame_may_write,
    may_retry,
)

log = logging.getLogger(__name__)


def _forget(attempt: Attempt) -> None:
    """Take `attempt` off its exchange's live list if it is there (a test, not
    contextlib.suppress: no context manager object per request)."""
    live = attempt.exchange.live
    if attempt in live:
        live.remove(attempt)


def _read_only(request: Request) -> bool:
    """Whether the core's write check shows `request` cannot write (only bytecode can)."""
    return request.op == "bytecode" and not frame_may_write(request.body, request.channel.mime)


def _parse_and_check(data: bytes | str, next_id: Callable[[], bytes]) -> tuple[Request, bool]:
    """Parse a large frame, check it and encode its first backend frame, on a worker thread
    (see clients.OFF_LOOP_FRAME_BYTES and bigframes.py)."""
    request = frames.parse_request(data)
    return prepare_first_attempt(request, next_id), _read_only(request)


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
        self.resender = Resender(self)
        # Bound once rather than once per attempt (each attempt keeps both).
        self._report = balancer.finish
        self._on_attempt_end = self._attempt_ended
        # When a write meets a reader: read the cluster at once (NeptuneTopology.refresh_now),
        # or wait for a pushed list (failover.py); None: the answer goes back (neptune_retry.py).
        self.refresh_topology: Callable[[], Awaitable[bool]] | None = None
        self.neptune = NeptuneRetrier(self)
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
        """The sidecar stopped: the checking thread ends once idle, hedge checks are dropped."""
        self.checker.shutdown(wait=False, cancel_futures=True)
        self.resender.hedges.close()

    def resume_paused(self) -> None:
        for client in list(self.paused):
            client.resume()

    async def check_off_loop(self, data: bytes | str) -> tuple[Request, bool]:
        """A large frame parsed, write-checked and prepared for its first backend attempt on
        the checker thread: the request and whether it is read-only."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.checker, off_loop, _parse_and_check, data, self.backends.ids.next
        )

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
            self._spawn(exchange, self._serve(exchange, serve_statement(self, exchange)))
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

    def dispatch_failed(self, request: Request, client: ClientConnection, error: Exception) -> None:
        """`dispatch` raised (a bug): fail the exchange of `request`, or, if it was never
        made, give back the client's slot it was counted in."""
        for exchange in list(self.exchanges):
            if exchange.client is client and exchange.request is request:
                self.fail(exchange, *answers.internal(error))
                return
        client.release_slot(len(request.frame))

    def _new_attempt(self, exchange: Exchange, lease: Lease) -> Attempt:
        attempt = Attempt(exchange, lease, self._report, self._on_attempt_end)
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
        self.resender.arm_hedge(exchange)

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
        for exchange in [e for e in self.exchanges if e.client is client and not e.ended]:
            if exchange.request.session:
                if not exchange.sent:
                    self._withdraw(exchange)
                continue  # a statement in flight ends with its session (SessionPin.close)
            for task in list(exchange.tasks or ()):
                task.cancel()  # waits for a host or a connection: nothing of them was sent
            if not exchange.carried():
                self._withdraw(exchange)

    def _withdraw(self, exchange: Exchange) -> None:
        """Its client left before it was (re-)sent: no attempt of it is sent from now on, and
        it ends WITHDRAWN (`end` gives back whatever it waited for, and counts it)."""
        exchange.withdraw()
        self.end(exchange, ExchangeState.WITHDRAWN)

    def _drop_unsent(self, attempt: Attempt) -> None:
        """Forget an attempt that was never written; its lease goes back unused."""
        attempt.ended = True
        _forget(attempt)
        self.balancer.release(attempt.lease)

    async def _guard(self, exchange: Exchange, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception as error:  # a bug must cost one request, not the client's socket
            log.exception("request from %s failed inside the sidecar", exchange.client.peer)
            self.fail(exchange, *answers.internal(error))

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
            self.fail(exchange, *answers.shutting_down(exchange.sent, exchange.read_only))
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
        if attempt.orphaned or exchange.replied:  # answered or re-dispatched meanwhile
            self._drop_unsent(attempt)
            return
        self.balancer.sent(lease)
        self._send(attempt, connection)

    def _attempt_ended(self, attempt: Attempt) -> None:
        """Every attempt (but a session's) ends here, its outcome already reported to the
        core: end the exchange it replied to, wait for another attempt, fail, or retry."""
        exchange = attempt.exchange
        _forget(attempt)
        if attempt.orphaned or exchange.ended:
            return  # a hedge that lost or an attempt re-dispatched away: its lease is done
        if exchange.replied:
            self.end(exchange, exchange.settle())
            return
        outcome = attempt.outcome
        assert outcome is not None
        exchange.last_error = attempt.error or RuntimeError(outcome.value)
        if attempt.held is not None:
            exchange.held = attempt.held
        if exchange.owner is not None and exchange.owner is not attempt:
            return  # another attempt streams the answer
        if exchange.forwarded:
            self.fail(exchange, *answers.incomplete(attempt.endpoint, exchange.last_error))
            return
        if exchange.live:
            return  # a hedge (or the first attempt) still carries the request
        if self.neptune.handles(attempt):
            return  # Neptune's own error: retried on the writer, re-routed, or given back
        if not may_retry(outcome, exchange.read_only):
            timeout = self.balancer.settings.request_timeout
            answer = answers.not_retried(
                attempt.endpoint, outcome, exchange.last_error, exchange.read_only, timeout
            )
            self.fail(exchange, *answer)
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
        self.resender.arm_deadline(exchange)
        self._continue(exchange)

    def fail(self, exchange: Exchange, code: int, message: str) -> None:
        """Reply with the sidecar's own error (answers.py) and end: FAILED, or ABANDONED if
        its client left (or already replied: ended by that reply)."""
        exchange.answer_error(code, message)
        self.end(exchange, exchange.settle())

    async def _serve(self, exchange: Exchange, work: Coroutine[Any, Any, None]) -> None:
        """Run a session statement (`work`) and end its exchange by what its client got."""
        try:
            await self._guard(exchange, work)
        finally:
            self.end(exchange, exchange.settle())

    # -- the end of a request --------------------------------------------------------------

    def end(self, exchange: Exchange, how: ExchangeState) -> None:
        """The one way an exchange ends, `how` one of the final ExchangeStates (see
        exchange.py); a second call changes nothing. Does the bookkeeping once: no attempt
        of it is sent any more (its waits for a host or a connection are cancelled, but the
        caller's own, and leases of attempts never written go back to the core; attempts on
        a server end on their own and report to the core themselves), its deadline stops (its
        hedge check, queued, finds it ended), its
        client's slot and bytes are freed, its latency is observed, a withdrawal counted."""
        if exchange.ended:
            return
        if not may_become(exchange.state, how):  # a bug; the bookkeeping is done anyway
            log.error("request of %s ended %s from %s", exchange.client.peer, how, exchange.state)
        exchange.final = how
        if exchange.reply is None:
            exchange.reply = how  # nothing of its attempts reaches the client from now on
        if exchange.tasks:
            current = asyncio.current_task()
            for task in list(exchange.tasks):
                if task is not current:
                    task.cancel()  # each gives back what it held (see _spawn)
        if exchange.live:  # usually empty by now: no copy for nothing
            for attempt in list(exchange.live):
                if not attempt.written:
                    self._drop_unsent(attempt)
        if exchange.deadline_timer is not None:
            exchange.deadline_timer.cancel()
        self.exchanges.discard(exchange)
        exchange.client.release_slot(len(exchange.request.frame))
        self.metrics.observe_latency(time.monotonic() - exchange.started)
        if how is ExchangeState.WITHDRAWN:
            self.metrics.withdrawn.inc()

    def on_host_event(self, event: HostEvent) -> None:
        """A host left rotation: its stranded reads are re-dispatched (see Resender)."""
        self.resender.on_host_event(event)

    def send_again(self, exchange: Exchange, lease: Lease) -> None:
        """Send a read once more on `lease` (a hedge or a re-dispatch), in a task: it may wait
        for a connection; a bug costs this request only."""
        self._spawn(exchange, self._guard(exchange, self._attempt(exchange, lease)), lease)

    # -- answering failures ----------------------------------------------------------------

    def _give_up(self, exchange: Exchange, error: BaseException | None) -> None:
        if exchange.held is not None:  # the last overloaded backend's own answer says it best
            exchange.forward(*exchange.held)
            self.end(exchange, exchange.settle())
            return
        max_wait = self.balancer.settings.buffer.max_wait
        answer = answers.no_host(error, exchange.sent, exchange.read_only, max_wait)
        self.fail(exchange, *answer)

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
            exchange.answer_error(*answers.stopped(exchange.sent))
        clients = list(self.clients)
        for client in clients:
            for task in list(client.tasks):
                task.cancel()
        await asyncio.gather(
            *(c.close(aiohttp.WSCloseCode.GOING_AWAY, "sidecar shutting down") for c in clients),
            return_exceptions=True,
        )
