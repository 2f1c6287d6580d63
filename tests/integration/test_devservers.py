"""Specifications of the dev-server tooling, run against real Gremlin Server JVMs on loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gremlinlb.devservers import (
    Fleet,
    GremlinServerProcess,
    PortInUseError,
    ServerRuntime,
    ServerStartError,
    ToolMissingError,
    port_is_free,
    probe,
)
from gremlinlb.devservers.fetch import find_java, find_maven
from tests.fleet_fixtures import free_port_block

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
CLI_BASE_PORT = 18381
BUSY_BASE_PORT = 18491


@pytest.fixture
def listening_socket() -> Iterator[socket.socket]:
    """Something else already listening on a loopback port, the one after a free port: a
    fleet based just below it meets it second. Outside the ephemeral range, so the free port
    below it is not taken by some connection meanwhile (port 0 gave one whose neighbour was)."""
    base = free_port_block(BUSY_BASE_PORT, 2)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", base + 1))
    sock.listen()
    try:
        yield sock
    finally:
        sock.close()


def cli(*args: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gremlinlb.cli", "dev-servers", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_every_fleet_server_answers_a_traversal(fleet: Fleet) -> None:
    assert [probe.inject_one(server.address) for server in fleet] == [[1], [1], [1]]


def test_fleet_servers_listen_on_consecutive_loopback_ports_from_the_base_port(
    fleet: Fleet,
) -> None:
    assert fleet.addresses == [f"127.0.0.1:{fleet.base_port + i}" for i in range(3)]


def test_fleet_servers_are_separate_processes(fleet: Fleet) -> None:
    assert len({server.pid for server in fleet}) == 3


def test_killed_server_refuses_connections_and_restart_brings_it_back_on_the_same_port(
    fleet: Fleet,
) -> None:
    victim = fleet[1]
    address, old_pid = victim.address, victim.pid
    victim.kill()
    assert not victim.is_running()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", victim.port), timeout=2).close()
    victim.restart()
    assert victim.address == address
    assert victim.pid != old_pid
    assert victim.answers()


def test_restart_gives_a_fresh_empty_graph(fleet: Fleet) -> None:
    server = fleet[0]
    probe.with_traversal_source(server.address, lambda g: g.add_v("x").iterate(), timeout=10)
    assert probe.vertex_count(server.address) == 1
    server.restart()
    assert probe.vertex_count(server.address) == 0


def test_paused_server_times_out_a_traversal_and_resume_makes_it_answer(fleet: Fleet) -> None:
    server = fleet[2]
    server.pause()
    assert server.is_paused()
    assert server.is_running()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        probe.inject_one(server.address, timeout=1.5)
    assert time.monotonic() - started < 5
    server.resume()
    assert not server.is_paused()
    assert probe.inject_one(server.address, timeout=10) == [1]


def test_stop_ends_the_jvm_and_frees_the_port(fleet: Fleet) -> None:
    server = fleet[0]
    server.stop()
    assert not server.is_running()
    assert port_is_free(server.port)


def test_transactions_commit_and_roll_back(fleet: Fleet) -> None:
    def work(g: object) -> tuple[int, int, int]:
        tx = g.tx()  # type: ignore[attr-defined]
        gtx = tx.begin()
        gtx.add_v("committed").iterate()
        invisible_outside = g.V().count().next()  # type: ignore[attr-defined]
        tx.commit()
        tx = g.tx()  # type: ignore[attr-defined]
        gtx = tx.begin()
        gtx.add_v("rolled-back").iterate()
        tx.rollback()
        labels = g.V().label().to_list()  # type: ignore[attr-defined]
        return invisible_outside, len(labels), labels.count("committed")

    assert probe.with_traversal_source(fleet[0].address, work, timeout=30) == (0, 1, 1)


def test_every_graph_is_empty_at_test_start(fleet: Fleet) -> None:
    assert [probe.vertex_count(server.address) for server in fleet] == [0, 0, 0]


def test_add_starts_one_more_server_on_the_next_free_port(fleet: Fleet) -> None:
    highest = max(server.port for server in fleet)
    added = fleet.add()
    assert len(fleet) == 4
    assert added.port > highest
    assert added is fleet[3]
    assert added.answers()


def test_reset_heals_killed_paused_and_added_servers_and_empties_graphs(fleet: Fleet) -> None:
    addresses = fleet.addresses
    probe.with_traversal_source(fleet[2].address, lambda g: g.add_v("x").iterate(), timeout=10)
    fleet[0].kill()
    fleet[1].pause()
    fleet.add()
    fleet.reset()
    assert fleet.addresses == addresses
    assert all(server.answers() for server in fleet)
    assert [probe.vertex_count(server.address) for server in fleet] == [0, 0, 0]


def test_reset_brings_back_a_removed_server_on_its_port(fleet: Fleet) -> None:
    addresses = fleet.addresses
    fleet.remove(fleet[1], graceful=False)
    assert len(fleet) == 2
    fleet.reset()
    assert fleet.addresses == addresses
    assert fleet[1].answers()


def test_server_factory_starts_a_server_outside_the_fleet(
    fleet: Fleet, extra_server: GremlinServerProcess
) -> None:
    assert extra_server.address not in fleet.addresses
    assert extra_server.answers()


def test_busy_port_is_a_clear_error_naming_the_port(
    listening_socket: socket.socket, gremlin_runtime: ServerRuntime, tmp_path: Path
) -> None:
    port = listening_socket.getsockname()[1]
    server = GremlinServerProcess(port, tmp_path, runtime=gremlin_runtime)
    with pytest.raises(PortInUseError, match=rf"port {port} .*--base-port"):
        server.start()
    assert server.pid is None


def test_fleet_with_one_busy_port_starts_nothing_and_names_that_port(
    listening_socket: socket.socket, gremlin_runtime: ServerRuntime, tmp_path: Path
) -> None:
    busy = listening_socket.getsockname()[1]
    fleet = Fleet(2, base_port=busy - 1, run_dir=tmp_path, runtime=gremlin_runtime)
    with pytest.raises(PortInUseError) as caught:
        fleet.start()
    assert caught.value.port == busy
    assert len(fleet) == 0


def test_server_that_dies_during_start_up_reports_its_log_tail(
    gremlin_runtime: ServerRuntime, tmp_path: Path
) -> None:
    port = free_port_block(18481, 1)
    server = GremlinServerProcess(
        port, tmp_path, runtime=gremlin_runtime, jvm_options=("-Xms1m", "-Xmx1m")
    )
    server.start()
    with pytest.raises(ServerStartError, match=r"(?s)exited \(code 1\).*Too small maximum heap"):
        server.wait_ready(timeout=30)


def test_missing_java_is_a_clear_error_saying_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolMissingError, match=r"java not found.*install"):
        find_java()


def test_missing_maven_is_a_clear_error_saying_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolMissingError, match=r"mvn .*install"):
        find_maven()


def test_cli_fetch_is_a_fast_no_op_once_cached(gremlin_runtime: ServerRuntime) -> None:
    started = time.monotonic()
    result = cli("fetch")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(gremlin_runtime.lib_dir)
    assert time.monotonic() - started < 10


def test_cli_up_detach_status_down_round_trip(
    gremlin_runtime: ServerRuntime, tmp_path: Path
) -> None:
    state = str(tmp_path / "state.json")
    base = free_port_block(CLI_BASE_PORT, 2)
    try:
        up = cli("up", "--count", "2", "--base-port", str(base), "--detach", "--state-file", state)
        assert up.returncode == 0, up.stderr
        assert up.stdout.splitlines() == [f"127.0.0.1:{base}", f"127.0.0.1:{base + 1}"]

        status = cli("status", "--state-file", state)
        assert status.returncode == 0, status.stderr
        assert [line.split()[0] for line in status.stdout.splitlines()] == up.stdout.split()
        assert all(" answering " in line for line in status.stdout.splitlines())
    finally:
        down = cli("down", "--state-file", state)
    assert down.returncode == 0, down.stderr
    assert down.stdout.splitlines() == [
        line for line in down.stdout.splitlines() if line.startswith("stopped 127.0.0.1:")
    ]
    assert len(down.stdout.splitlines()) == 2
    assert port_is_free(base)
    assert port_is_free(base + 1)
    assert not Path(state).exists()


def test_cli_up_on_a_busy_port_exits_nonzero_naming_it(
    listening_socket: socket.socket, tmp_path: Path
) -> None:
    busy = listening_socket.getsockname()[1]
    result = cli(
        "up",
        "--count",
        "1",
        "--base-port",
        str(busy),
        "--detach",
        "--state-file",
        str(tmp_path / "state.json"),
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert f"port {busy}" in result.stderr
    assert "--base-port" in result.stderr
