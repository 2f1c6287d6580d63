"""Gray failures through the sidecar: slow queries, oversized answers, silent servers, hosts
that accept TCP and never answer, hung and slow servers under load.

Real Gremlin Servers, the real sidecar; slow links and black holes come from the loopback
fault proxy (gremlinlb.devservers.faults). Executions are counted on the wire: the slow query
carries a 100 kB padding argument, so the bytes a server received say how often it ran.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace

import aiohttp
import pytest
from gremlin_python.driver.client import Client
from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.driver.protocol import GremlinServerError
from gremlin_python.process.anonymous_traversal import traversal
from gremlinlb.sidecar import frames
from gremlinlb.sidecar.config import SidecarConfig
from gremlinlb.sidecar.frames import GRAPHBINARY_CHANNEL
from gremlinlb.sidecar.options import BackendOptions
from gremlinlb.sidecar.proxy import ProxyOptions
from gremlinlb.sidecar.testing import SidecarThread

from gremlinlb.core import BalancerSettings, HealthCheckSettings, HostState, parse_endpoint
from gremlinlb.devservers import GremlinServerProcess
from gremlinlb.devservers.faults import FaultProxy
from tests.helpers import endless_read, proxies_in_front, wait_until
from tests.integration.test_sidecar_faults import Load

pytestmark = pytest.mark.integration

PADDING = "p" * 100_000  # makes one slow query's frame stand out in a proxy's byte count


def config_at(addresses: Sequence[str], **settings: object) -> SidecarConfig:
    base: dict[str, object] = {
        "health": HealthCheckSettings(interval=0.5, timeout=1.5, rise=1, fall=1),
        "request_timeout": 1.0,
        "connect_timeout": 1.0,
    }
    base.update(settings)
    return SidecarConfig(
        endpoints=tuple(parse_endpoint(a) for a in addresses),
        settings=BalancerSettings(**base),  # type: ignore[arg-type]
    )


def all_healthy(sidecar: SidecarThread) -> bool:
    return all(h.state is HostState.HEALTHY for h in sidecar.balancer.hosts())


def metric(sidecar: SidecarThread, line_start: str) -> float:
    """The value of the first metrics line starting with `line_start` (0 if absent)."""
    text = sidecar.sidecar.metrics.render().decode()
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture
def counting_proxies(servers: Sequence[GremlinServerProcess]) -> Iterator[list[FaultProxy]]:
    """A pass-through proxy in front of each server (no fault): it counts the bytes sent."""
    with proxies_in_front(servers) as proxies:
        yield proxies


def test_query_slower_than_the_timeout_runs_once_and_leaves_every_host_healthy(
    servers: Sequence[GremlinServerProcess], counting_proxies: list[FaultProxy]
) -> None:
    config = config_at([p.address for p in counting_proxies])
    with SidecarThread(config) as sidecar:
        wait_until(lambda: all_healthy(sidecar), 10, "every host to pass its first probe")
        connection = DriverRemoteConnection(sidecar.url, "g")
        try:
            g = traversal().with_(connection)
            # Loops until the server stops it after 5 s, far over request_timeout=1s.
            slow = endless_read(g, 5000, never=PADDING)
            with pytest.raises(GremlinServerError) as raised:
                slow.next()
            next_answer = g.V().has_label("server").count().next()
            states = [h.state for h in sidecar.balancer.hosts()]
        finally:
            connection.close()
    executions = sum(p.counters.bytes_up // len(PADDING) for p in counting_proxies)
    assert raised.value.status_code == 598
    assert "not re-sent elsewhere" in raised.value.status_message
    assert next_answer == 1
    assert states == [HostState.HEALTHY] * 3
    assert executions == 1


def test_answer_over_the_size_limit_fails_that_request_alone(
    servers: Sequence[GremlinServerProcess],
) -> None:
    server = servers[0]
    direct = DriverRemoteConnection(server.url, "g")
    try:  # a 2 MB property, written past the sidecar
        traversal().with_(direct).add_v("blob").property("data", "b" * 2_000_000).iterate()
    finally:
        direct.close()
    config = replace(
        config_at([server.address], request_timeout=10.0),
        backend=BackendOptions(max_message_bytes=1024 * 1024, connections_per_host=1),
        proxy=ProxyOptions(max_message_bytes=1024 * 1024),
    )
    writes_per_client = 20
    errors: list[BaseException] = []

    def write(client: int) -> None:
        connection = DriverRemoteConnection(sidecar.url, "g")
        try:
            g = traversal().with_(connection)
            for i in range(writes_per_client):
                g.add_v("w").property("n", f"{client}-{i}").iterate()
        except Exception as error:
            errors.append(error)
        finally:
            connection.close()

    with SidecarThread(config) as sidecar:
        wait_until(lambda: all_healthy(sidecar), 10, "the host to pass its first probe")
        writers = [threading.Thread(target=write, args=(c,)) for c in range(4)]
        for writer in writers:
            writer.start()
        reader = DriverRemoteConnection(sidecar.url, "g")
        try:
            with pytest.raises(GremlinServerError) as raised:
                traversal().with_(reader).V().has_label("blob").values("data").next()
        finally:
            reader.close()
        for writer in writers:
            writer.join(60)
        state = sidecar.balancer.state_of(server.address)
        connections = sidecar.sidecar.backends.connection_counts()
    direct = DriverRemoteConnection(server.url, "g")
    try:
        written = traversal().with_(direct).V().has_label("w").count().next()
    finally:
        direct.close()
    assert raised.value.status_code == 500
    assert "over the sidecar's limit" in raised.value.status_message
    assert errors == []
    assert written == 4 * writes_per_client
    assert state is HostState.HEALTHY
    assert sum(connections.values()) >= 1  # the shared connection was never torn down


def test_a_probe_answered_with_a_type_the_sidecar_cannot_decode_leaves_every_host_healthy(
    servers: Sequence[GremlinServerProcess],
) -> None:
    # tree() answers a Tree (GraphBinary 0x2b), a type gremlinpython cannot decode; a provider's
    # custom type (JanusGraph's RelationIdentifier) is the same case. Only the status counts.
    health = HealthCheckSettings(
        interval=0.5, timeout=1.5, rise=1, fall=1, probe_script="g.V().tree()"
    )
    with SidecarThread(config_at([s.address for s in servers], health=health)) as sidecar:
        passed = [
            sidecar.call(sidecar.sidecar.health.probe(host.endpoint))
            for host in sidecar.balancer.hosts()
        ]
        assert passed == [True, True, True]
        assert all_healthy(sidecar)


def undecodable_request(request_id: bytes) -> bytes:
    """A GraphBinary eval whose extra argument has a type code the server cannot decode:
    Gremlin Server 3.8.1 drops such a frame without answering."""
    mime = GRAPHBINARY_CHANNEL.mime.encode("ascii")
    body = bytearray([len(mime)]) + mime + bytes([frames.GRAPHBINARY_VERSION]) + request_id
    for text in ("eval", ""):
        body += len(text).to_bytes(4, "big") + text.encode()
    body += (2).to_bytes(4, "big")
    for text in ("gremlin", "1+1"):
        body += b"\x03\x00" + len(text).to_bytes(4, "big") + text.encode()
    body += b"\x03\x00" + (1).to_bytes(4, "big") + b"x" + b"\xee\x00" + (1).to_bytes(4, "big")
    return bytes(body)


async def send_unanswerable_frames(url: str, count: int) -> list[int]:
    """Send `count` frames the servers drop; return the status codes the sidecar answered."""
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        for _ in range(count):
            await ws.send_bytes(undecodable_request(uuid.uuid4().bytes))
        codes = []
        for _ in range(count):
            message = await asyncio.wait_for(ws.receive(), 30)
            codes.append(frames.parse_response(message.data, GRAPHBINARY_CHANNEL).code)
        return codes


def test_frames_the_servers_never_answer_eject_no_host(
    servers: Sequence[GremlinServerProcess],
) -> None:
    with SidecarThread(config_at([s.address for s in servers])) as sidecar:
        wait_until(lambda: all_healthy(sidecar), 10, "every host to pass its first probe")
        codes = asyncio.run(send_unanswerable_frames(sidecar.url, 12))
        states = [h.state for h in sidecar.balancer.hosts()]
        gremlin = Client(sidecar.url, "g", pool_size=1)
        try:
            after = gremlin.submit("g.V().hasLabel('server').count()").all().result(10)
        finally:
            gremlin.close()
    assert codes == [frames.SERVER_TIMEOUT] * 12
    assert states == [HostState.HEALTHY] * 3
    assert after == [1]


def test_host_that_accepts_tcp_and_never_upgrades_gets_no_client_request(
    servers: Sequence[GremlinServerProcess],
) -> None:
    with FaultProxy(servers[0].address, black_hole=True) as hole:
        addresses = [hole.address, servers[1].address, servers[2].address]
        with SidecarThread(config_at(addresses)) as sidecar:
            connection = DriverRemoteConnection(sidecar.url, "g")
            try:
                g = traversal().with_(connection)
                served = [g.V().has_label("server").values("name").next() for _ in range(30)]
            finally:
                connection.close()
            hole_state = sidecar.balancer.state_of(hole.address)
            attempts_on_hole = metric(
                sidecar, f'gremlinlb_sidecar_backend_requests_total{{host="{hole.address}"'
            )
    assert set(served) == {servers[1].address, servers[2].address}
    assert hole_state in (HostState.JOINING, HostState.DOWN)
    assert attempts_on_hole == 0


def test_reads_stay_answered_by_healthy_servers_while_one_hangs_under_load(
    servers: Sequence[GremlinServerProcess],
) -> None:
    victim = servers[2]
    config = config_at([s.address for s in servers], request_timeout=10.0)
    with SidecarThread(config) as sidecar, Load(sidecar.url, threads=8) as load:
        load.wait_for(300)
        victim.pause()
        try:
            mark = len(load.served)
            load.wait_for(600)
            # On a quiet machine 600 reads take less than the stuck rule's 1 s floor: the
            # hung host leaves rotation (stuck, or its probes time out) while the load goes on.
            wait_until(
                lambda: (
                    sidecar.balancer.state_of(victim.address) in (HostState.EJECTED, HostState.DOWN)
                ),
                15,
                "the hung host out of rotation",
            )
            moved = metric(sidecar, "gremlinlb_sidecar_hedges_sent_total") + metric(
                sidecar, "gremlinlb_sidecar_redispatched_total"
            )
            # counted before the victim resumes: once back, it may rightly serve again
            answered_while_hung = load.since(mark + 100)
        finally:
            victim.resume()
    assert load.errors == []
    assert victim.address not in answered_while_hung
    assert moved >= 1


def test_slow_server_is_taken_out_and_reads_go_to_the_others(
    servers: Sequence[GremlinServerProcess],
) -> None:
    slow = servers[1]
    with FaultProxy(slow.address, answer_delay=0.15) as delayed:
        addresses = [servers[0].address, delayed.address, servers[2].address]
        with SidecarThread(config_at(addresses, request_timeout=10.0)) as sidecar:
            with Load(sidecar.url, threads=8) as load:
                wait_until(
                    lambda: sidecar.balancer.state_of(delayed.address) is HostState.EJECTED,
                    30,
                    "the slow host's ejection",
                )
                mark = len(load.served)
                load.wait_for(200)
            slow_ejections = metric(sidecar, 'gremlinlb_sidecar_ejections_total{reason="slow"}')
            ewma_series = metric(
                sidecar,
                f'gremlinlb_sidecar_host_ewma_latency_seconds{{host="{delayed.address}"}}',
            )
    assert load.errors == []
    # Each of the 8 client threads may have had one answer forwarded just before the ejection.
    assert set(load.since(mark + 8)) <= {servers[0].address, servers[2].address}
    assert slow_ejections >= 1
    assert ewma_series > 0.1


def test_writes_are_never_hedged_or_re_sent_when_a_server_hangs(
    servers: Sequence[GremlinServerProcess],
) -> None:
    victim = servers[0]
    config = config_at([s.address for s in servers], request_timeout=2.0)
    answered: list[str] = []
    failed: list[str] = []
    with SidecarThread(config) as sidecar:
        wait_until(lambda: all_healthy(sidecar), 10, "every host to pass its first probe")

        def write(client: int) -> None:
            connection = DriverRemoteConnection(sidecar.url, "g")
            try:
                g = traversal().with_(connection)
                for i in range(40):
                    name = f"{client}-{i}"
                    try:
                        g.add_v("w").property("n", name).iterate()
                        answered.append(name)
                    except GremlinServerError:
                        failed.append(name)
            finally:
                connection.close()

        writers = [threading.Thread(target=write, args=(c,)) for c in range(4)]
        for writer in writers:
            writer.start()
        wait_until(lambda: len(answered) >= 4, 30, "the writes to be answered")
        victim.pause()
        wait_until(lambda: bool(failed), 30, "a write to time out on the paused server")
        victim.resume()
        for writer in writers:
            writer.join(120)
        hedges = metric(sidecar, "gremlinlb_sidecar_hedges_sent_total")
    found: Counter[str] = Counter()

    def every_write_ran() -> bool:  # also those the paused server had queued, which run now
        found.clear()
        for server in servers:
            connection = DriverRemoteConnection(server.url, "g")
            try:
                g = traversal().with_(connection)
                found.update(g.V().has_label("w").values("n").to_list())
            finally:
                connection.close()
        return set(found) == set(answered) | set(failed)

    wait_until(every_write_ran, 30, "every write to have run")
    assert len(answered) + len(failed) == 160
    assert max(found.values()) == 1  # nothing ran twice
    assert set(answered) <= set(found)
    assert hedges == 0


def test_long_statement_in_a_session_answers_that_request_and_keeps_the_session(
    servers: Sequence[GremlinServerProcess],
) -> None:
    config = config_at([s.address for s in servers], request_timeout=3.0)
    with SidecarThread(config) as sidecar:
        wait_until(lambda: all_healthy(sidecar), 10, "every host to pass its first probe")
        session = Client(sidecar.url, "g", session=str(uuid.uuid4()))
        try:
            session.submit("x = 41").all().result(10)
            with pytest.raises(GremlinServerError) as raised:
                session.submit("Thread.sleep(4000); 'late'").all().result(15)
            # Sent while the late statement still runs: the session runs one at a time.
            after = session.submit("x + 1").all().result(15)
        finally:
            session.close()
        states = [h.state for h in sidecar.balancer.hosts()]
    assert raised.value.status_code == 598
    assert "session stays open" in raised.value.status_message
    assert after == [42]
    assert states == [HostState.HEALTHY] * 3
