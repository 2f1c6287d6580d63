"""Gray failures through RoundRobinClientRemoteConnection: slow, hung and restarted servers,
answers the client cannot read, and long statements in transactions. Real Gremlin Servers and
real gremlinpython; a hung server is SIGSTOPped, a slow one sits behind the fault proxy."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence

import pytest
from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.driver.protocol import GremlinServerError
from gremlin_python.process.anonymous_traversal import traversal
from gremlin_python.process.graph_traversal import GraphTraversalSource

from gremlinlb import (
    HealthCheckSettings,
    RequestMayHaveBeenAppliedError,
    RoundRobinClientRemoteConnection,
)
from gremlinlb.client.errors import AnswerNotReadableError
from gremlinlb.core import EventKind, HostEvent, HostState, Outcome, ResponseTimeoutError
from gremlinlb.devservers import GremlinServerProcess
from gremlinlb.devservers.faults import FaultProxy
from tests.client_support import answered_by, count_label, fast_settings, serving
from tests.helpers import endless_read, name_servers, wait_until

pytestmark = pytest.mark.integration

THREADS = 6


@pytest.fixture
def rr(servers: Sequence[GremlinServerProcess]) -> Iterator[RoundRobinClientRemoteConnection]:
    connection = RoundRobinClientRemoteConnection(
        [s.address for s in servers], settings=fast_settings(request_timeout=10.0)
    )
    yield serving(connection)
    connection.close()


def outcomes(rr: RoundRobinClientRemoteConnection) -> Counter[Outcome]:
    total: Counter[Outcome] = Counter()
    for host in rr.hosts():
        total.update(host.outcomes)
    return total


def states(rr: RoundRobinClientRemoteConnection) -> dict[str, HostState]:
    return {h.endpoint.address: h.state for h in rr.hosts()}


def run_threads(work: Callable[[int], None], threads: int = THREADS) -> list[BaseException]:
    """Run `work(thread)` on several threads at once; return what they raised."""
    errors: list[BaseException] = []

    def guarded(thread: int) -> None:
        try:
            work(thread)
        except BaseException as error:  # surfaced by the caller's assertion
            errors.append(error)

    workers = [threading.Thread(target=guarded, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert not any(w.is_alive() for w in workers), "a load thread never finished"
    return errors


def read_load(g: GraphTraversalSource, reads: int) -> Callable[[int], None]:
    def work(thread: int) -> None:
        for i in range(reads):
            value = thread * 1000 + i
            assert g.inject(value).to_list() == [value]

    return work


def test_a_read_slower_than_request_timeout_runs_once_and_leaves_every_host_healthy(
    servers: Sequence[GremlinServerProcess],
) -> None:
    rr = RoundRobinClientRemoteConnection(
        [s.address for s in servers], settings=fast_settings(request_timeout=1.0)
    )
    try:
        g = traversal().with_(serving(rr))
        with pytest.raises(ResponseTimeoutError, match=r"was sent to .* no answer came within"):
            endless_read(g, 4000).to_list()
        assert outcomes(rr) == Counter({Outcome.TIMEOUT: 1})  # ran once: not retried elsewhere
        assert g.inject(5).to_list() == [5]
        assert set(states(rr).values()) == {HostState.HEALTHY}
        assert rr.balancer.stats().ejections == {}
    finally:
        rr.close()


def test_an_answer_gremlinpython_cannot_decode_fails_that_request_alone(
    rr: RoundRobinClientRemoteConnection, servers: Sequence[GremlinServerProcess]
) -> None:
    g = traversal().with_(rr)
    with pytest.raises(AnswerNotReadableError, match=r"could not decode .* stays in rotation"):
        g.V().tree().to_list()  # a Tree: GraphBinary type 0x2b, unknown to gremlinpython
    assert outcomes(rr) == Counter({Outcome.CLIENT_ERROR: 1})  # not retried elsewhere
    assert {answered_by(g) for _ in range(6)} == {s.address for s in servers}
    assert set(states(rr).values()) == {HostState.HEALTHY}
    assert rr.balancer.stats().ejections == {}


def test_a_probe_answered_with_a_type_gremlinpython_cannot_decode_leaves_every_host_healthy(
    servers: Sequence[GremlinServerProcess],
) -> None:
    # A probe asks whether the server answers, not whether this client can read the answer (a
    # JanusGraph vertex's RelationIdentifier ids are such a type); tree() answers a Tree,
    # GraphBinary type 0x2b, which gremlinpython cannot decode.
    health = HealthCheckSettings(
        interval=0.5, timeout=2.0, rise=1, fall=1, probe_script="g.V().tree()"
    )
    rr = RoundRobinClientRemoteConnection(
        [s.address for s in servers], settings=fast_settings(health=health)
    )
    try:
        serving(rr)  # every host passed its first probe
        rr.check_health_now()  # and one more round: fall=1 takes a host out on one failure
        assert set(states(rr).values()) == {HostState.HEALTHY}
        g = traversal().with_(rr)
        assert {answered_by(g) for _ in range(6)} == {s.address for s in servers}
    finally:
        rr.close()


def test_a_request_the_server_cannot_read_gets_the_servers_error_and_marks_no_host(
    rr: RoundRobinClientRemoteConnection, servers: Sequence[GremlinServerProcess]
) -> None:
    g = traversal().with_(rr)
    # gremlinpython writes an arbitrary object in a way Gremlin Server cannot read; the server
    # answers 499 without the request's id
    with pytest.raises(GremlinServerError, match="499"):
        g.inject(object()).to_list()
    assert outcomes(rr) == Counter({Outcome.SERVER_ERROR: 1})
    assert {answered_by(g) for _ in range(6)} == {s.address for s in servers}
    assert set(states(rr).values()) == {HostState.HEALTHY}


def test_a_hung_server_under_load_is_taken_out_while_every_read_is_answered(
    rr: RoundRobinClientRemoteConnection, servers: Sequence[GremlinServerProcess]
) -> None:
    g = traversal().with_(rr)
    read_load(g, 30)(0)  # enough answers for an adaptive hedge delay
    hung = servers[2]
    hung.pause()
    errors = run_threads(read_load(g, 40))
    assert errors == []
    status = {h.endpoint.address: h for h in rr.hosts()}[hung.address]
    # Out of rotation: taken down when it answered no ping (its reads then went elsewhere),
    # or ejected as stuck, or down by its failing probe, whichever came first on a busy
    # machine; either way no later read waited on it.
    assert status.state in (HostState.EJECTED, HostState.DOWN)


def test_a_slow_server_under_load_is_ejected_while_every_read_is_answered(
    servers: Sequence[GremlinServerProcess],
) -> None:
    # 0.4 s: many times its peers' latency even when a busy machine slows them down
    with FaultProxy(servers[2].address, answer_delay=0.4) as slow:
        rr = RoundRobinClientRemoteConnection(
            [servers[0].address, servers[1].address, slow.address],
            settings=fast_settings(request_timeout=10.0),
        )
        try:
            g = traversal().with_(serving(rr))
            events: list[HostEvent] = []
            rr.balancer.subscribe(events.append)
            errors = run_threads(read_load(g, 30))
            assert errors == []
            # Ejected as slow, or as stuck while its first answers lag, or down: its pong
            # comes 0.8 s late (the upgrade's answer and the pong 0.4 s each), which on a busy
            # machine is past the ping budget (1 s) that tells a busy server from a hung one.
            out = {e.state for e in events if e.endpoint.address == slow.address}
            assert out & {HostState.EJECTED, HostState.DOWN}
            assert {h.endpoint.address: h.state for h in rr.hosts()}[servers[0].address] is (
                HostState.HEALTHY
            )
        finally:
            rr.close()


def test_writes_under_a_hung_server_are_never_hedged_or_sent_twice(
    servers: Sequence[GremlinServerProcess],
) -> None:
    rr = RoundRobinClientRemoteConnection(
        [s.address for s in servers], settings=fast_settings(request_timeout=3.0)
    )
    maybe_applied: list[str] = []
    written: list[str] = []
    try:
        g = traversal().with_(serving(rr))
        read_load(g, 30)(0)
        servers[2].pause()

        def work(thread: int) -> None:
            for i in range(12):
                if thread % 2:  # readers keep the hosts busy, so hedging is in play
                    assert g.inject(i).to_list() == [i]
                    continue
                key = f"{thread}-{i}"
                try:
                    g.add_v("w").property("key", key).iterate()
                except RequestMayHaveBeenAppliedError:
                    maybe_applied.append(key)
                else:
                    written.append(key)

        assert run_threads(work) == []
    finally:
        servers[2].resume()
        rr.close()
    assert len(written) + len(maybe_applied) == 3 * 12
    wait_until(lambda: all(s.answers() for s in servers), 15, "every server answering")
    keys: Counter[str] = Counter()
    for server in servers:
        keys.update(key_counts(server))
    assert all(keys[k] == 1 for k in written), keys
    assert all(keys[k] <= 1 for k in maybe_applied), keys
    assert max(keys.values()) == 1


def key_counts(server: GremlinServerProcess) -> Counter[str]:
    direct = DriverRemoteConnection(server.url, "g")
    try:
        found: list[str] = traversal().with_(direct).V().has_label("w").values("key").to_list()
        return Counter(found)
    finally:
        direct.close()


def test_a_restarted_server_is_not_marked_down_again_after_its_probe_passed(
    rr: RoundRobinClientRemoteConnection, servers: Sequence[GremlinServerProcess]
) -> None:
    g = traversal().with_(rr)
    for _ in range(30):
        answered_by(g)  # every pooled socket to every server is open now
    events: list[HostEvent] = []
    rr.balancer.subscribe(events.append)
    restarted = servers[1]
    restarted.kill()
    wait_until(lambda: not rr.get_available()[restarted.url], 15, "the kill noticed")
    restarted.restart()
    name_servers([restarted])
    wait_until(lambda: rr.get_available()[restarted.url], 15, "its probe to pass")
    back = len(events)
    answers = Counter(answered_by(g) for _ in range(30))
    assert restarted.address in answers
    after = [e for e in events[back:] if e.kind is EventKind.STATE_CHANGED]
    assert [e for e in after if e.endpoint.address == restarted.address] == []
    assert states(rr)[restarted.address] is HostState.HEALTHY


def test_a_statement_answered_after_request_timeout_keeps_its_transaction_and_its_host(
    extra_server: GremlinServerProcess,
) -> None:
    # every answer comes 1.5 s late; probes (handshake and answer: 3 s) still pass
    health = HealthCheckSettings(interval=0.5, timeout=6.0, rise=1, fall=1)
    with FaultProxy(extra_server.address, answer_delay=1.5) as slow:
        rr = RoundRobinClientRemoteConnection(
            [slow.address], settings=fast_settings(request_timeout=1.0, health=health)
        )
        try:
            tx = traversal().with_(serving(rr)).tx()
            gtx = tx.begin()
            gtx.add_v("long").iterate()  # answered 1.5 s later: past request_timeout
            gtx.add_v("long").iterate()
            tx.commit()
            assert count_label(extra_server, "long") == 2
            assert states(rr)[slow.address] is HostState.HEALTHY
            assert Outcome.TIMEOUT not in outcomes(rr)
        finally:
            rr.close()
