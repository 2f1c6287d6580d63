"""The official Go, Java and JavaScript drivers through the sidecar: many requests at once on one
connection, transactions, a server killed under load, roles.

Each spec runs once per driver (and per serializer where it is about the wire format): the three
programs in tests/drivers/ share one command line and output (tests/driver_support.py). Each
holds a single connection that carries every concurrent request. gremlin-go speaks GraphBinary
only; the Java and JavaScript drivers also GraphSON v3.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from gremlinlb.sidecar.testing import SidecarThread

from gremlinlb.devservers import GremlinServerProcess
from tests.driver_support import (
    DRIVERS,
    Driver,
    DriverProcess,
    assert_even_spread,
    client_connections,
    count_on_each,
    requests_per_host,
    run_killed_server_load,
    running_sidecar,
)
from tests.fleet_fixtures import free_port_block
from tests.roles_support import assert_reads_even, role_endpoints

pytestmark = pytest.mark.integration

COUNT = 200
SCRIPTS = COUNT // 4
NAMES = 30

#: Every driver with every serializer it speaks: for specs about what goes over the wire.
EACH_SERIALIZER = [pytest.param(d, s, id=f"{d.name}-{s}") for d in DRIVERS for s in d.serializers]
#: Every driver with its default serializer.
EACH_DRIVER = [pytest.param(d, d.serializers[0], id=d.name) for d in DRIVERS]

Launcher = Callable[..., DriverProcess]


@pytest.fixture
def sidecar(servers: Sequence[GremlinServerProcess]) -> Iterator[SidecarThread]:
    # No hedging: the spread specs count attempts per host, and a loaded machine makes slow
    # reads that a hedge would send twice (hedging has its own specs).
    with running_sidecar(servers, hedge=False) as running:
        yield running


@pytest.fixture
def launch(tmp_path: Path, driver: Driver, serializer: str) -> Iterator[Launcher]:
    """Starts the driver's program against a sidecar: `launch(sidecar, mode, count)`."""
    started: list[DriverProcess] = []

    def start(sidecar: SidecarThread, mode: str, count: int = COUNT) -> DriverProcess:
        log = tmp_path / f"{driver.name}-{mode}-{len(started)}.log"
        process = driver.start(sidecar, serializer, mode, count, log)
        started.append(process)
        return process

    yield start
    for process in started:
        process.__exit__(None, None, None)


@pytest.mark.parametrize(("driver", "serializer"), EACH_SERIALIZER)
def test_driver_gets_every_answer_to_concurrent_requests_on_one_connection(
    launch: Launcher, sidecar: SidecarThread, servers: Sequence[GremlinServerProcess]
) -> None:
    with launch(sidecar, "multiplex") as program:
        result = program.json(timeout=120)
        connections = client_connections(sidecar)  # the program holds its connection open here
        program.send("done")
        assert program.wait(30) == 0, program.stderr()
    assert connections == 1
    assert result["values"] == list(range(COUNT))
    assert result["scripts"] == [1000 + i for i in range(SCRIPTS)]
    assert set(result["names"]) == {s.address for s in servers}


@pytest.mark.parametrize(("driver", "serializer"), EACH_DRIVER)
def test_driver_concurrent_requests_are_spread_over_all_servers(
    launch: Launcher, sidecar: SidecarThread
) -> None:
    with launch(sidecar, "multiplex") as program:
        program.json(timeout=120)
        program.send("done")
        assert program.wait(30) == 0, program.stderr()
    assert_even_spread(requests_per_host(sidecar), COUNT + SCRIPTS + NAMES)


@pytest.mark.parametrize(("driver", "serializer"), EACH_SERIALIZER)
def test_driver_committed_transaction_lands_on_exactly_one_server(
    launch: Launcher,
    sidecar: SidecarThread,
    servers: Sequence[GremlinServerProcess],
    driver: Driver,
) -> None:
    with launch(sidecar, "commit") as program:
        result = program.json(timeout=120)
        assert program.wait(30) == 0, program.stderr()
    assert result["inside"] == 1
    assert sorted(count_on_each(servers, driver.name).values()) == [0, 0, 1]


