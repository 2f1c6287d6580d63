"""The sidecar as a Gremlin endpoint: real Gremlin Servers behind it, real drivers in front.

Each server holds the same small graph (explicit ids) plus one `server` vertex naming it, so
an answer can be compared with a direct connection and can tell which server ran it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from gremlin_python.driver.client import Client
from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.driver.protocol import GremlinServerError
from gremlin_python.driver.request import RequestMessage
from gremlin_python.driver.serializer import (
    GraphBinarySerializersV1,
    GraphSONSerializersV2d0,
    GraphSONSerializersV3d0,
)
from gremlin_python.process.anonymous_traversal import traversal
from gremlin_python.process.graph_traversal import GraphTraversalSource, __
from gremlin_python.process.traversal import T
from gremlinlb.sidecar.config import SidecarConfig
from gremlinlb.sidecar.memory import MemoryLimits
from gremlinlb.sidecar.options import BackendOptions
from gremlinlb.sidecar.proxy import ProxyOptions
from gremlinlb.sidecar.testing import SidecarThread

from gremlinlb.core import (
    BalancerSettings,
    HealthCheckSettings,
    HostState,
    HostStatus,
    parse_endpoint,
)
from gremlinlb.devservers import Fleet, GremlinServerProcess
from gremlinlb.devservers.faults import FaultProxy
from gremlinlb.devservers.server import ephemeral_port
from tests.helpers import upgrade_raw_websocket, wait_until

pytestmark = pytest.mark.integration

SERIALIZERS: dict[str, Any] = {
    "graphbinary": GraphBinarySerializersV1,
    "graphson3": GraphSONSerializersV3d0,
    "graphson2": GraphSONSerializersV2d0,
}


def fast_config(servers: Sequence[GremlinServerProcess], **backend: Any) -> SidecarConfig:
    settings = BalancerSettings(
        health=HealthCheckSettings(interval=0.5, timeout=2.0, rise=1, fall=1),
        request_timeout=5.0,
        connect_timeout=2.0,
    )
    return SidecarConfig(
        endpoints=tuple(parse_endpoint(s.address) for s in servers),
        settings=settings,
        backend=BackendOptions(**backend),
    )


def load_graph(server: GremlinServerProcess) -> None:
    """The same little graph on every server, with explicit ids, written directly."""
    connection = DriverRemoteConnection(server.url, "g")
    try:
        g = traversal().with_(connection)
        for vid, name, age in [(1, "marko", 29), (2, "vadas", 27), (3, "josh", 32), (4, "lop", 0)]:
            g.add_v("person").property(T.id, vid).property("name", name).property(
                "age", age
            ).iterate()
        for eid, out_v, in_v, weight in [(7, 1, 2, 0.5), (8, 1, 3, 1.0), (9, 3, 4, 0.4)]:
            g.V(out_v).add_e("knows").to(__.V(in_v)).property(T.id, eid).property(
                "weight", weight
            ).iterate()
        g.add_v("server").property(T.id, 100).property("name", server.address).iterate()
    finally:
        connection.close()


@pytest.fixture
def servers(fleet: Fleet) -> Sequence[GremlinServerProcess]:
    for server in fleet:
        load_graph(server)
    return list(fleet)


@pytest.fixture
def sidecar(servers: Sequence[GremlinServerProcess]) -> Iterator[SidecarThread]:
    with SidecarThread(fast_config(servers)) as running:
        yield running


def remote(
    url: str, serializer: str = "graphbinary", pool_size: int | None = None
) -> DriverRemoteConnection:
    """gremlinpython's connection; pool_size None keeps the driver's default (which g.tx()
    needs: a session connection must have a pool of exactly one)."""
    return DriverRemoteConnection(
        url, "g", message_serializer=SERIALIZERS[serializer](), pool_size=pool_size
    )


def answered_by(g: GraphTraversalSource) -> str:
    names: list[str] = g.V().has_label("server").values("name").to_list()
    assert len(names) == 1
    return names[0]


QUERIES: dict[str, Any] = {
    "vertices": lambda g: g.V().has_label("person").order().by(T.id).to_list(),
    "edges": lambda g: g.E().order().by(T.id).to_list(),
    "element_maps": lambda g: g.V().has_label("person").order().by(T.id).element_map().to_list(),
    "edge_maps": lambda g: g.E().order().by(T.id).element_map().to_list(),
    "paths": lambda g: g.V(1).out().out().path().by("name").to_list(),
    "value_maps": lambda g: g.V().has_label("person").order().by(T.id).value_map(True).to_list(),
    "groups": lambda g: g.V().has_label("person").group().by("name").by(__.out().count()).to_list(),
    "projections": lambda g: (
        g.V(1).project("name", "friends").by("name").by(__.out().values("name").fold()).to_list()
    ),
}


@pytest.mark.parametrize("serializer", sorted(SERIALIZERS))
def test_results_equal_a_direct_connection_for_every_shape_and_serializer(
    sidecar: SidecarThread, servers: Sequence[GremlinServerProcess], serializer: str
) -> None:
    via, direct = remote(sidecar.url, serializer), remote(servers[0].url, serializer)
    try:
        g_via, g_direct = traversal().with_(via), traversal().with_(direct)
        for name, query in QUERIES.items():
            assert query(g_via) == query(g_direct), name
    finally:
        via.close()
        direct.close()


def test_streamed_result_of_many_batches_arrives_complete_and_in_order(
    sidecar: SidecarThread,
) -> None:
    connection = remote(sidecar.url)
    try:
        values = traversal().with_(connection).inject(*range(1500)).to_list()
    finally:
        connection.close()
    assert values == list(range(1500))


def test_each_partial_batch_is_forwarded_with_the_clients_request_id(
    sidecar: SidecarThread,
) -> None:
    request_id = uuid.uuid4()
    serializer = GraphBinarySerializersV1()
    message = RequestMessage(
        "traversal", "bytecode", {"gremlin": __.inject(*range(300)).bytecode, "aliases": {"g": "g"}}
    )

    async def exchange() -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as http, http.ws_connect(sidecar.url) as ws:
            await ws.send_bytes(serializer.serialize_message(str(request_id), message))
            answers: list[dict[str, Any]] = []
            while not answers or answers[-1]["status"]["code"] == 206:
                answers.append(serializer.deserialize_message((await ws.receive()).data))
            return answers

    answers = asyncio.run(exchange())
    assert [a["status"]["code"] for a in answers] == [206] * 4 + [200]
    assert {a["requestId"] for a in answers} == {str(request_id)}
    assert [t.object for a in answers for t in a["result"]["data"]] == list(range(300))


def test_requests_on_one_client_connection_rotate_over_every_server(
    sidecar: SidecarThread, servers: Sequence[GremlinServerProcess]
) -> None:
    connection = remote(sidecar.url, pool_size=1)
    try:
        g = traversal().with_(connection)
        served = Counter(answered_by(g) for _ in range(30))
    finally:
        connection.close()
    assert served == {s.address: 10 for s in servers}


def first_answers_of_a_fresh_sidecar(
    config: SidecarConfig, count: int
) -> tuple[list[str], list[HostStatus]]:
    """Who answered each of the first ``count`` requests of a sidecar used the moment it
    listens (its hosts' first probes not awaited by the test), and its hosts afterwards."""
    runner = SidecarThread(config)
    try:
        runner.start(settle=False)
        connection = remote(runner.url, pool_size=1)
        try:
            g = traversal().with_(connection)
            order = [answered_by(g) for _ in range(count)]
        finally:
            connection.close()
        return order, list(runner.balancer.hosts())
    finally:
        runner.stop()


def test_fresh_sidecar_spreads_its_first_requests_evenly_in_strict_rotation(
    servers: Sequence[GremlinServerProcess],
) -> None:
    """The first 3 x 10 requests go 10 to each server, in the listed order. The first server
    answers through a 0.3 s delay, so its first probe ends after the others', as a cold JVM's
    does: the first requests come before every first probe is in."""
    with FaultProxy(servers[0].address, answer_delay=0.3) as late:
        config = fast_config(servers)
        config = replace(config, endpoints=(parse_endpoint(late.address), *config.endpoints[1:]))
        order, _ = first_answers_of_a_fresh_sidecar(config, 30)
    assert order == [s.address for s in servers] * 10


def test_fresh_sidecar_with_an_initial_host_down_serves_its_first_requests_on_the_others(
    servers: Sequence[GremlinServerProcess],
) -> None:
    """A listed host with nothing listening ends its first probe at once (refused): the first
    requests neither wait for the connect timeout (30 s here) nor go to it, and rotate over
    the live hosts. The first live one answers through a 0.3 s delay, so its first probe ends
    after the other's, as a cold JVM's does: today's race made visible, not left to chance."""
    dead = parse_endpoint(f"127.0.0.1:{ephemeral_port()}")
    with FaultProxy(servers[0].address, answer_delay=0.3) as late:
        config = fast_config(servers)
        config = replace(
            config,
            endpoints=(parse_endpoint(late.address), dead, config.endpoints[1]),
            settings=replace(config.settings, connect_timeout=30.0),
        )
        order, hosts = first_answers_of_a_fresh_sidecar(config, 10)
    dead_host = next(h for h in hosts if h.endpoint == dead)
    assert order == [servers[0].address, servers[1].address] * 5
    assert (dead_host.state, dead_host.requests) == (HostState.DOWN, 0)


def test_graphbinary_and_graphson_clients_are_served_at_the_same_time(
    sidecar: SidecarThread,
) -> None:
    errors: list[BaseException] = []
    results: dict[str, list[Any]] = {}
    start = threading.Barrier(len(SERIALIZERS))

    def client(name: str) -> None:
        connection = remote(sidecar.url, name)
        try:
            g = traversal().with_(connection)
            start.wait(10)
            results[name] = [g.inject(name, i).to_list() for i in range(40)]
        except BaseException as error:  # reported by the assertion below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(name,)) for name in SERIALIZERS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    for name in SERIALIZERS:
        assert results[name] == [[name, i] for i in range(40)]


def test_two_clients_using_the_same_request_id_get_their_own_answers(
    servers: Sequence[GremlinServerProcess],
) -> None:
    # One server and one backend connection: without id rewriting both requests would share
    # an id on the same socket and their answers would cross.
    config = fast_config(servers[:1], connections_per_host=1)
    shared_id = str(uuid.uuid4())
    errors: list[BaseException] = []
    answers: dict[str, list[Any]] = {"A": [], "B": []}
    start = threading.Barrier(2)

    def client(url: str, tag: str) -> None:
        gremlin = Client(url, "g", pool_size=1)
        try:
            start.wait(10)
            for i in range(10):
                result = gremlin.submit(
                    "Thread.sleep(30); [tag, i]",
                    {"tag": tag, "i": i},
                    request_options={"requestId": shared_id},
                ).all()
                answers[tag].append(result.result(10))
        except BaseException as error:  # reported by the assertion below
            errors.append(error)
        finally:
            gremlin.close()

    with SidecarThread(config) as sidecar:
        threads = [threading.Thread(target=client, args=(sidecar.url, t)) for t in answers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert errors == []
    assert answers == {tag: [[tag, i] for i in range(10)] for tag in answers}


# -- malformed input -----------------------------------------------------------------------


async def send_and_receive(url: str, frame: bytes) -> aiohttp.WSMessage:
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.send_bytes(frame)
        return await ws.receive(timeout=10)


def inject_request(request_id: uuid.UUID, *values: Any) -> bytes:
    message = RequestMessage(
        "traversal", "bytecode", {"gremlin": __.inject(*values).bytecode, "aliases": {"g": "g"}}
    )
    frame: bytes = GraphBinarySerializersV1().serialize_message(str(request_id), message)
    return frame


def decoded(message: aiohttp.WSMessage) -> dict[str, Any]:
    assert message.type is aiohttp.WSMsgType.BINARY, message
    answer: dict[str, Any] = GraphBinarySerializersV1().deserialize_message(message.data)
    return answer


def test_unknown_op_is_answered_498_with_its_request_id(sidecar: SidecarThread) -> None:
    request_id = uuid.uuid4()
    frame = bytearray(inject_request(request_id, 1))
    frame[54:62] = b"bytecodX"  # the op string, after mime (33), version, id and length
    answer = decoded(asyncio.run(send_and_receive(sidecar.url, bytes(frame))))
    assert answer["requestId"] == str(request_id)
    assert answer["status"]["code"] == 498
    assert "bytecodX" in answer["status"]["message"]


def test_truncated_frame_is_answered_498_and_the_socket_keeps_serving(
    sidecar: SidecarThread,
) -> None:
    broken, good = uuid.uuid4(), uuid.uuid4()

    async def exchange() -> tuple[dict[str, Any], dict[str, Any]]:
        async with aiohttp.ClientSession() as http, http.ws_connect(sidecar.url) as ws:
            await ws.send_bytes(inject_request(broken, 1)[:56])
            first = decoded(await ws.receive(timeout=10))
            await ws.send_bytes(inject_request(good, 7))
            return first, decoded(await ws.receive(timeout=10))

    first, second = asyncio.run(exchange())
    assert (first["requestId"], first["status"]["code"]) == (str(broken), 498)
    assert (second["requestId"], second["status"]["code"]) == (str(good), 200)
    assert [t.object for t in second["result"]["data"]] == [7]


def test_frame_over_the_size_limit_is_answered_498_with_its_id(
    servers: Sequence[GremlinServerProcess],
) -> None:
    config = fast_config(servers)
    config = replace(config, proxy=ProxyOptions(max_message_bytes=64 * 1024))
    request_id = uuid.uuid4()
    with SidecarThread(config) as sidecar:
        message = asyncio.run(
            send_and_receive(sidecar.url, inject_request(request_id, "x" * 100_000))
        )
    answer = decoded(message)
    assert (answer["requestId"], answer["status"]["code"]) == (str(request_id), 498)
    assert "65536" in answer["status"]["message"]


def close_code_after_sending(url: str, payload: bytes) -> int:
    """The close code the sidecar answers ``payload`` (one binary frame) with, read while the
    frame is still being sent from another thread: a sidecar refusing a frame of a megabyte
    closes while the client is still sending it, and the reset that follows the close frame
    would otherwise end the client's send before it ever reads the close."""
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    header = struct.pack("!BBQ", 0x82, 0x80 | 127, len(payload)) + bytes(4)  # zero mask

    def send(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):  # the sidecar closed while this was still sending
            sock.sendall(header + payload)

    with socket.create_connection((host, int(port)), timeout=10) as sock:
        upgrade_raw_websocket(sock, host_port)
        sender = threading.Thread(target=send, args=(sock,), daemon=True)
        sender.start()
        received = b""
        while True:
            chunk = sock.recv(65536)
            assert chunk, f"the sidecar closed without a close frame after {received!r}"
            received += chunk
            opcode, size = received[0] & 0x0F, received[1] & 0x7F  # answers are short frames
            if len(received) >= 2 + size:
                assert opcode == 0x8, received
                code: int = struct.unpack("!H", received[2:4])[0]
                sender.join(10)
                return code


def test_frame_over_twice_the_size_limit_closes_that_socket_with_1009(
    servers: Sequence[GremlinServerProcess],
) -> None:
    options = ProxyOptions(max_message_bytes=64 * 1024)
    config = replace(fast_config(servers), proxy=options)
    with SidecarThread(config) as sidecar:
        huge = inject_request(uuid.uuid4(), "x" * options.hard_message_bytes)
        code = close_code_after_sending(sidecar.url, huge)
    assert code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG


def test_bad_mime_length_closes_only_that_socket_with_a_reason(sidecar: SidecarThread) -> None:
    bystander = remote(sidecar.url, pool_size=1)
    try:
        g = traversal().with_(bystander)
        assert g.inject(1).to_list() == [1]
        message = asyncio.run(send_and_receive(sidecar.url, b"\x00\x81garbage"))
        assert message.type is aiohttp.WSMsgType.CLOSE
        assert message.data == aiohttp.WSCloseCode.PROTOCOL_ERROR
        assert "mime type length" in (message.extra or "")
        assert g.inject(2).to_list() == [2]
    finally:
        bystander.close()


def eval_text(request_id: str, script: str, **args: Any) -> str:
    """A GraphSON text frame running `script`; `args` are added as raw JSON text."""
    extra = "".join(f',"{key}":{value}' for key, value in args.items())
    return (
        '{"requestId":'
        + request_id
        + ',"op":"eval","processor":"","args":{"gremlin":'
        + json.dumps(script)
        + extra
        + "}}"
    )


async def answers_until_closed(
    ws: aiohttp.ClientWebSocketResponse, count: int
) -> tuple[dict[str, dict[str, Any]], aiohttp.WSMessage | None]:
    """Text answers by request id, until `count` came or the socket closed (and how)."""
    answers: dict[str, dict[str, Any]] = {}
    while len(answers) < count:
        message = await ws.receive(timeout=20)
        if message.type is not aiohttp.WSMsgType.TEXT:
            return answers, message
        answer = GraphSONSerializersV3d0().deserialize_message(message.data)
        answers[answer["requestId"]] = answer
    return answers, None


SLOW_SCRIPT = "Thread.sleep(1500); 7"  # still running when the bad frame arrives


@pytest.mark.parametrize("bad_id", ["5", "null", '{"a":1}'], ids=["number", "null", "object"])
def test_graphson_id_that_is_no_uuid_closes_with_1002_once_requests_in_flight_are_answered(
    sidecar: SidecarThread, bad_id: str
) -> None:
    slow = str(uuid.uuid4())

    async def exchange() -> tuple[dict[str, dict[str, Any]], aiohttp.WSMessage]:
        async with aiohttp.ClientSession() as http, http.ws_connect(sidecar.url) as ws:
            await ws.send_str(eval_text(json.dumps(slow), SLOW_SCRIPT))
            await ws.send_str(eval_text(bad_id, "1"))
            answers, ending = await answers_until_closed(ws, 2)
            return answers, ending or await ws.receive(timeout=20)

    answers, ending = asyncio.run(exchange())
    assert list(answers) == [slow]
    assert (answers[slow]["status"]["code"], answers[slow]["result"]["data"]) == (200, [7])
    assert ending.type is aiohttp.WSMsgType.CLOSE
    assert ending.data == aiohttp.WSCloseCode.PROTOCOL_ERROR
    assert "is not a UUID" in (ending.extra or "")


def test_graphson_nested_100000_deep_is_answered_498_and_others_on_the_socket_are_served(
    sidecar: SidecarThread,
) -> None:
    slow, deep, after = (str(uuid.uuid4()) for _ in range(3))
    nested = "[" * 100_000 + "]" * 100_000

    async def exchange() -> tuple[dict[str, dict[str, Any]], aiohttp.WSMessage | None]:
        async with aiohttp.ClientSession() as http, http.ws_connect(sidecar.url) as ws:
            await ws.send_str(eval_text(json.dumps(slow), SLOW_SCRIPT))
            await ws.send_str(eval_text(json.dumps(deep), "1", nested=nested))
            await ws.send_str(eval_text(json.dumps(after), "8"))
            return await answers_until_closed(ws, 3)

    answers, ending = asyncio.run(exchange())
    assert ending is None
    assert answers[deep]["status"]["code"] == 498
    assert "too deeply" in answers[deep]["status"]["message"]
    assert (answers[slow]["status"]["code"], answers[slow]["result"]["data"]) == (200, [7])
    assert (answers[after]["status"]["code"], answers[after]["result"]["data"]) == (200, [8])
    assert all(host.state is HostState.HEALTHY for host in sidecar.balancer.hosts())


def test_client_authentication_is_refused_with_499_and_its_id(sidecar: SidecarThread) -> None:
    request_id = uuid.uuid4()
    message = RequestMessage("traversal", "authentication", {"sasl": "AHUAcA=="})
    frame = GraphBinarySerializersV1().serialize_message(str(request_id), message)
    answer = decoded(asyncio.run(send_and_receive(sidecar.url, frame)))
    assert (answer["requestId"], answer["status"]["code"]) == (str(request_id), 499)


def test_script_errors_come_back_as_the_servers_own_answer(sidecar: SidecarThread) -> None:
    gremlin = Client(sidecar.url, "g", pool_size=1)
    try:
        with pytest.raises(GremlinServerError) as raised:
            gremlin.submit("1/0").all().result(10)
        assert raised.value.status_code == 597
        assert gremlin.submit("[3]").all().result(10) == [3]
    finally:
        gremlin.close()


# -- sessions and transactions -------------------------------------------------------------


def count_everywhere(servers: Sequence[GremlinServerProcess], label: str) -> int:
    total = 0
    for server in servers:
        connection = DriverRemoteConnection(server.url, "g")
        try:
            total += traversal().with_(connection).V().has_label(label).count().next()
        finally:
            connection.close()
    return total


def test_committed_transaction_is_applied_once(
    sidecar: SidecarThread, servers: Sequence[GremlinServerProcess]
) -> None:
    connection = remote(sidecar.url)
    try:
        tx = traversal().with_(connection).tx()
        gtx = tx.begin()
        gtx.add_v("tx").property("name", "kept").iterate()
        gtx.add_v("tx").property("name", "also kept").iterate()
        assert gtx.V().has_label("tx").count().next() == 2
        tx.commit()
    finally:
        connection.close()
    assert count_everywhere(servers, "tx") == 2


def test_rolled_back_transaction_leaves_nothing(
    sidecar: SidecarThread, servers: Sequence[GremlinServerProcess]
) -> None:
    connection = remote(sidecar.url)
    try:
        tx = traversal().with_(connection).tx()
        gtx = tx.begin()
        gtx.add_v("tx").property("name", "gone").iterate()
        assert gtx.V().has_label("tx").count().next() == 1
        tx.rollback()
    finally:
        connection.close()
    assert count_everywhere(servers, "tx") == 0


def test_session_lease_ends_when_its_client_leaves(sidecar: SidecarThread) -> None:
    gremlin = Client(sidecar.url, "g", session=str(uuid.uuid4()))
    assert gremlin.submit("x = 41; x + 1").all().result(10) == [42]
    assert gremlin.submit("x").all().result(10) == [41]  # same session, same server
    assert sum(h.in_flight for h in sidecar.balancer.hosts()) == 1
    gremlin.close()
    wait_until(
        lambda: sum(h.in_flight for h in sidecar.balancer.hosts()) == 0, 5, "the session's end"
    )


def test_text_frames_are_answered_with_text_frames_carrying_the_clients_id(
    sidecar: SidecarThread,
) -> None:
    request_id = str(uuid.uuid4())
    body = {"requestId": request_id, "op": "eval", "processor": "", "args": {"gremlin": "[1, 2]"}}

    async def exchange() -> aiohttp.WSMessage:
        async with aiohttp.ClientSession() as http, http.ws_connect(sidecar.url) as ws:
            await ws.send_str(json.dumps(body))
            return await ws.receive(timeout=10)

    message = asyncio.run(exchange())
    assert message.type is aiohttp.WSMsgType.TEXT
    answer = GraphSONSerializersV3d0().deserialize_message(message.data)
    assert (answer["requestId"], answer["status"]["code"]) == (request_id, 200)
    assert answer["result"]["data"] == [1, 2]


def test_connections_that_never_finish_the_upgrade_are_closed_after_the_handshake_timeout(
    servers: Sequence[GremlinServerProcess],
) -> None:
    options = ProxyOptions(handshake_timeout=1.0)
    with SidecarThread(replace(fast_config(servers), proxy=options)) as sidecar:
        host, port = sidecar.sidecar.address.rsplit(":", 1)
        stalled = []
        for index in range(200):
            sock = socket.create_connection((host, int(port)), timeout=30)
            if index % 2:  # half send part of an upgrade, half send nothing at all
                sock.sendall(b"GET /gremlin HTTP/1.1\r\nHost: sidecar\r\nUpgrade: websocket\r\n")
            stalled.append(sock)
        try:
            closed = [sock.recv(1024) == b"" for sock in stalled]
        finally:
            for sock in stalled:
                sock.close()
        assert closed == [True] * 200


def test_an_upgraded_connection_idle_longer_than_the_handshake_timeout_stays_open(
    servers: Sequence[GremlinServerProcess],
) -> None:
    options = ProxyOptions(handshake_timeout=0.5)
    with SidecarThread(replace(fast_config(servers), proxy=options)) as sidecar:
        gremlin = Client(sidecar.url, "g", pool_size=1)
        try:
            assert gremlin.submit("1").all().result(10) == [1]
            # Idle until the handshake timeout demonstrably passed: a connection opened after
            # ours, that never upgrades, is closed by it.
            host, port = sidecar.sidecar.address.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=30) as stalled:
                assert stalled.recv(1024) == b""
            assert gremlin.submit("2").all().result(10) == [2]
        finally:
            gremlin.close()


def test_one_client_has_at_most_max_requests_per_client_in_flight_and_the_rest_wait(
    servers: Sequence[GremlinServerProcess],
) -> None:
    config = replace(
        fast_config(servers), proxy=ProxyOptions(memory=MemoryLimits(max_requests_per_client=2))
    )
    ids = [str(uuid.uuid4()) for _ in range(6)]
    most = 0
    done = threading.Event()

    with SidecarThread(config) as sidecar:

        def watch() -> None:
            nonlocal most
            while not done.wait(0.01):
                most = max(most, sum(h.in_flight for h in sidecar.balancer.hosts()))

        async def exchange() -> dict[str, dict[str, Any]]:
            async with aiohttp.ClientSession() as http, http.ws_connect(sidecar.url) as ws:
                for n, request_id in enumerate(ids):
                    await ws.send_str(eval_text(json.dumps(request_id), f"Thread.sleep(300); {n}"))
                answers, ending = await answers_until_closed(ws, len(ids))
                assert ending is None, ending
                return answers

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            answers = asyncio.run(exchange())
        finally:
            done.set()
            watcher.join()
    assert {request_id: answers[request_id]["result"]["data"] for request_id in ids} == {
        request_id: [n] for n, request_id in enumerate(ids)
    }
    assert most == 2
