"""Memory bounds of a real sidecar process: clients that read slowly or never, ~1 MB answers
from a real Gremlin Server, and the RSS the sidecar needs meanwhile."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
import urllib.request
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from gremlin_python.driver.client import Client
from gremlin_python.driver.request import RequestMessage
from gremlin_python.driver.serializer import GraphBinarySerializersV1
from gremlinlb.operator.webhook import default_resources
from gremlinlb.sidecar.frames import GRAPHBINARY_CHANNEL, parse_response

from gremlinlb.devservers import Fleet, GremlinServerProcess
from tests.helpers import upgrade_raw_websocket, wait_until
from tests.integration.test_sidecar_process import SidecarProcess

pytestmark = pytest.mark.integration

ONE_MB = "'x' * 1000000"  # a Groovy string of 1,000,000 characters: a ~1 MB answer frame
MiB = 1024 * 1024
# Each never-reading client asks for more than the sidecar lets one client queue (32 MiB).
NEVER_READ_REQUESTS = 48


def injected_memory_limit() -> int:
    """The memory limit the webhook gives the sidecar container, in bytes."""
    text = default_resources()["limits"]["memory"]
    assert text.endswith("Mi")
    return int(text[:-2]) * MiB


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class RawClient:
    """A WebSocket client on a bare socket, so a test decides exactly when it reads."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        upgrade_raw_websocket(self.sock, f"127.0.0.1:{port}")
        self.buffer = b""

    def send_request(self, script: str) -> None:
        message = RequestMessage("", "eval", {"gremlin": script, "aliases": {"g": "g"}})
        payload = GraphBinarySerializersV1().serialize_message(str(uuid.uuid4()), message)
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x82, 0x80 | length)
        elif length < 65536:
            header = struct.pack("!BBH", 0x82, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x82, 0x80 | 127, length)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def read_frame(self) -> bytes | None:
        """The payload of the next data frame, or None once the sidecar closed."""
        while True:
            if len(self.buffer) >= 2:
                opcode, size = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F
                offset = 2
                if size == 126:
                    (size,) = struct.unpack("!H", self.buffer[2:4])
                    offset = 4
                elif size == 127:
                    (size,) = struct.unpack("!Q", self.buffer[2:10])
                    offset = 10
                if len(self.buffer) >= offset + size:
                    payload = self.buffer[offset : offset + size]
                    self.buffer = self.buffer[offset + size :]
                    if opcode == 0x8:
                        return None
                    return payload
            chunk = self.sock.recv(256 * 1024)
            if not chunk:
                return None
            self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def servers(fleet: Fleet) -> Sequence[GremlinServerProcess]:
    return list(fleet)


def test_slow_and_never_reading_clients_keep_rss_under_the_injected_limit_while_others_are_served(
    servers: Sequence[GremlinServerProcess],
) -> None:
    limit = injected_memory_limit()
    endpoints = ",".join(s.address for s in servers)
    sidecar = SidecarProcess("--endpoints", endpoints, "--request-timeout", "60").wait_alive()
    pid = sidecar.process.pid
    peak = [rss(pid)]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            peak.append(rss(pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.monotonic()
    never = [RawClient(sidecar.port) for _ in range(8)]
    slow_answers: list[list[int]] = []
    served: list[Any] = []
    try:
        for client in never:
            for _ in range(NEVER_READ_REQUESTS):
                client.send_request(ONE_MB)

        def slow_reader() -> None:
            client = RawClient(sidecar.port)
            codes: list[int] = []
            try:
                for _ in range(4):
                    for _ in range(5):
                        client.send_request(ONE_MB)
                    for _ in range(5):
                        frame = client.read_frame()
                        assert frame is not None, "a slow reader was cut off"
                        codes.append(parse_response(frame, GRAPHBINARY_CHANNEL).code)
                        time.sleep(0.2)
            finally:
                client.close()
            slow_answers.append(codes)

        readers = [threading.Thread(target=slow_reader) for _ in range(2)]
        for reader in readers:
            reader.start()
        gremlin = Client(sidecar.url, "g", pool_size=1)
        try:
            for _ in range(20):
                served.append(len(gremlin.submit(ONE_MB).all().result(60)[0]))
        finally:
            gremlin.close()
        for reader in readers:
            reader.join(120)
        metrics = get_text(f"{sidecar.admin}/metrics")
    finally:
        for client in never:
            client.close()
        sampling.set()
        sampler.join(10)
    # Every byte counted for a client is given back once its requests are over.
    wait_until(lambda: held_bytes(sidecar) == 0, 60, "the held bytes to return to 0")
    # The burst is over: most of what it took goes back to the system.
    wait_until(
        lambda: rss(pid) - peak[0] < (max(peak) - peak[0]) / 2, 30, "the burst's memory back"
    )
    after = rss(pid)
    sidecar.terminate()
    assert sidecar.wait() == 0
    sidecar.stop()
    print(f"took {time.monotonic() - started:.1f}s")
    print(
        f"sidecar RSS: start {peak[0] / MiB:.0f} MiB, peak {max(peak) / MiB:.0f} MiB, "
        f"after {after / MiB:.0f} MiB, limit {limit / MiB:.0f} MiB"
    )
    assert served == [1_000_000] * 20
    assert slow_answers == [[200] * 20] * 2
    assert max(peak) < limit
    assert "gremlinlb_sidecar_clients_cut_off_total 8.0" in metrics
    assert after - peak[0] < (max(peak) - peak[0]) / 2  # most of the burst was given back


def held_bytes(sidecar: SidecarProcess) -> float:
    for line in get_text(f"{sidecar.admin}/metrics").splitlines():
        if line.startswith("gremlinlb_sidecar_held_bytes "):
            return float(line.split()[1])
    raise AssertionError("no gremlinlb_sidecar_held_bytes in /metrics")


def get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        text: str = response.read().decode()
        return text