@pytest.mark.parametrize(("driver", "serializer"), EACH_DRIVER)
def test_driver_rolled_back_transaction_lands_nowhere(
    launch: Launcher,
    sidecar: SidecarThread,
    servers: Sequence[GremlinServerProcess],
    driver: Driver,
) -> None:
    with launch(sidecar, "rollback") as program:
        result = program.json(timeout=120)
        assert program.wait(30) == 0, program.stderr()
    assert result["inside"] == 1
    assert set(count_on_each(servers, f"{driver.name}_rolled_back").values()) == {0}


@pytest.mark.parametrize(("driver", "serializer"), EACH_DRIVER)
def test_driver_killed_server_mid_run_fails_no_read_only_request(
    launch: Launcher, servers: Sequence[GremlinServerProcess]
) -> None:
    victim = servers[1]
    with running_sidecar(servers, fall=1) as sidecar, launch(sidecar, "load") as program:
        summary = run_killed_server_load(program, sidecar, victim)
    names, mark = summary["names"], summary["mark"]
    assert summary["errors"] == []
    assert victim.address in names[:mark]
    assert len(names) >= mark + 100
    assert set(names[mark:]) == {servers[0].address, servers[2].address}


@pytest.mark.parametrize(("driver", "serializer"), EACH_DRIVER)
def test_driver_reads_go_to_the_readers_and_scripts_and_transactions_to_the_writer(
    launch: Launcher, servers: Sequence[GremlinServerProcess], driver: Driver
) -> None:
    with running_sidecar(servers, endpoints=role_endpoints(servers), hedge=False) as sidecar:
        with launch(sidecar, "multiplex") as program:
            result = program.json(timeout=120)
            program.send("done")
            assert program.wait(30) == 0, program.stderr()
        with launch(sidecar, "commit") as program:
            committed = program.json(timeout=120)
            assert program.wait(30) == 0, program.stderr()
        per_host = requests_per_host(sidecar)
    writer, *readers = servers
    assert_reads_even(Counter(result["names"]), readers)
    # The injects and names are reads; the scripts may write (a script is opaque to the sidecar).
    assert sum(per_host[r.address] for r in readers) == COUNT + NAMES
    assert per_host[writer.address] >= SCRIPTS
    assert committed["inside"] == 1
    assert count_on_each(servers, driver.name) == {s.address: int(s is writer) for s in servers}


@pytest.mark.parametrize(("driver", "serializer"), EACH_DRIVER)
def test_driver_reads_go_to_the_writer_while_no_reader_is_up(
    launch: Launcher, servers: Sequence[GremlinServerProcess]
) -> None:
    writer = servers[0]
    # Two readers whose ports nobody listens on: down from the start.
    base = free_port_block(19281, 2)
    absent = [f"127.0.0.1:{port}?role=reader" for port in (base, base + 1)]
    endpoints = [f"{writer.address}?role=writer", *absent]
    with (
        running_sidecar(servers, endpoints=endpoints, hedge=False) as sidecar,
        launch(sidecar, "multiplex", 40) as program,
    ):
        result = program.json(timeout=120)
        program.send("done")
        assert program.wait(30) == 0, program.stderr()
    assert Counter(result["names"]) == {writer.address: NAMES}
    assert result["values"] == list(range(40))


# -- JavaScript only: its program alone has a `roles` mode (nested writes, a session) ----------

JAVASCRIPT = next(d for d in DRIVERS if d.name == "js")


@pytest.mark.parametrize(
    ("driver", "serializer"), [pytest.param(JAVASCRIPT, "graphbinary", id="js")]
)
def test_javascript_driver_nested_writes_transactions_and_sessions_go_to_the_writer(
    launch: Launcher, servers: Sequence[GremlinServerProcess]
) -> None:
    with (
        running_sidecar(servers, endpoints=role_endpoints(servers), hedge=False) as sidecar,
        launch(sidecar, "roles") as program,
    ):
        result = program.json(timeout=120)
        assert program.wait(30) == 0, program.stderr()
    writer, *readers = servers
    assert_reads_even(Counter(result["names"]), readers)
    assert (result["inside"], result["session"]) == (writer.address, writer.address)
    for label, count in [("js_written", 10), ("js_nested", 10), ("js_tx", 1)]:
        assert count_on_each(servers, label) == {s.address: count * (s is writer) for s in servers}
