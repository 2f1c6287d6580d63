"""pytest fixtures that provide real Gremlin Servers (a pytest plugin, loaded by tests/conftest.py).

Three JVMs are started once per session (``gremlin_fleet``); the function-scoped ``fleet`` heals
and empties them before each test, so a test that kills or pauses a server never breaks the next
one. Tests that need a server of their own use ``extra_server`` or ``gremlin_server_factory``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from gremlinlb.devservers import (
    Fleet,
    GremlinServerProcess,
    ServerRuntime,
    ensure_runtime,
    find_free_port,
    port_is_free,
)
from gremlinlb.devservers.faults import FaultProxy
from tests.helpers import name_servers

#: First port tried for the session fleet; far from the 8181 default of `dev-servers up`.
FLEET_BASE_PORT = int(os.environ.get("GREMLINLB_TEST_BASE_PORT", "18181"))
FLEET_SIZE = 3
#: Per-test extra servers are searched for from here upwards.
EXTRA_BASE_PORT = FLEET_BASE_PORT + 100


def free_port_block(start: int, count: int, *, step: int = 10, attempts: int = 20) -> int:
    """First base port >= start with ``count`` consecutive free ports (parallel runs coexist)."""
    for base in range(start, start + step * attempts, step):
        if all(port_is_free(port) for port in range(base, base + count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports between {start} and {base + count}")


@pytest.fixture(scope="session")
def gremlin_runtime() -> ServerRuntime:
    """The cached Gremlin Server jars (fetched with Maven on first use)."""
    return ensure_runtime()


@pytest.fixture(scope="session")
def gremlin_fleet(
    tmp_path_factory: pytest.TempPathFactory, gremlin_runtime: ServerRuntime
) -> Iterator[Fleet]:
    """Three servers for the whole session, started in parallel. Prefer ``fleet`` in tests."""
    base_port = free_port_block(FLEET_BASE_PORT, FLEET_SIZE)
    fleet = Fleet(
        FLEET_SIZE,
        base_port=base_port,
        run_dir=tmp_path_factory.mktemp("gremlin-fleet"),
        runtime=gremlin_runtime,
    )
    fleet.start()
    try:
        yield fleet
    finally:
        fleet.stop()


@pytest.fixture
def fleet(gremlin_fleet: Fleet) -> Fleet:
    """The session fleet, guaranteed healthy at test start: every server running, resumed and
    answering, servers added by earlier tests removed, every graph empty."""
    gremlin_fleet.reset()
    return gremlin_fleet


@pytest.fixture
def servers(fleet: Fleet) -> list[GremlinServerProcess]:
    """The fleet's servers, each holding a `server` vertex named after its address, so every
    answer says which server ran it. Specs that want them unnamed define their own."""
    named = list(fleet)
    name_servers(named)
    return named


@pytest.fixture
def gremlin_server_factory(
    tmp_path: Path, gremlin_runtime: ServerRuntime
) -> Iterator[Callable[..., GremlinServerProcess]]:
    """Call it to start (and wait for) a server of the test's own; all are stopped afterwards.

    ``factory()`` picks a free port from EXTRA_BASE_PORT upwards; ``factory(port=...)`` uses one;
    ``factory(extra_sources=("g2",))`` binds more traversal sources next to ``g``.
    """
    started: list[GremlinServerProcess] = []

    def start(port: int | None = None, extra_sources: Sequence[str] = ()) -> GremlinServerProcess:
        if port is None:
            port = find_free_port(EXTRA_BASE_PORT, exclude=[s.port for s in started])
        server = GremlinServerProcess(
            port, tmp_path / f"server-{port}", runtime=gremlin_runtime, extra_sources=extra_sources
        )
        started.append(server)
        server.start()
        server.wait_ready()
        return server

    try:
        yield start
    finally:
        for server in started:  # killed, not stopped: graceful stops take 2 s (Netty quiet period)
            server.kill()


@pytest.fixture
def extra_server(
    gremlin_server_factory: Callable[..., GremlinServerProcess],
) -> GremlinServerProcess:
    """One more running server, outside the fleet, stopped after the test."""
    return gremlin_server_factory()


@pytest.fixture
def idle_closing_proxy(fleet: Sequence[GremlinServerProcess]) -> Iterator[FaultProxy]:
    """The first server behind a proxy that closes connections idle for 3 s, as an ALB does
    (keepalive pings, at least 1 s apart, come well within it)."""
    with FaultProxy(fleet[0].address, idle_close=3.0) as proxy:
        yield proxy


@pytest.fixture
def counting_proxy(fleet: Sequence[GremlinServerProcess]) -> Iterator[FaultProxy]:
    """The first server behind a pass-through proxy that counts the connections it accepts."""
    with FaultProxy(fleet[0].address) as proxy:
        yield proxy
