"""The official Java driver through the sidecar: many requests at once on one connection.

gremlin-driver 3.8.1 (from Maven, like the dev servers) runs tests/drivers/java/SidecarClient.java,
both built into .cache/java-driver by `make java-driver` (part of `make setup`). Its cluster has
one connection (pool min = max = 1) that carries every concurrent request, in GraphBinary (the
driver's default) or GraphSON v3.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from gremlinlb.sidecar.testing import SidecarThread

from gremlinlb.devservers import GremlinServerProcess
from gremlinlb.devservers.errors import ToolMissingError
from gremlinlb.devservers.fetch import find_java
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
from tests.roles_support import assert_reads_even, role_endpoints

pytestmark = pytest.mark.integration

DRIVER = CACHE / "java-driver"
#: A small, quick-starting client JVM: 2 cores are shared with 3 Gremlin Servers.
JVM_OPTIONS = ["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]
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
def java_client(tmp_path: Path) -> Iterator[Launcher]:
    """Starts SidecarClient against a sidecar: `java_client(sidecar, serializer, mode, count)`."""
    try:
        java = find_java()
    except ToolMissingError as missing:
        pytest.fail(str(missing))
    if shutil.which("javac") is None or not (DRIVER / "classes" / ".built").is_file():
        pytest.fail("the Java driver is missing: run `make java-driver`")
    started: list[DriverProcess] = []

    def launch(
        sidecar: SidecarThread, serializer: str, mode: str, count: int = COUNT
    ) -> DriverProcess:
        url = urlsplit(sidecar.url)
        classpath = f"{DRIVER / 'classes'}:{DRIVER / 'lib' / '*'}"
        command = [java, *JVM_OPTIONS, "-cp", classpath, "SidecarClient"]
        command += [str(url.hostname), str(url.port), serializer, mode, str(count)]
        driver = DriverProcess(command, tmp_path / f"java-{mode}-{len(started)}.log")
        started.append(driver)
        return driver

    yield launch
    for driver in started:
        driver.__exit__(None, None, None)


@pytest.mark.parametrize("serializer", ["graphbinary", "graphson"])
def test_java_driver_gets_every_answer_to_concurrent_requests_on_one_connection(
    java_client: Launcher,
    sidecar: SidecarThread,
    servers: Sequence[GremlinServerProcess],
    serializer: str,
) -> None:
    with java_client(sidecar, serializer, "multiplex") as driver:
        result = driver.json(timeout=120)
        connections = client_connections(sidecar)  # the program holds its connection open here
        driver.send("done")
        assert driver.wait(30) == 0, driver.stderr()
    assert connections == 1
    assert result["values"] == list(range(COUNT))
    assert result["scripts"] == [1000 + i for i in range(SCRIPTS)]
    assert set(result["names"]) == {s.address for s in servers}


def test_java_driver_concurrent_requests_are_spread_over_all_servers(
    java_client: Launcher, sidecar: SidecarThread
) -> None:
    with java_client(sidecar, "graphbinary", "multiplex") as driver:
        driver.json(timeout=120)
        driver.send("done")
        assert driver.wait(30) == 0, driver.stderr()
    assert_even_spread(requests_per_host(sidecar), COUNT + SCRIPTS + NAMES)


@pytest.mark.parametrize("serializer", ["graphbinary", "graphson"])
def test_java_driver_committed_transaction_lands_on_exactly_one_server(
    java_client: Launcher,
    sidecar: SidecarThread,
    servers: Sequence[GremlinServerProcess],
    serializer: str,
) -> None:
    with java_client(sidecar, serializer, "commit") as driver:
        result = driver.json(timeout=120)
        assert driver.wait(30) == 0, driver.stderr()
    assert result["inside"] == 1
    assert sorted(count_on_each(servers, "java").values()) == [0, 0, 1]


def test_java_driver_rolled_back_transaction_lands_nowhere(
    java_client: Launcher, sidecar: SidecarThread, servers: Sequence[GremlinServerProcess]
) -> None:
    with java_client(sidecar, "graphbinary", "rollback") as driver:
        result = driver.json(timeout=120)
        assert driver.wait(30) == 0, driver.stderr()
    assert result["inside"] == 1
    assert set(count_on_each(servers, "java_rolled_back").values()) == {0}


def test_java_driver_killed_server_mid_run_fails_no_read_only_request(
    java_client: Launcher, servers: Sequence[GremlinServerProcess]
) -> None:
    victim = servers[1]
    with (
        running_sidecar(servers, fall=1) as sidecar,
        java_client(sidecar, "graphbinary", "load") as driver,
    ):
        summary = run_killed_server_load(driver, sidecar, victim)
    names, mark = summary["names"], summary["mark"]
    assert summary["errors"] == []
    assert victim.address in names[:mark]
    assert len(names) >= mark + 100
    assert set(names[mark:]) == {servers[0].address, servers[2].address}


def test_java_driver_reads_go_to_the_readers_and_scripts_and_transactions_to_the_writer(
    java_client: Launcher, servers: Sequence[GremlinServerProcess]
) -> None:
    with running_sidecar(servers, endpoints=role_endpoints(servers), hedge=False) as sidecar:
        with java_client(sidecar, "graphbinary", "multiplex") as driver:
            result = driver.json(timeout=120)
            driver.send("done")
            assert driver.wait(30) == 0, driver.stderr()
        with java_client(sidecar, "graphbinary", "commit") as driver:
            committed = driver.json(timeout=120)
            assert driver.wait(30) == 0, driver.stderr()
        per_host = requests_per_host(sidecar)
    writer, *readers = servers
    assert_reads_even(Counter(result["names"]), readers)
    # The injects and names are reads; the scripts may write (a script is opaque to the sidecar).
    assert sum(per_host[r.address] for r in readers) == COUNT + NAMES
    assert per_host[writer.address] >= SCRIPTS
    assert committed["inside"] == 1
    assert count_on_each(servers, "java") == {s.address: int(s is writer) for s in servers}
