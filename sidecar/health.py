"""The active health loop: probe the core's targets with a real traversal, report each result.

A host counts as healthy only when it *answers a traversal* (an open port is not enough: a
paused JVM accepts connections and never answers). The answer's status code decides, read from
the frame's header; its result is never decoded, so a type the sidecar does not know (a
provider's custom type, a user's probe script answering a Tree) never fails a probe. Probes
use a connection of their own per host, so a probe never queues behind client traffic and a
stuck probe is simply dropped.

A traversal can still wait on the server itself: Gremlin Server runs every request on its
worker pool (gremlinPool), and a few slow queries can fill it. So a probe whose traversal gets
no answer in time asks the server a WebSocket ping on a fresh connection of its own (answered
by the server's I/O threads, not its workers): a pong says the JVM is up and busy, and the core
keeps the host in rotation, deprioritised, instead of taking it down (issue 20). A paused or
dead server answers no ping.

With `health.status_probe` on, a host whose traversal passed is also asked its status
(`GET /status`, Amazon Neptune's instance status: `gremlinlb.status`, the in-process client's
too); an answer other than "healthy" fails the probe with an error naming the status probe.

Each traversal source clients use (configured, or learned from requests' aliases) is probed
too, after the default one passed: a host answering that it does not have a source is skipped
for requests naming that source only (`core.sources`), and stays in rotation for the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Callable

from gremlinlb.sidecar import frames
from gremlinlb.sidecar.backend import Backends
from gremlinlb.sidecar.backend_connection import BackendConnection
from gremlinlb.sidecar.frames import GRAPHBINARY_CHANNEL, GRAPHBINARY_VERSION, ResponseHeader
from gremlinlb.sidecar.neptune_retry import status_message

from gremlinlb import ping, sigv4, status
from gremlinlb.core import (
    CHECK_INTERVAL,
    Balancer,
    ConnectionFailure,
    Endpoint,
    EventKind,
    HostEvent,
    UpgradeBusyError,
)
from gremlinlb.core.liveness import BUSY_NOTE, hung_error, ping_budget
from gremlinlb.core.recycling import past_max_age
from gremlinlb.core.sources import INVALID_REQUEST_ARGUMENTS, says_source_unknown
from gremlinlb.tasks import cancel_and_wait

log = logging.getLogger(__name__)

# Probes in flight at once: a push of thousands of new hosts is probed in waves, not at once.
MAX_PROBES = 64
# Probes started per second, at most (after a first wave of MAX_PROBES). A probe of a host that
# refuses costs the event loop about 0.3 ms of CPU, and a long list of dead hosts would have
# them probed back to back: 20,000 listed cut live throughput to 20% (issue 20). At this rate
# probing takes a few percent of a core whatever the list; the price is that a dead host of a
# long list is probed less often than unhealthy_interval (every hosts / MAX_PROBE_RATE s).
# Hosts in rotation are probed first, then joining ones, then down ones (Balancer.probe_due).
MAX_PROBE_RATE = 100.0


def _text(value: str, qualified: bool = True) -> bytes:
    """A GraphBinary String: type code and null flag (fully qualified) or bare."""
    encoded = value.encode("utf-8")
    return (b"\x03\x00" if qualified else b"") + struct.pack(">i", len(encoded)) + encoded


#: `__.V().limit(1).count()` as GraphBinary Bytecode: 3 steps (name, arguments), no sources.
_PROBE_BYTECODE = (
    b"\x15\x00\x00\x00\x00\x03"
    + _text("V", False)
    + b"\x00\x00\x00\x00"
    + _text("limit", False)
    + b"\x00\x00\x00\x01\x01\x00\x00\x00\x00\x01"  # one argument: Int 1
    + _text("count", False)
    + b"\x00\x00\x00\x00"
    + b"\x00\x00\x00\x00"
)


def probe_frame(request_id: bytes, script: str | None, traversal_source: str) -> bytes:
    """g.V().limit(1).count() as bytecode (or `script` as an eval), byte for byte what
    gremlinpython writes (tests/unit/test_sidecar_probe_frame.py): it reaches the graph's
    storage, and its answer is a plain number whatever the provider's types (the server must be
    able to write it; only its status is read here). Written here, not by gremlinpython: the
    sidecar would load gremlinpython (2.4 MiB of every pod's RSS) for this frame alone."""
    mime = GRAPHBINARY_CHANNEL.mime.encode("ascii")
    op, processor = ("eval", "") if script is not None else ("bytecode", "traversal")
    gremlin = _text(script) if script is not None else _PROBE_BYTECODE
    aliases = b"\x0a\x00\x00\x00\x00\x01" + _text("g") + _text(traversal_source)
    return b"".join(
        (
            bytes([len(mime)]),
            mime,
            bytes([GRAPHBINARY_VERSION]),
            request_id,
            _text(op, False),
            _text(processor, False),
            b"\x00\x00\x00\x02",  # two arguments
            _text("gremlin"),
            gremlin,
            _text("aliases"),
            aliases,
        )
    )


class _ProbeSink:
    """Collects the answer to one probe."""

    def __init__(self) -> None:
        self.written = False
        self.last_activity = time.monotonic()
        self.done: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()

    def on_frame(self, frame: bytes | str, header: ResponseHeader) -> None:
        self.last_activity = time.monotonic()
        if header.final and not self.done.done():
            message = ""
            if header.code == INVALID_REQUEST_ARGUMENTS and isinstance(frame, bytes):
                # An unknown traversal source says so here.
                message = status_message(frame, GRAPHBINARY_CHANNEL) or ""
            self.done.set_result((header.code, message))

    def on_failure(self, error: ConnectionFailure) -> None:
        if not self.done.done():
            self.done.set_exception(error)

    def on_oversize(self, size: int, limit: int) -> None:
        if not self.done.done():
            self.done.set_exception(ValueError(f"a {size}-byte answer, over {limit} bytes"))


class HealthLoop:
    def __init__(
        self,
        balancer: Balancer,
        backends: Backends,
        traversal_source: str = "g",
        traversal_sources: tuple[str, ...] = (),
    ):
        self._balancer = balancer
        self._backends = backends
        self._traversal_source = traversal_source
        balancer.sources.configure(traversal_source, traversal_sources)
        self._connections: dict[Endpoint, BackendConnection] = {}
        self._probes: set[asyncio.Task[bool]] = set()
        self.max_probe_rate = MAX_PROBE_RATE
        self._pinging: dict[Endpoint, asyncio.Task[None]] = {}
        #: Told each failed probe's error (the sidecar counts them by check: its metrics).
        self.on_probe_failed: Callable[[str], None] = lambda _: None
        self._tokens = float(MAX_PROBES)  # probes that may start now (a token bucket)
        self._refilled = time.monotonic()

    async def run(self) -> None:
        """Each tick: let the core eject outliers, then start the probes it says are due
        (joining hosts at once: none takes traffic before its first probe passed)."""
        while True:
            try:
                self._balancer.check_outliers()
                now = time.monotonic()
                self._tokens = min(
                    float(MAX_PROBES), self._tokens + (now - self._refilled) * self.max_probe_rate
                )
                self._refilled = now
                free = min(MAX_PROBES - len(self._probes), int(self._tokens))
                for endpoint in self._balancer.probe_due(limit=max(0, free)):
                    self._tokens -= 1
                    task = asyncio.create_task(self.probe(endpoint))
                    self._probes.add(task)
                    task.add_done_callback(self._probes.discard)
            except Exception:
                log.exception("health round failed")
            full = len(self._probes) >= MAX_PROBES or self._tokens < 1
            await asyncio.sleep(
                CHECK_INTERVAL if full else min(self._balancer.next_probe_in(), CHECK_INTERVAL)
            )

    async def probe(self, endpoint: Endpoint) -> bool:
        """One probe of `endpoint`, reported to the core; True if it passed."""
        error, timed_out = await self._first_probe(endpoint)
        alive = False
        if error is None:  # the other sources before the verdict: a joining host enters
            for source in self._balancer.sources.watched():  # rotation with its marks known
                if (await self._probe_source(endpoint, source))[0] is not None:
                    break  # the host itself failed: its next probe tells
            if self._balancer.settings.health.status_probe:
                error = await self._status(endpoint)
        else:
            self.forget(endpoint)  # its socket may be dead or stuck: start clean next time
            if error.startswith(UpgradeBusyError.__name__):  # 429 on the upgrade: busy
                alive = True
            elif timed_out and await self.answers_ping(endpoint):
                alive = True
                error += BUSY_NOTE
        self._balancer.record_probe(endpoint, ok=error is None, error=error, alive=alive)
        if error is not None and not alive:
            self.on_probe_failed(error)
        return error is None

    async def _first_probe(self, endpoint: Endpoint) -> tuple[str | None, bool]:
        """The default source's probe. Of a host found stuck, a ping goes along: no pong
        within PING_BUDGET fails the probe at once (the server is hung, whatever the probe
        timeout), so its reads are re-sent within about stuck_floor + PING_BUDGET."""
        traversal = self._probe_source(endpoint, self._traversal_source)
        if not self._balancer.is_deprioritised(endpoint):
            return await traversal
        probing = asyncio.create_task(traversal)
        pinging = asyncio.create_task(self.answers_ping(endpoint))
        try:
            done, _ = await asyncio.wait({probing, pinging}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the sidecar stops: neither outlives the probe
            probing.cancel()
            pinging.cancel()
            raise
        if probing in done:
            pinging.cancel()  # not waited for: its socket's close must not delay the verdict
            return probing.result()
        if not pinging.result():
            await cancel_and_wait(probing)
            return hung_error(ping_budget(self._balancer.settings)), False
        return await probing

    async def _probe_source(self, endpoint: Endpoint, source: str) -> tuple[str | None, bool]:
        """Probe `source` on `endpoint` and record whether it serves it; the error that makes
        the host fail (None when it answered, even that it lacks the source), and whether the
        traversal timed out (rather than failed)."""
        settings = self._balancer.settings.health
        try:
            async with asyncio.timeout(settings.timeout):
                code, message = await self._ask(endpoint, settings.probe_script, source)
        except ConnectionFailure as failure:  # before TimeoutError: ResponseTimeoutError is one
            return f"{type(failure).__name__}: {failure}", False
        except TimeoutError:
            return f"no answer within {settings.timeout}s", True
        except Exception as failure:
            return f"{type(failure).__name__}: {failure}", False
        if code in (frames.SUCCESS, frames.NO_CONTENT):
            self._balancer.sources.record(endpoint, source, served=True)
            return None, False
        if says_source_unknown(code, message):
            self._balancer.sources.record(endpoint, source, served=False)
            return None, False  # the host answered: it lacks this source, not its health
        return f"the probe traversal on {source!r} was answered with status {code}", False

    def check_alive(self, endpoint: Endpoint) -> None:
        """Ask a quiet host (Balancer.is_quiet) a ping now, once at a time per host, and
        report the answer (Balancer.record_ping): a hung server is taken down within
        PING_BUDGET, a busy one keeps its slow queries running once."""
        if endpoint in self._pinging:
            return
        task = asyncio.create_task(self._check_alive(endpoint))
        self._pinging[endpoint] = task
        task.add_done_callback(lambda _: self._pinging.pop(endpoint, None))

    async def _check_alive(self, endpoint: Endpoint) -> None:
        answered = await self.answers_ping(endpoint)
        self._balancer.record_ping(endpoint, answered)

    async def answers_ping(self, endpoint: Endpoint) -> bool:
        """Whether the server answers a WebSocket ping on a fresh connection within
        PING_BUDGET (at most the probe timeout): busy or hung (`gremlinlb.core.liveness`,
        the same ping as the in-process client's, `gremlinlb.ping`)."""
        ssl_context = self._backends.options.ssl_context if endpoint.scheme == "wss" else None
        try:  # a fresh connection: signed fresh when SigV4 is on
            signing = self._balancer.settings.sigv4
            headers = await sigv4.upgrade_headers_off_loop(signing, endpoint)
        except sigv4.SigV4Error:
            return False
        return await ping.answers_ping(
            self._backends.http,
            endpoint.url,
            ping_budget(self._balancer.settings),
            ssl_context=ssl_context,
            headers=headers,
        )

    async def _status(self, endpoint: Endpoint) -> str | None:
        """The status probe (Neptune's GET /status; `gremlinlb.status`, as the client's)."""
        ssl_context = self._backends.options.ssl_context if endpoint.scheme == "wss" else None
        return await status.status_problem(
            self._backends.http, endpoint, self._balancer.settings, ssl_context=ssl_context
        )

    async def _ask(self, endpoint: Endpoint, script: str | None, source: str) -> tuple[int, str]:
        connection = self._connections.get(endpoint)
        if connection is not None and past_max_age(
            self._balancer.settings, connection.opened_at, time.monotonic()
        ):
            self.forget(endpoint)  # between probes nothing is in flight on it
            connection = None
        if connection is None or connection.closed:
            connection = await self._backends.dedicated(
                endpoint, GRAPHBINARY_CHANNEL, self._balancer.settings.connect_timeout
            )
            self._connections[endpoint] = connection
        request_id = self._backends.ids.next()
        sink = _ProbeSink()
        connection.send(probe_frame(request_id, script, source), request_id, sink)
        return await sink.done

    def forget(self, endpoint: Endpoint) -> None:
        connection = self._connections.pop(endpoint, None)
        if connection is not None:
            with contextlib.suppress(RuntimeError):
                connection.close("probe failed")

    def on_host_event(self, event: HostEvent) -> None:
        """Subscribe this to the core: a removed host's probe connection is closed."""
        if event.kind is EventKind.REMOVED:
            self.forget(event.endpoint)

    def close(self) -> None:
        for task in [*self._probes, *self._pinging.values()]:
            task.cancel()
        for endpoint in list(self._connections):
            self.forget(endpoint)
