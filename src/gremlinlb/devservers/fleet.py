"""A set of Gremlin Servers on consecutive loopback ports, started in parallel.

Start-up is dominated by JVM class loading, so all JVMs are launched first and only then awaited:
three servers take little longer than one. Servers can be added at runtime (a scale-out) and
removed again; ``reset()`` heals the fleet between tests.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import overload

from gremlinlb.devservers.errors import DevServerError
from gremlinlb.devservers.fetch import ServerRuntime
from gremlinlb.devservers.server import (
    GremlinServerProcess,
    ensure_port_free,
    ensure_runtime,
    find_free_port,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_PORT = 8181
DEFAULT_START_TIMEOUT = 120.0


class Fleet(Sequence[GremlinServerProcess]):
    """N Gremlin Servers on 127.0.0.1:base_port.. base_port+N-1; a context manager.

    A sequence of its servers, so tests can write ``fleet[1].kill()`` and ``for s in fleet``.
    """

    def __init__(
        self,
        count: int = 3,
        *,
        base_port: int = DEFAULT_BASE_PORT,
        run_dir: Path | None = None,
        runtime: ServerRuntime | None = None,
        start_timeout: float = DEFAULT_START_TIMEOUT,
    ) -> None:
        if count < 0:
            raise ValueError("count must be >= 0")
        self.size = count
        self.base_port = base_port
        self.start_timeout = start_timeout
        self._owns_run_dir = run_dir is None
        self.run_dir = (
            run_dir if run_dir is not None else Path(tempfile.mkdtemp(prefix="gremlinlb-fleet-"))
        )
        self._runtime = runtime
        self.servers: list[GremlinServerProcess] = []

    # -- access --------------------------------------------------------------------------------

    @property
    def runtime(self) -> ServerRuntime:
        if self._runtime is None:
            self._runtime = ensure_runtime()
        return self._runtime

    @property
    def addresses(self) -> list[str]:
        """``host:port`` of every server, in port order of creation."""
        return [server.address for server in self.servers]

    def __len__(self) -> int:
        return len(self.servers)

    def __iter__(self) -> Iterator[GremlinServerProcess]:
        return iter(list(self.servers))

    @overload
    def __getitem__(self, index: int) -> GremlinServerProcess: ...

    @overload
    def __getitem__(self, index: slice) -> list[GremlinServerProcess]: ...

    def __getitem__(self, index: int | slice) -> GremlinServerProcess | list[GremlinServerProcess]:
        return self.servers[index]

    def server_at(self, address: str) -> GremlinServerProcess:
        for server in self.servers:
            if server.address == address:
                return server
        raise KeyError(address)

    def _new_server(self, port: int) -> GremlinServerProcess:
        return GremlinServerProcess(port, self.run_dir / str(port), runtime=self.runtime)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start ``count`` servers in parallel and return when every one answers a traversal."""
        if self.servers:
            raise DevServerError("fleet already started")
        ports = [self.base_port + i for i in range(self.size)]
        for port in ports:  # check them all before launching anything: one clear error
            ensure_port_free(port)
        runtime = self.runtime  # fetch jars / build the class archive before the clock starts
        log.debug("starting %d servers from %s", self.size, runtime.home)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        try:
            for port in ports:
                server = self._new_server(port)
                self.servers.append(server)
                server.start()
            self._wait_all(self.servers, started + self.start_timeout)
        except BaseException:
            self.stop()
            raise
        log.info(
            "%d Gremlin Servers answer after %.1f s: %s",
            len(self.servers),
            time.monotonic() - started,
            " ".join(self.addresses),
        )

    @staticmethod
    def _wait_all(servers: list[GremlinServerProcess], deadline: float) -> None:
        for server in servers:
            server.wait_ready(max(0.1, deadline - time.monotonic()))

    def add(self) -> GremlinServerProcess:
        """Start one more server on the next free port after the highest one and wait for it."""
        highest = max((s.port for s in self.servers), default=self.base_port - 1)
        port = find_free_port(highest + 1, exclude=[s.port for s in self.servers])
        server = self._new_server(port)
        self.servers.append(server)
        try:
            server.start()
            server.wait_ready(self.start_timeout)
        except BaseException:
            self.servers.remove(server)
            server.stop()
            raise
        log.info("added Gremlin Server %s", server.address)
        return server

    def remove(self, server: GremlinServerProcess, *, graceful: bool = True) -> None:
        """Stop ``server`` and forget it (a scale-in); ``graceful=False`` kills it at once."""
        self.servers.remove(server)
        if graceful:
            server.stop()
        else:
            server.kill()

    def stop(self) -> None:
        """Stop every server in parallel (SIGTERM all, then wait) and forget them."""
        servers, self.servers = self.servers, []
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait_stopped()
        if self._owns_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def reset(self, count: int | None = None, timeout: float = DEFAULT_START_TIMEOUT) -> None:
        """Bring the fleet back to ``count`` (default: the original count) healthy, empty servers.

        The fleet ends up as exactly the servers on base_port .. base_port+count-1: paused ones
        are resumed, dead or removed ones (re)started in parallel, others (e.g. added by a
        scale-out test) killed; then every graph is emptied. One test's faults never leak into
        the next.
        """
        count = self.size if count is None else count
        home_ports = range(self.base_port, self.base_port + count)
        for server in [s for s in self.servers if s.port not in home_ports]:
            # Killed, not stopped: a graceful stop waits out Netty's 2 s quiet period, and an
            # in-memory test graph has nothing to save.
            self.remove(server, graceful=False)
        for server in self.servers:
            if server.is_paused():
                server.resume()
        dead = [server for server in self.servers if not server.is_running()]
        taken = {server.port for server in self.servers}
        for port in home_ports:
            if port not in taken:  # a test removed this server: bring it back
                server = self._new_server(port)
                self.servers.append(server)
                dead.append(server)
        self.servers.sort(key=lambda s: s.port)
        for server in dead:
            log.info("(re)starting Gremlin Server %s", server.address)
            server.start()
        deadline = time.monotonic() + timeout
        self._wait_all(dead, deadline)
        for server in self.servers:
            if not server.answers(timeout=5.0):
                log.info("Gremlin Server %s does not answer; restarting it", server.address)
                server.kill()
                server.start()
                server.wait_ready(max(1.0, deadline - time.monotonic()))
            server.clear_graph()

    def __enter__(self) -> Fleet:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
