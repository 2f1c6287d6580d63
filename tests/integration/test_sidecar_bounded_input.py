"""What a client can make the sidecar hold or spend: unfinished frames, invented mimes, large
frames (issue 20, points 4-6). Real sidecars (in-process or a process), real Gremlin Servers,
raw WebSocket clients where a driver would not misbehave on purpose."""

from __future__ import annotations

import json
import socket
import struct
import threading
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import pytest
from gremlin_python.driver.client import Client
from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.driver.request import RequestMessage
from gremlin_python.driver.serializer import GraphBinarySerializersV1, GraphSONSerializersV3d0
from gremlin_python.process.anonymous_traversal import traversal
from gremlin_python.process.traversal import Bytecode
from gremlinlb.sidecar import frames as frames_module
from gremlinlb.sidecar import inbound as inbound_module
from gremlinlb.sidecar import proxy as proxy_module
from gremlinlb.sidecar.config import SidecarConfig
from gremlinlb.sidecar.memory import MemoryLimits
from gremlinlb.sidecar.options import BackendOptions
from gremlinlb.sidecar.proxy import ProxyOptions
from gremlinlb.sidecar.testing import SidecarThread

from gremlinlb.core import BalancerSettings, HealthCheckSettings, frame_may_write, parse_endpoint
from gremlinlb.devservers import Fleet, GremlinServerProcess
from tests.helpers import upgrade_raw_websocket, wait_until
from tests.integration.test_sidecar_memory import rss
from tests.integration.test_sidecar_process import SidecarProcess

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
INVENTED_MIME = "application/vnd.gremlin-v3.0+json;x=7"


def config(servers: Sequence[GremlinServerProcess], **memory: int) -> SidecarConfig:
    settings = BalancerSettings(
        health=HealthCheckSettings(interval=0.5, timeout=2.0, rise=1, fall=1),
        request_timeout=10.0,
        connect_timeout=2.0,
    )
    return SidecarConfig(
        endpoints=tuple(parse_endpoint(s.address) for s in servers),
        settings=settings,
        proxy=ProxyOptions(memory=replace(MemoryLimits(), **memory)),
    )


@pytest.fixture
def servers(fleet: Fleet) -> Sequence[GremlinServerProcess]:
    return list(fleet)


@pytest.fixture
def sidecar(servers: Sequence[GremlinServerProcess]) -> Iterator[SidecarThread]:
    with SidecarThread(config(servers)) as running:
        yield running


