"""A request's life in the sidecar: when its timeout starts, and what is left of it when its
client leaves (issue 19).

The promise under test is "never re-run a request that may have written": a request's timeout
runs from its send, so a request that waited for a connection is not reported as possibly
applied while its server applies it; a request that was never sent is never sent once its
client has gone (a driver that retried on a new socket would otherwise write twice); a client
leaving says nothing about its host; a removed host stays out of the metrics.

Everything runs against the real sidecar (in process) and real Gremlin Servers. Delays come
from the fault proxy, never from slow queries; writes are counted on the server itself.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any

import pytest
from gremlin_python.driver.client import Client
from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.driver.protocol import GremlinServerError
from gremlin_python.driver.request import RequestMessage
from gremlin_python.driver.serializer import GraphBinarySerializersV1
from gremlin_python.process.anonymous_traversal import traversal
from gremlin_python.process.graph_traversal import __
from gremlinlb.sidecar.config import SidecarConfig
from gremlinlb.sidecar.memory import MemoryLimits
from gremlinlb.sidecar.options import BackendOptions
from gremlinlb.sidecar.proxy import ProxyOptions
from gremlinlb.sidecar.testing import SidecarThread

from gremlinlb.core import (
    BalancerSettings,
    BufferSettings,
    HealthCheckSettings,
    HostState,
    Outcome,
    parse_endpoint,
)
from gremlinlb.devservers import Fleet, GremlinServerProcess
from gremlinlb.devservers.faults import FaultProxy
from tests.helpers import masked_frame_head, upgrade_raw_websocket, wait_until

pytestmark = pytest.mark.integration

LABEL = "departed"


def config_for(
    addresses: Sequence[str],
    *,
    backend: BackendOptions | None = None,
    proxy: ProxyOptions | None = None,
    **settings: Any,
) -> SidecarConfig:
    base: dict[str, Any] = {
        # Probes pass through the fault proxies too: their timeout outlasts the answer delay.
        "health": HealthCheckSettings(interval=0.5, timeout=4.0, rise=1, fall=1),
        "request_timeout": 5.0,
        "connect_timeout": 2.0,
        # Long enough for a killed server to be started again while requests wait.
        "buffer": BufferSettings(max_wait=120.0),
    }
    base.update(settings)
    return SidecarConfig(
        endpoints=tuple(parse_endpoint(a) for a in addresses),
        settings=BalancerSettings(**base),
        backend=backend or BackendOptions(),
        proxy=proxy or ProxyOptions(),
    )


def count_on(server: GremlinServerProcess, label: str = LABEL) -> int:
    """Vertices of `label` on the server itself, asked directly (not through the sidecar)."""
    connection = DriverRemoteConnection(server.url, "g")
    try:
        count: int = traversal().with_(connection).V().has_label(label).count().next()
        return count
    finally:
        connection.close()


def metrics_text(sidecar: SidecarThread) -> str:
    with urllib.request.urlopen(f"{sidecar.admin_url}/metrics", timeout=10) as answer:
        text: str = answer.read().decode("utf-8")
        return text


def settled(sidecar: SidecarThread) -> bool:
    """Nothing of any client is left in the sidecar: no client, no request, nothing buffered."""
    proxy = sidecar.sidecar.proxy
    return not proxy.clients and not proxy.exchanges and sidecar.balancer.buffered == 0


def statement_running_in_a_session(sidecar: SidecarThread) -> bool:
    """A client's session connection carries a statement (a probe's connection does not count)."""
    return any(
        client.pin is not None and client.pin.connection.in_flight == 1
        for client in list(sidecar.sidecar.proxy.clients)
    )


def leases_in_flight(sidecar: SidecarThread) -> int:
    return sum(h.in_flight for h in sidecar.balancer.hosts())


# -- a raw WebSocket client, to leave in every way a real client can ---------------------------


class RawClient:
    """A WebSocket client on a bare socket: it can leave with a close frame, with a FIN and no
    close frame, with a reset, or in the middle of a frame, and it can stop reading."""

    def __init__(self, url: str, receive_buffer: int | None = None) -> None:
        host_port = url.split("//", 1)[1].split("/", 1)[0]
        host, port = host_port.rsplit(":", 1)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:  # set before connecting, so the window stays small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(10)
        self.sock.connect((host, int(port)))
        upgrade_raw_websocket(self.sock, host_port)

    @staticmethod
    def frame(opcode: int, payload: bytes) -> bytes:
        mask = os.urandom(4)
        header = masked_frame_head(len(payload), 0x80 | opcode)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return header + mask + masked

    def send_binary(self, payload: bytes) -> None:
        self.sock.sendall(self.frame(0x2, payload))

    def send_text(self, text: str) -> None:
        self.sock.sendall(self.frame(0x1, text.encode("utf-8")))

    def close_with_frame(self) -> None:
        self.sock.sendall(self.frame(0x8, struct.pack("!H", 1000)))
        self.sock.close()

    def close_without_frame(self) -> None:
        self.sock.close()

    def reset(self) -> None:
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close_mid_frame(self, payload: bytes) -> None:
        whole = self.frame(0x2, payload)
        self.sock.sendall(whole[: len(whole) // 2])
        self.sock.close()


def add_vertex_frame(label: str = LABEL) -> bytes:
    message = RequestMessage(
        "traversal", "bytecode", {"gremlin": __.add_v(label).bytecode, "aliases": {"g": "g"}}
    )
    # __.add_v is anonymous; as a request's bytecode it reads g.addV(label).
    frame: bytes = GraphBinarySerializersV1().serialize_message(str(uuid.uuid4()), message)
    return frame


LEAVINGS: dict[str, Callable[[RawClient], None]] = {
    "close-frame": RawClient.close_with_frame,
    "fin-without-close-frame": RawClient.close_without_frame,
    "tcp-reset": RawClient.reset,
    "mid-frame": lambda client: client.close_mid_frame(add_vertex_frame("half")),
}


@pytest.fixture
def down_server(fleet: Fleet) -> GremlinServerProcess:
    """The first fleet server, killed: the sidecar's only backend is down (the fleet fixture
    starts it again for the next test if the test did not)."""
    server = next(iter(fleet))
    server.kill()
    return server


def buffered_then_left(
    sidecar: SidecarThread,
    server: GremlinServerProcess,
    leave: Callable[[RawClient], None],
    writes: int = 5,
    expect_buffered: int | None = None,
) -> None:
    """A client sends `writes` g.addV() while the only backend is down, then leaves by `leave`;
    then the backend starts and the sidecar finds it healthy."""
    client = RawClient(sidecar.url)
    for _ in range(writes):
        client.send_binary(add_vertex_frame())
    wanted = writes if expect_buffered is None else expect_buffered
    wait_until(lambda: sidecar.balancer.buffered == wanted, 10, f"{wanted} writes buffered")
    leave(client)
    wait_until(lambda: not sidecar.sidecar.proxy.clients, 10, "the sidecar to see the client go")
    server.restart()
    wait_until(
        lambda: sidecar.balancer.state_of(server.address) is HostState.HEALTHY,
        30,
        "the restarted backend to pass its probe",
    )
    wait_until(lambda: settled(sidecar), 30, "the sidecar to hold nothing of the client")


@pytest.mark.parametrize("way", sorted(LEAVINGS))
def test_buffered_writes_of_a_client_that_left_never_reach_the_backend(
    down_server: GremlinServerProcess, way: str
) -> None:
    with SidecarThread(config_for([down_server.address])) as sidecar:
        buffered_then_left(sidecar, down_server, LEAVINGS[way])
        assert count_on(down_server) == 0
        assert count_on(down_server, "half") == 0


def test_buffered_writes_of_a_client_at_its_request_cap_that_left_never_reach_the_backend(
    down_server: GremlinServerProcess,
) -> None:
    # Three requests in flight fill the cap: the sidecar stops reading this client (it holds
    # the fourth), so it must notice the client leaving without reading from it.
    proxy = ProxyOptions(memory=MemoryLimits(max_requests_per_client=3))
    with SidecarThread(config_for([down_server.address], proxy=proxy)) as sidecar:
        buffered_then_left(sidecar, down_server, RawClient.reset, writes=5, expect_buffered=3)
        assert count_on(down_server) == 0


def read_blob_frame() -> bytes:
    message = RequestMessage(
        "traversal",
        "bytecode",
        {"gremlin": __.V().has_label("big").values("blob").bytecode, "aliases": {"g": "g"}},
    )
    frame: bytes = GraphBinarySerializersV1().serialize_message(str(uuid.uuid4()), message)
    return frame


def test_buffered_writes_of_a_client_cut_off_for_not_reading_never_reach_the_backend(
    fleet: Fleet,
) -> None:
    # The writer is down, so the writes wait; a reader serves ~1 MB answers, which the client
    # never reads, so the sidecar cuts it off: it is made to leave, and its writes go with it.
    writer, reader = list(fleet)[:2]
    direct = Client(reader.url, "g")
    try:
        direct.submit("g.addV('big').property('blob', 'x' * 1000000)").all().result(30)
    finally:
        direct.close()
    writer.kill()
    memory = MemoryLimits(client_pause_bytes=1024 * 1024, client_max_queued_bytes=2 * 1024 * 1024)
    config = config_for(
        [f"{writer.address}?role=writer", f"{reader.address}?role=reader"],
        proxy=ProxyOptions(memory=memory),
    )
    with SidecarThread(config) as sidecar:
        client = RawClient(sidecar.url, receive_buffer=16 * 1024)
        for _ in range(5):
            client.send_binary(add_vertex_frame())
        wait_until(lambda: sidecar.balancer.buffered == 5, 10, "5 writes buffered")
        for _ in range(40):
            client.send_binary(read_blob_frame())
        cut_off = "gremlinlb_sidecar_clients_cut_off_total"
        registry = sidecar.sidecar.metrics.registry
        wait_until(lambda: registry.get_sample_value(cut_off) == 1, 30, "the client cut off")
        wait_until(lambda: not sidecar.sidecar.proxy.clients, 10, "the client gone")
        client.close_without_frame()
        writer.restart()
        wait_until(
            lambda: sidecar.balancer.state_of(writer.address) is HostState.HEALTHY,
            30,
            "the restarted writer to pass its probe",
        )
        wait_until(lambda: settled(sidecar), 30, "the sidecar to hold nothing of the client")
        assert count_on(writer) == 0


def test_requests_withdrawn_because_their_client_left_are_counted(
    down_server: GremlinServerProcess,
) -> None:
    with SidecarThread(config_for([down_server.address])) as sidecar:
        buffered_then_left(sidecar, down_server, RawClient.close_with_frame)
        withdrawn = sidecar.sidecar.metrics.registry.get_sample_value(
            "gremlinlb_sidecar_requests_withdrawn_total"
        )
        assert withdrawn == 5


# -- the request timeout runs from the send ------------------------------------------------------


@pytest.fixture
def slow_proxy(fleet: Fleet) -> Iterator[FaultProxy]:
    """The first server behind a proxy that passes every answer on 1.5 s late."""
    with FaultProxy(next(iter(fleet)).address, answer_delay=1.5) as proxy:
        yield proxy


def warm_up(gremlin: Client, proxy: FaultProxy) -> None:
    """One prompt request first, so the sidecar's connection to the host is open: what follows
    waits for room on it, not for it to open. Then answers are slow again."""
    delay, proxy.answer_delay = proxy.answer_delay, 0.0
    try:
        assert gremlin.submit("'warm'").all().result(30) == ["warm"]
    finally:
        proxy.answer_delay = delay


def test_request_that_waited_for_room_on_a_connection_times_out_from_its_send(
    slow_proxy: FaultProxy,
) -> None:
    # One connection carrying one request at a time: the second request waits 1.5 s for the
    # first to be answered, then its server needs 1.5 s, well inside request_timeout=2.5.
    one_at_a_time = BackendOptions(connections_per_host=1, max_in_flight_per_connection=1)
    config = config_for([slow_proxy.address], backend=one_at_a_time, request_timeout=2.5)
    with SidecarThread(config) as sidecar:
        gremlin = Client(sidecar.url, "g", pool_size=2)
        try:
            warm_up(gremlin, slow_proxy)
            first: Future[Any] = gremlin.submit_async("'first'")
            second: Future[Any] = gremlin.submit_async("'second'")
            answers = [first.result(30).all().result(30), second.result(30).all().result(30)]
        finally:
            gremlin.close()
        assert answers == [["first"], ["second"]]
        host = sidecar.balancer.hosts()[0]
        assert host.outcomes.get(Outcome.TIMEOUT, 0) == 0


def test_request_that_found_no_room_on_a_connection_within_max_wait_is_answered_not_sent(
    slow_proxy: FaultProxy,
) -> None:
    # The second request would wait 1.5 s for room; the wait for a connection is bounded by the
    # buffer's max_wait (0.5 s), and its failure says the request never left the sidecar.
    one_at_a_time = BackendOptions(connections_per_host=1, max_in_flight_per_connection=1)
    config = config_for(
        [slow_proxy.address],
        backend=one_at_a_time,
        request_timeout=2.5,
        buffer=BufferSettings(max_wait=0.5),
    )
    with SidecarThread(config) as sidecar:
        gremlin = Client(sidecar.url, "g", pool_size=2)
        try:
            warm_up(gremlin, slow_proxy)
            first: Future[Any] = gremlin.submit_async("'first'")
            wait_until(lambda: leases_in_flight(sidecar) == 1, 10, "the first request taken")
            second: Future[Any] = gremlin.submit_async("'second'")
            with pytest.raises(GremlinServerError) as refused:
                second.result(30).all().result(30)
            assert first.result(30).all().result(30) == ["first"]
        finally:
            gremlin.close()
        assert refused.value.status_code == 596
        assert "not sent" in refused.value.status_message
        host = sidecar.balancer.hosts()[0]
        assert host.outcomes.get(Outcome.TIMEOUT, 0) == 0
        assert host.state is HostState.HEALTHY


def test_write_of_a_client_that_left_while_it_waited_for_room_on_a_connection_is_never_sent(
    fleet: Fleet, slow_proxy: FaultProxy
) -> None:
    one_at_a_time = BackendOptions(connections_per_host=1, max_in_flight_per_connection=1)
    with SidecarThread(config_for([slow_proxy.address], backend=one_at_a_time)) as sidecar:
        gremlin = Client(sidecar.url, "g", pool_size=1)
        try:
            warm_up(gremlin, slow_proxy)
            first: Future[Any] = gremlin.submit_async(f"g.addV('{LABEL}').count()")
            wait_until(lambda: leases_in_flight(sidecar) == 1, 10, "the first write taken")
            client = RawClient(sidecar.url)
            client.send_binary(add_vertex_frame())
            # Its host is healthy, so it holds a lease while it waits for the connection.
            wait_until(lambda: leases_in_flight(sidecar) == 2, 10, "the second write waiting")
            client.reset()
            assert first.result(30).all().result(30) == [1]
        finally:
            gremlin.close()
        wait_until(lambda: settled(sidecar), 10, "the sidecar to hold nothing of the client")
        wait_until(lambda: leases_in_flight(sidecar) == 0, 10, "every lease back")
        assert count_on(next(iter(fleet))) == 1


# -- a client leaving says nothing about its host ------------------------------------------------


def session_eval(session: str, script: str) -> str:
    return json.dumps(
        {
            "requestId": str(uuid.uuid4()),
            "op": "eval",
            "processor": "session",
            "args": {"gremlin": script, "session": session, "language": "gremlin-groovy"},
        }
    )


def test_client_leaving_mid_session_statement_records_no_failure_against_its_host(
    slow_proxy: FaultProxy,
) -> None:
    with SidecarThread(config_for([slow_proxy.address])) as sidecar:
        client = RawClient(sidecar.url)
        client.send_text(session_eval(str(uuid.uuid4()), "1 + 1"))
        wait_until(lambda: statement_running_in_a_session(sidecar), 10, "the statement sent")
        client.reset()
        wait_until(lambda: settled(sidecar), 10, "the session to end with its client")
        wait_until(lambda: leases_in_flight(sidecar) == 0, 10, "the session's lease ended")
        host = sidecar.balancer.hosts()[0]
        assert host.state is HostState.HEALTHY
        assert host.outcomes.get(Outcome.CONNECTION_LOST, 0) == 0
        assert 'outcome="connection_lost"' not in metrics_text(sidecar)


# -- a removed host stays out of the metrics -----------------------------------------------------


def test_removed_host_keeps_no_request_series_after_its_last_request_ends(
    slow_proxy: FaultProxy,
) -> None:
    with SidecarThread(config_for([slow_proxy.address])) as sidecar:
        gremlin = Client(sidecar.url, "g", pool_size=1)
        try:
            pending: Future[Any] = gremlin.submit_async("'last'")
            wait_until(lambda: leases_in_flight(sidecar) == 1, 10, "the request on its way")
            sidecar.balancer.remove(slow_proxy.address, drain=True)
            assert pending.result(30).all().result(30) == ["last"]
        finally:
            gremlin.close()
        wait_until(lambda: not sidecar.balancer.hosts(), 10, "the drained host to go")
        series = [
            line
            for line in metrics_text(sidecar).splitlines()
            if line.startswith("gremlinlb_sidecar_backend_requests") and slow_proxy.address in line
        ]
        assert series == []
