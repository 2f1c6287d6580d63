"""The official Go driver through the sidecar: many requests at once on one connection.

gremlin-go v3.8.1 (the newest 3.8 release the Go module proxy serves) runs tests/drivers/go/main.go,
built into .cache/go-driver by `make go-driver` (part of `make setup`). Its pool is capped at one
connection, which carries every concurrent request. gremlin-go speaks GraphBinary only, so there
is no GraphSON variant here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from gremlinlb.sidecar.testing import SidecarThread

from gremlinlb.devservers import GremlinServerProcess
from tests.driver_support import (
    CACHE,
    DriverProcess,
    assert_even_spread,
    client_connections,
    count_on_each,
    requests_per_host,
    run_killed_server_load,
    running_sidecar,
)

pytestmark = pytest.mark.integration

PROGRAM = CACHE / "go-driver" / "bin" / "sidecar-go-driver"
COUNT = 200
SCRIPTS = COUNT // 4
NAMES = 30

Launcher = Callable[..., DriverProcess]


@pytest.fixture
def sidecar(servers: Sequence[GremlinServerProcess]) -> Iterator[SidecarThread]:
    # No hedging: the spread specs count attempts per host, and a loaded machine makes slow
    # reads that a hedge would send twice (hedging has its own specs).
    with running_sidecar(servers, hedge=False) as running:
        yield running


@pytest.fixture
def go_client(tmp_path: Path) -> Iterator[Launcher]:
    """Starts the Go program against a sidecar: `go_client(sidecar, mode, count)`."""
    if not PROGRAM.is_file():
        pytest.fail("the Go driver program is missing: run `make go-driver`")
    started: list[DriverProcess] = []

    def launch(sidecar: SidecarThread, mode: str, count: int = COUNT) -> DriverProcess:
        command = [str(PROGRAM), sidecar.url, mode, str(count)]
        driver = DriverProcess(command, tmp_path / f"go-{mode}-{len(started)}.log")
        started.append(driver)
        return driver

    yield launch
    for driver in started:
        driver.__exit__(None, None, None)


def test_go_driver_gets_every_answer_to_concurrent_requests_on_one_connection(
    go_client: Launcher, sidecar: SidecarThread, servers: Sequence[GremlinServerProcess]
) -> None:
    with go_client(sidecar, "multiplex") as driver:
        result = driver.json(timeout=120)
        connections = client_connections(sidecar)  # the program holds its connection open here
        driver.send("done")
        assert driver.wait(30) == 0, driver.stderr()
    assert connections == 1
    assert result["values"] == list(range(COUNT))
    assert result["scripts"] == [1000 + i for i in range(SCRIPTS)]
    assert set(result["names"]) == {s.address for s in servers}


def test_go_driver_concurrent_requests_are_spread_over_all_servers(
    go_client: Launcher, sidecar: SidecarThread
) -> None:
    with go_client(sidecar, "multiplex") as driver:
        driver.json(timeout=120)
        driver.send("done")
        assert driver.wait(30) == 0, driver.stderr()
    assert_even_spread(requests_per_host(sidecar), COUNT + SCRIPTS + NAMES)


def test_go_driver_committed_transaction_lands_on_exactly_one_server(
    go_client: Launcher, sidecar: SidecarThread, servers: Sequence[GremlinServerProcess]
) -> None:
    with go_client(sidecar, "commit") as driver:
        result = driver.json(timeout=120)
        assert driver.wait(30) == 0, driver.stderr()
    assert result["inside"] == 1
    assert sorted(count_on_each(servers, "go").values()) == [0, 0, 1]


def test_go_driver_rolled_back_transaction_lands_nowhere(
    go_client: Launcher, sidecar: SidecarThread, servers: Sequence[GremlinServerProcess]
) -> None:
    with go_client(sidecar, "rollback") as driver:
        result = driver.json(timeout=120)
        assert driver.wait(30) == 0, driver.stderr()
    assert result["inside"] == 1
    assert set(count_on_each(servers, "go_rolled_back").values()) == {0}


def test_go_driver_killed_server_mid_run_fails_no_read_only_request(
    go_client: Launcher, servers: Sequence[GremlinServerProcess]
) -> None:
    victim = servers[1]
    with running_sidecar(servers, fall=1) as sidecar, go_client(sidecar, "load") as driver:
        summary = run_killed_server_load(driver, sidecar, victim)
    names, mark = summary["names"], summary["mark"]
    assert summary["errors"] == []
    assert victim.address in names[:mark]
    assert len(names) >= mark + 100
    assert set(names[mark:]) == {servers[0].address, servers[2].address}