class RawWebSocket:
    """A WebSocket client on a bare socket: the test decides what is sent, and when."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        host_port = url.split("//", 1)[1].split("/", 1)[0]
        host, port = host_port.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        upgrade_raw_websocket(self.sock, host_port)
        self.buffer = b""

    @staticmethod
    def header(length: int) -> bytes:
        """A masked binary frame header; the mask is zero, so the payload goes out as is."""
        if length < 126:
            head = struct.pack("!BB", 0x82, 0x80 | length)
        elif length < 65536:
            head = struct.pack("!BBH", 0x82, 0x80 | 126, length)
        else:
            head = struct.pack("!BBQ", 0x82, 0x80 | 127, length)
        return head + b"\0\0\0\0"

    def send(self, payload: bytes) -> None:
        self.sock.sendall(self.header(len(payload)) + payload)

    def send_unfinished(self, declared: int, sent: int) -> bool:
        """Start a frame of `declared` bytes and send only `sent` of them; False if the
        sidecar stopped taking them."""
        chunk = bytes(256 * 1024)
        try:
            self.sock.sendall(self.header(declared))
            left = sent
            while left > 0:
                self.sock.sendall(chunk[: min(left, len(chunk))])
                left -= len(chunk)
        except OSError:
            return False
        return True

    def read(self) -> tuple[int, bytes] | None:
        """(opcode, payload) of the next frame; None once the socket closed."""
        while True:
            if len(self.buffer) >= 2:
                opcode, size = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F
                offset = 2
                if size == 126:
                    offset = 4
                    if len(self.buffer) >= 4:
                        (size,) = struct.unpack("!H", self.buffer[2:4])
                elif size == 127:
                    offset = 10
                    if len(self.buffer) >= 10:
                        (size,) = struct.unpack("!Q", self.buffer[2:10])
                if len(self.buffer) >= offset and len(self.buffer) >= offset + size:
                    payload = self.buffer[offset : offset + size]
                    self.buffer = self.buffer[offset + size :]
                    return opcode, payload
            try:
                chunk = self.sock.recv(256 * 1024)
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            self.buffer += chunk

    def read_close(self) -> tuple[int, str] | None:
        """The close frame's code and reason, skipping data frames; None if the socket
        closed without one. Raises TimeoutError if nothing comes."""
        while True:
            frame = self.read()
            if frame is None:
                return None
            opcode, payload = frame
            if opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                return code, payload[2:].decode("utf-8", errors="replace")

    def close(self) -> None:
        self.sock.close()


def graphson_request_with_mime(mime: str, script: str = "1+1") -> bytes:
    body = json.dumps(
        {
            "requestId": {"@type": "g:UUID", "@value": str(uuid.uuid4())},
            "op": "eval",
            "processor": "",
            "args": {"gremlin": script, "aliases": {"g": "g"}},
        }
    ).encode()
    raw = mime.encode("ascii")
    return bytes([len(raw)]) + raw + body


def backend_connections(sidecar: SidecarThread) -> int:
    async def count() -> int:
        return len(sidecar.sidecar.backends.connections())

    return sidecar.call(count())


def held_bytes(sidecar: SidecarThread) -> int:
    async def used() -> int:
        return sidecar.sidecar.proxy.memory.used

    return sidecar.call(used())


# -- point 4: every byte a client makes the sidecar hold is counted ------------------------


def test_the_bytes_of_an_unfinished_frame_count_in_the_held_bytes(sidecar: SidecarThread) -> None:
    client = RawWebSocket(sidecar.url)
    try:
        assert client.send_unfinished(declared=9 * MiB, sent=6 * MiB)
        wait_until(
            lambda: held_bytes(sidecar) >= 6 * MiB, 10, "the unfinished frame's bytes counted"
        )
    finally:
        client.close()
    wait_until(lambda: held_bytes(sidecar) == 0, 10, "the bytes given back when it left")


def test_an_unfinished_frame_that_would_pass_the_memory_budget_is_refused_with_a_close_saying_so(
    servers: Sequence[GremlinServerProcess],
) -> None:
    limits = {"budget_bytes": 24 * MiB, "client_max_queued_bytes": 8 * MiB}
    with SidecarThread(config(servers, **limits)) as sidecar:
        first, second = RawWebSocket(sidecar.url), RawWebSocket(sidecar.url)
        try:
            assert first.send_unfinished(declared=16 * MiB, sent=15 * MiB)
            wait_until(lambda: held_bytes(sidecar) >= 15 * MiB, 10, "the first frame counted")
            second.send_unfinished(declared=16 * MiB, sent=15 * MiB)
            closes = []
            for client in (first, second):
                try:
                    closes.append(client.read_close())
                except TimeoutError:
                    closes.append(None)
        finally:
            first.close()
            second.close()
        refused = [c for c in closes if c is not None]
        assert refused, f"neither client was refused: {closes}"
        code, reason = refused[0]
        assert code == 1013  # Try Again Later: the sidecar is out of room, not the frame bad
        assert "memory_budget_bytes" in reason
        assert held_bytes(sidecar) <= 24 * MiB


def test_the_memory_of_unfinished_frames_goes_back_to_the_system_when_their_clients_leave(
    servers: Sequence[GremlinServerProcess],
) -> None:
    endpoints = ",".join(s.address for s in servers)
    process = SidecarProcess("--endpoints", endpoints).wait_alive()
    try:
        start = rss(process.process.pid)
        clients = [RawWebSocket(process.url) for _ in range(12)]
        for client in clients:
            client.send_unfinished(declared=18 * MiB, sent=17 * MiB)
        wait_until(lambda: rss(process.process.pid) > start + 48 * MiB, 20, "the frames to be held")
        for client in clients:
            client.close()
        wait_until(
            lambda: rss(process.process.pid) < start + 24 * MiB,
            20,
            "the unfinished frames' memory back to the system",
        )
    finally:
        process.stop()


# -- point 5: only the mimes the sidecar serves --------------------------------------------


def test_an_invented_mime_is_refused_at_once_with_a_close_naming_it(
    sidecar: SidecarThread,
) -> None:
    client = RawWebSocket(sidecar.url, timeout=5)
    try:
        client.send(graphson_request_with_mime(INVENTED_MIME))
        closed = client.read_close()
    finally:
        client.close()
    assert closed is not None
    code, reason = closed
    assert code == 1003  # unsupported data
    assert INVENTED_MIME in reason


def test_invented_mimes_open_no_backend_connections(sidecar: SidecarThread) -> None:
    gremlin = Client(sidecar.url, "g", pool_size=1)
    try:
        assert gremlin.submit("1+1").all().result(10) == [2]
        before = backend_connections(sidecar)
        for index in range(5):
            client = RawWebSocket(sidecar.url, timeout=5)
            try:
                client.send(
                    graphson_request_with_mime(f"application/vnd.gremlin-v3.0+json;x={index}")
                )
                client.read_close()
            except TimeoutError:
                pass
            finally:
                client.close()
        assert backend_connections(sidecar) == before
    finally:
        gremlin.close()


def test_a_known_mime_spelled_in_capitals_is_served_as_that_mime(sidecar: SidecarThread) -> None:
    client = RawWebSocket(sidecar.url, timeout=10)
    try:
        client.send(graphson_request_with_mime("Application/VND.Gremlin-v3.0+JSON"))
        frame = client.read()
    finally:
        client.close()
    assert frame is not None
    assert frame[0] == 0x2, frame
    answer = json.loads(frame[1])
    assert answer["status"]["code"] == 200
    assert answer["result"]["data"] == {  # typed GraphSON 3: what the mime asked for
        "@type": "g:List",
        "@value": [{"@type": "g:Int32", "@value": 2}],
    }


# -- point 6: no large parsing on the event loop -------------------------------------------


def big_read(values: int) -> bytes:
    bytecode = Bytecode()
    bytecode.add_step("inject", list(range(values)))
    bytecode.add_step("count")
    message = RequestMessage("traversal", "bytecode", {"gremlin": bytecode, "aliases": {"g": "g"}})
    frame: bytes = GraphBinarySerializersV1().serialize_message(str(uuid.uuid4()), message)
    return frame


def test_a_small_request_is_answered_while_a_large_frame_is_still_being_checked(
    sidecar: SidecarThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = frame_may_write
    big_checking = threading.Event()
    small_answered = threading.Event()

    def held_check(body: Any, mime: str) -> bool:
        if len(body) > 1_000_000:
            big_checking.set()
            small_answered.wait(15)  # the check of the big frame lasts until then
        return real(body, mime)

    monkeypatch.setattr(proxy_module, "frame_may_write", held_check)
    big = RawWebSocket(sidecar.url, timeout=30)
    gremlin = Client(sidecar.url, "g", pool_size=1)
    try:
        assert gremlin.submit("g.inject(0)").all().result(10) == [0]  # connected beforehand
        big.send(big_read(300_000))
        wait_until(big_checking.is_set, 10, "the large frame's check to start")
        assert gremlin.submit("g.inject(1)").all().result(5) == [1]
        small_answered.set()
        frame = big.read()
        assert frame is not None
        assert struct.unpack("!i", frame[1][18:22])[0] == 200
    finally:
        small_answered.set()
        gremlin.close()
        big.close()


def test_a_small_frame_is_checked_on_the_event_loop_without_a_thread_hop(
    sidecar: SidecarThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = frame_may_write
    threads: list[str] = []

    def recording_check(body: Any, mime: str) -> bool:
        threads.append(threading.current_thread().name)
        return real(body, mime)

    monkeypatch.setattr(proxy_module, "frame_may_write", recording_check)
    for serializer in (GraphBinarySerializersV1(), GraphSONSerializersV3d0()):
        connection = DriverRemoteConnection(sidecar.url, "g", message_serializer=serializer)
        try:
            assert traversal().with_(connection).inject(1).to_list() == [1]
        finally:
            connection.close()
    assert threads == ["gremlinlb-sidecar", "gremlinlb-sidecar"]


@pytest.fixture(scope="module")
def nine_mb_read() -> bytes:
    """A read-only request of about 9 MB (1.5 M values), as in the issue."""
    return big_read(1_500_000)


class RecordingReader:
    """Wraps aiohttp's WebSocket reader: counts the bytes the sidecar hands it."""

    def __init__(self, inner: Any, fed: list[int]) -> None:
        self._inner = inner
        self._fed = fed

    def feed_data(self, data: bytes) -> Any:
        self._fed.append(len(data))
        return self._inner.feed_data(data)

    def feed_eof(self) -> None:
        self._inner.feed_eof()


