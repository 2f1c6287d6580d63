"""Specifications of the fault proxy (devservers.faults) in front of a real Gremlin Server."""

from __future__ import annotations

import random
import socket
import string
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gremlinlb.devservers import GremlinServerProcess, ServerRuntime, find_free_port, probe
from gremlinlb.devservers.faults import FaultProxy
from tests.fleet_fixtures import EXTRA_BASE_PORT

pytestmark = pytest.mark.integration

DELAY = 0.3
UPGRADE = (
    b"GET /gremlin HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, gremlin_runtime: ServerRuntime
) -> Iterator[GremlinServerProcess]:
    """One real server for the whole module: the proxy never changes the server's state."""
    port = find_free_port(EXTRA_BASE_PORT + 50)
    process = GremlinServerProcess(
        port, tmp_path_factory.mktemp("fault-proxy-server"), runtime=gremlin_runtime
    )
    process.start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.kill()


def timed_second_request(g: Any) -> tuple[list[Any], float]:
    """Answer and seconds of a request on a connection already open (the upgrade is done)."""
    g.inject(0).to_list()
    began = time.monotonic()
    answer = g.inject(1).to_list()
    return answer, time.monotonic() - began


def upgrade_answer(address: str, wait: float) -> bytes | None:
    """Send a WebSocket upgrade request: what comes back within `wait` seconds (b"": the
    connection was closed), or None when nothing came and the connection stayed open."""
    host, port = address.split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        sock.sendall(UPGRADE)
        try:
            return sock.recv(4096)
        except TimeoutError:
            return None


def test_answers_arrive_no_sooner_than_the_answer_delay(server: GremlinServerProcess) -> None:
    with FaultProxy(server.address, answer_delay=DELAY) as proxy:
        answer, seconds = probe.with_traversal_source(proxy.address, timed_second_request, 10)
    assert answer == [1]
    assert seconds >= DELAY


def test_answer_delay_changed_while_running_applies_to_the_next_answers(
    server: GremlinServerProcess,
) -> None:
    with FaultProxy(server.address) as proxy:

        def slowed_later(g: Any) -> float:
            g.inject(0).to_list()
            proxy.answer_delay = DELAY
            return timed_second_request(g)[1]

        seconds = probe.with_traversal_source(proxy.address, slowed_later, 10)
    assert seconds >= DELAY


def test_bytes_pass_unchanged_both_ways(server: GremlinServerProcess) -> None:
    text = "".join(random.Random(8).choices(string.printable, k=300_000))
    with FaultProxy(server.address, answer_delay=0.05) as proxy:
        echoed = probe.with_traversal_source(proxy.address, lambda g: g.inject(text).next(), 20)
        assert proxy.counters.bytes_up > len(text)
        assert proxy.counters.bytes_down > len(text)
    assert echoed == text


def test_slow_server_still_passes_a_health_probe(server: GremlinServerProcess) -> None:
    with FaultProxy(server.address, answer_delay=DELAY) as proxy:
        assert probe.answers(proxy.address, timeout=5)


def test_black_hole_accepts_tcp_but_never_completes_the_websocket_upgrade(
    server: GremlinServerProcess,
) -> None:
    with FaultProxy(server.address, black_hole=True) as proxy:
        answer = upgrade_answer(proxy.address, wait=1.0)
        assert proxy.counters.black_holed == 1
        assert proxy.counters.bytes_down == 0
    assert answer is None


def test_black_hole_switched_off_lets_new_connections_upgrade(
    server: GremlinServerProcess,
) -> None:
    with FaultProxy(server.address, black_hole=True) as proxy:
        proxy.black_hole = False
        answer = upgrade_answer(proxy.address, wait=5.0)
    assert answer is not None
    assert answer.startswith(b"HTTP/1.1 101")


def test_connection_idle_for_idle_close_seconds_is_closed(server: GremlinServerProcess) -> None:
    with FaultProxy(server.address, idle_close=0.5) as proxy:
        host, port = proxy.address.split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(UPGRADE)
            upgraded = sock.recv(4096)
            after_idle = sock.recv(4096)  # blocks until the proxy closes it (or 5 s pass)
        assert proxy.counters.idle_closed == 1
    assert upgraded.startswith(b"HTTP/1.1 101")
    assert after_idle == b""


def test_a_stalled_proxy_relays_nothing_either_way(server: GremlinServerProcess) -> None:
    with FaultProxy(server.address) as proxy:
        proxy.stalled = True
        answer = upgrade_answer(proxy.address, wait=1.0)
        assert proxy.counters.bytes_up == 0
        assert proxy.counters.bytes_down == 0
    assert answer is None


def test_a_connection_caught_in_a_stall_is_closed_when_it_ends_without_relaying(
    server: GremlinServerProcess,
) -> None:
    with FaultProxy(server.address) as proxy:
        host, port = proxy.address.split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            proxy.stalled = True
            sock.sendall(UPGRADE)
            sock.settimeout(0.5)
            with pytest.raises(TimeoutError):
                sock.recv(4096)  # nothing passes while stalled
            proxy.stalled = False
            sock.settimeout(5)
            after = sock.recv(4096)
        assert proxy.counters.bytes_up == 0
    assert after == b""


def test_a_connection_opened_after_a_stall_is_relayed(server: GremlinServerProcess) -> None:
    with FaultProxy(server.address) as proxy:
        proxy.stalled = True
        proxy.stalled = False
        answer = upgrade_answer(proxy.address, wait=5.0)
    assert answer is not None
    assert answer.startswith(b"HTTP/1.1 101")


def test_server_down_behind_the_proxy_drops_the_client_connection() -> None:
    port = find_free_port(EXTRA_BASE_PORT + 80)  # nothing listens there
    with FaultProxy(f"127.0.0.1:{port}") as proxy:
        answer = upgrade_answer(proxy.address, wait=5.0)
    assert answer == b""


def test_cli_prints_the_address_of_a_proxy_that_relays_to_the_server(
    server: GremlinServerProcess,
) -> None:
    command = [sys.executable, "-m", "gremlinlb.cli", "dev-servers", "fault-proxy"]
    process = subprocess.Popen(
        [*command, server.address, "--answer-delay", "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        address = process.stdout.readline().strip()
        assert probe.answers(address, timeout=10)
    finally:
        process.terminate()
        process.wait(10)


def test_cli_refuses_an_upstream_off_this_machine() -> None:
    command = [sys.executable, "-m", "gremlinlb.cli", "dev-servers", "fault-proxy"]
    done = subprocess.run(
        [*command, "10.0.0.1:8182"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert "not a loopback address" in done.stderr


def test_a_port_already_taken_is_reported_and_leaves_no_thread_behind() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        before = {t.name for t in threading.enumerate()}
        with pytest.raises(OSError, match="address already in use"):
            FaultProxy("127.0.0.1:8182", port=port).start_in_thread()
    assert {t.name for t in threading.enumerate()} <= before
