"""The active health loop: probe the core's targets with a real traversal, report each result.

A host counts as healthy only when it *answers a traversal* (an open port is not enough: a
paused JVM accepts connections and never answers). Probes use a connection of their own per
host, so a probe never queues behind client traffic and a stuck probe is simply dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

from gremlin_python.driver.request import RequestMessage
from gremlin_python.driver.serializer import GraphBinarySerializersV1
from gremlin_python.process.graph_traversal import __
from gremlinlb.sidecar import frames
from gremlinlb.sidecar.backend import BackendConnection, Backends
from gremlinlb.sidecar.frames import GRAPHBINARY_CHANNEL, ResponseHeader

from gremlinlb.core import (
    CHECK_INTERVAL,
    Balancer,
    ConnectionFailure,
    Endpoint,
    EventKind,
    HostEvent,
)
from gremlinlb.core.recycling import past_max_age

log = logging.getLogger(__name__)

# Probes in flight at once: a push of thousands of new hosts is probed in waves, not at once.
MAX_PROBES = 64


def probe_frame(request_id: bytes, script: str | None, traversal_source: str) -> bytes:
    """g.V().limit(1) as bytecode (or `script` as an eval), written by gremlinpython itself."""
    if script is not None:
        message = RequestMessage(
            "", "eval", {"gremlin": script, "aliases": {"g": traversal_source}}
        )
    else:
        message = RequestMessage(
            "traversal",
            "bytecode",
            {"gremlin": __.V().limit(1).bytecode, "aliases": {"g": traversal_source}},
        )
    frame: bytes = GraphBinarySerializersV1().serialize_message(
        str(uuid.UUID(bytes=request_id)), message
    )
    return frame


class _ProbeSink:
    """Collects the answer to one probe."""

    def __init__(self) -> None:
        self.written = False
        self.last_activity = time.monotonic()
        self.done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def on_frame(self, frame: bytes | str, header: ResponseHeader) -> None:
        self.last_activity = time.monotonic()
        if header.final and not self.done.done():
            self.done.set_result(header.code)

    def on_failure(self, error: ConnectionFailure) -> None:
        if not self.done.done():
            self.done.set_exception(error)

    def on_oversize(self, size: int, limit: int) -> None:
        if not self.done.done():
            self.done.set_exception(ValueError(f"a {size}-byte answer, over {limit} bytes"))


class HealthLoop:
    def __init__(self, balancer: Balancer, backends: Backends, traversal_source: str = "g"):
        self._balancer = balancer
        self._backends = backends
        self._traversal_source = traversal_source
        self._connections: dict[Endpoint, BackendConnection] = {}
        self._probes: set[asyncio.Task[bool]] = set()

    async def run(self) -> None:
        """Each tick: let the core eject outliers, then start the probes it says are due
        (joining hosts at once: none takes traffic before its first probe passed)."""
        while True:
            try:
                self._balancer.check_outliers()
                free = MAX_PROBES - len(self._probes)
                for endpoint in self._balancer.probe_due(limit=max(0, free)):
                    task = asyncio.create_task(self.probe(endpoint))
                    self._probes.add(task)
                    task.add_done_callback(self._probes.discard)
            except Exception:
                log.exception("health round failed")
            full = len(self._probes) >= MAX_PROBES
            await asyncio.sleep(
                CHECK_INTERVAL if full else min(self._balancer.next_probe_in(), CHECK_INTERVAL)
            )

    async def probe(self, endpoint: Endpoint) -> bool:
        """One probe of `endpoint`, reported to the core; True if it passed."""
        settings = self._balancer.settings.health
        error: str | None = None
        try:
            async with asyncio.timeout(settings.timeout):
                code = await self._ask(endpoint, settings.probe_script)
            if code not in (frames.SUCCESS, frames.NO_CONTENT):
                error = f"the probe traversal was answered with status {code}"
        except TimeoutError:
            error = f"no answer within {settings.timeout}s"
        except Exception as failure:
            error = f"{type(failure).__name__}: {failure}"
        if error is not None:
            self.forget(endpoint)  # its socket may be dead or stuck: start clean next time
        self._balancer.record_probe(endpoint, ok=error is None, error=error)
        return error is None

    async def _ask(self, endpoint: Endpoint, script: str | None) -> int:
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
        await connection.send(
            probe_frame(request_id, script, self._traversal_source), request_id, sink
        )
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
        for task in list(self._probes):
            task.cancel()
        for endpoint in list(self._connections):
            self.forget(endpoint)