def answer_code(frame: tuple[int, bytes] | None) -> int:
    assert frame is not None, "the socket closed without an answer"
    code: int = struct.unpack("!i", frame[1][18:22])[0]
    return code


def test_aiohttps_reader_never_holds_a_large_frame(
    sidecar: SidecarThread, monkeypatch: pytest.MonkeyPatch, nine_mb_read: bytes
) -> None:
    fed: list[int] = []
    real_init = inbound_module.InboundMeter.__init__

    def recording_init(self: Any, inner: Any, *args: Any) -> None:
        real_init(self, RecordingReader(inner, fed), *args)

    monkeypatch.setattr(inbound_module.InboundMeter, "__init__", recording_init)
    big = RawWebSocket(sidecar.url, timeout=60)
    try:
        big.send(nine_mb_read)
        assert answer_code(big.read()) == 200
    finally:
        big.close()
    # Its payload was assembled read by read beside the reader, not joined and unmasked by
    # the reader in one go on the event loop.
    assert sum(fed) < 64 * 1024


def test_a_large_frames_backend_copy_is_made_on_a_worker_thread(
    sidecar: SidecarThread, monkeypatch: pytest.MonkeyPatch, nine_mb_read: bytes
) -> None:
    threads: list[str] = []
    real = frames_module.Request.with_request_id

    def recording(self: frames_module.Request, request_id: bytes) -> bytes | str:
        if len(self.frame) > 1_000_000:
            threads.append(threading.current_thread().name)
        return real(self, request_id)

    monkeypatch.setattr(frames_module.Request, "with_request_id", recording)
    big = RawWebSocket(sidecar.url, timeout=60)
    gremlin = Client(sidecar.url, "g", pool_size=1)
    try:
        big.send(nine_mb_read)
        assert answer_code(big.read()) == 200
        assert gremlin.submit("g.inject(1)").all().result(10) == [1]
    finally:
        gremlin.close()
        big.close()
    assert threads, "the large frame's id was never rewritten"
    assert "gremlinlb-sidecar" not in threads  # never on the event loop's thread


# -- point 5: pools of mimes no client uses any more are closed ----------------------------


def backend_connections_metric(sidecar: SidecarThread) -> int:
    """Open backend connections, as /metrics reports them (every host summed)."""
    with urllib.request.urlopen(f"{sidecar.admin_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("gremlinlb_sidecar_backend_connections{")
    )


def test_a_rare_mimes_pools_close_once_idle_and_open_again_on_its_next_request(
    servers: Sequence[GremlinServerProcess],
) -> None:
    settled = replace(config(servers), backend=BackendOptions(mime_pool_idle=1.0))
    with SidecarThread(settled) as sidecar:
        usual = DriverRemoteConnection(sidecar.url, "g")  # GraphBinary: the default mime
        rare = DriverRemoteConnection(
            sidecar.url, "g", message_serializer=GraphSONSerializersV3d0()
        )
        try:
            for value in range(2 * len(servers)):  # a request to every host
                assert traversal().with_(usual).inject(value).to_list() == [value]
            before = backend_connections_metric(sidecar)
            for value in range(2 * len(servers)):
                assert traversal().with_(rare).inject(value).to_list() == [value]
            assert backend_connections_metric(sidecar) > before  # the rare mime's own pools
            wait_until(
                lambda: backend_connections_metric(sidecar) == before,
                15,
                "the rare mime's backend connections to close",
            )
            assert traversal().with_(rare).inject("again").to_list() == ["again"]
            assert traversal().with_(usual).inject("usual").to_list() == ["usual"]
        finally:
            rare.close()
            usual.close()
