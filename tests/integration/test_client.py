"""RoundRobinClientRemoteConnection against real Gremlin Servers and the real gremlinpython driver.

Each server holds one `server` vertex naming it, so a traversal's answer says which server ran it.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence

import pytest
from gremlin_python.process.anonymous_traversal import traversal
from gremlin_python.process.traversal import P

from gremlinlb import (
    BufferFullError,
    BufferSettings,
    BufferTimeoutError,
    RequestMayHaveBeenAppliedError,
    RoundRobinClientRemoteConnection,
    SessionLostError,
    UnknownEndpointError,
)
from gremlinlb.core import HostState
from gremlinlb.devservers import GremlinServerProcess
from gremlinlb.devservers.faults import FaultProxy
from gremlinlb.devservers.server import ephemeral_port
from tests.client_support import answered_by, count_label, fast_settings, serving, values
from tests.helpers import name_servers, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def rr(servers: Sequence[GremlinServerProcess]) -> Iterator[RoundRobinClientRemoteConnection]:
    connection = RoundRobinClientRemoteConnection(
        [s.address for s in servers], settings=fast_settings()
    )
    yield serving(connection)
    connection.close()


def test_traversals_rotate_over_three_servers_in_exact_order(
    rr: RoundRobinClientRemoteConnection, servers: Sequence[GremlinServerProcess]
) -> None:
    g = traversal().with_(rr)
    order = [answered_by(g) for _ in range(6)]
    names = [s.address for s in servers]
    assert order == names + names


def test_fresh_client_spreads_its_first_traversals_evenly_in_strict_rotation(
    servers: Sequence[GremlinServerProcess],
) -> None:
    """The README's promise holds from the first traversal, not only once the hosts' first
    probes happen to be in: the first 3 x 10 traversals go 10 to each, in the given order."""
    rr = RoundRobinClientRemoteConnection([s.address for s in servers], settings=fast_settings())
    try:
        g = traversal().with_(rr)
        order = [answered_by(g) for _ in range(30)]
    finally:
        rr.close()
    assert order == [s.address for s in servers] * 10


def test_fresh_client_with_an_initial_host_down_serves_its_first_traversals_on_the_others(
    servers: Sequence[GremlinServerProcess],
) -> None:
    """A listed host with nothing listening ends its first probe at once (refused): the first
    traversals neither wait for the connect timeout (30 s here) nor go to it, and rotate over
    the live hosts. The first live one answers through a 0.3 s delay, so its first probe ends
    after the other's, as a cold JVM's does: today's race made visible, not left to chance."""
    dead = f"127.0.0.1:{ephemeral_port()}"
    with FaultProxy(servers[0].address, answer_delay=0.3) as late:
        listed = [late.address, dead, servers[1].address]
        rr = RoundRobinClientRemoteConnection(listed, settings=fast_settings(connect_timeout=30.0))
        try:
            g = traversal().with_(rr)
            order = [answered_by(g) for _ in range(10)]
            dead_host = next(h for h in rr.hosts() if h.endpoint.address == dead)
        finally:
            rr.close()
    assert order == [servers[0].address, servers[1].address] * 5
    assert (dead_host.state, dead_host.requests) == (HostState.DOWN, 0)


def test_with_remote_still_works_for_older_code(rr: RoundRobinClientRemoteConnection) -> None:
    with pytest.warns(DeprecationWarning, match="with_remote"):
        g = traversal().with_remote(rr)
    assert g.inject(7).to_list() == [7]


def test_sixteen_threads_get_every_result_exactly_once(
    rr: RoundRobinClientRemoteConnection, servers: Sequence[GremlinServerProcess]
) -> None:
    g = traversal().with_(rr)
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def worker(thread: int) -> None:
        try:
            for i in range(25):
                value = thread * 1000 + i
                results.setdefault(thread, []).extend(g.inject(value).to_list())
        except BaseException as error:  # surfaced by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    for thread in range(16):
        assert results[thread] == [thread * 1000 + i for i in range(25)]
    served = {s.endpoint.address: s.requests for s in rr.hosts()}
    assert sum(served.values()) >= 16 * 25  # a hedged read is an attempt on two hosts
    assert all(count > 0 for count in served.values()), served


def test_killed_server_is_skipped_with_zero_failed_reads(
    rr: RoundRobinClientRemoteConnection, servers: Sequence[GremlinServerProcess]
) -> None:
    g = traversal().with_(rr)
    for _ in range(6):
        answered_by(g)
    servers[1].kill()
    answers = Counter(answered_by(g) for _ in range(30))
    assert servers[1].address not in answers
    assert set(answers) == {servers[0].address, servers[2].address}
    assert rr.get_available()[servers[1].url] is False


Doomed = tuple[
    RoundRobinClientRemoteConnection, GremlinServerProcess, GremlinServerProcess, FaultProxy
]


@pytest.fixture
def doomed_pair(servers: Sequence[GremlinServerProcess]) -> Iterator[Doomed]:
    """A one-socket-per-host client whose next request goes to a victim that is now hung,
    behind a pass-through proxy whose byte count says when a request has reached it."""
    victim, bystander = servers[0], servers[1]
    with FaultProxy(victim.address) as relay:
        rr = RoundRobinClientRemoteConnection(
            [relay.address, bystander.address], settings=fast_settings(), pool_size=1
        )
        try:
            g = traversal().with_(serving(rr))
            assert answered_by(g) == victim.address  # opens the socket to the victim
            assert answered_by(g) == bystander.address  # the next request goes to the victim
            victim.pause()  # it will be sent and never answered...
            yield rr, victim, bystander, relay
        finally:
            rr.close()


PAD = "p" * 20_000  # far more than a probe's bytes: the relay's count says the request passed


def reached(relay: FaultProxy, since: int) -> None:
    """Wait until the padded request sent last has been written to the relay's server (a
    request only leased to it may still be found undeliverable and sent elsewhere unharmed)."""
    wait_until(
        lambda: relay.counters.bytes_up >= since + len(PAD), 10, "the request to reach the victim"
    )


def test_write_in_flight_when_its_server_dies_is_not_run_again(
    doomed_pair: Doomed,
) -> None:
    rr, victim, bystander, relay = doomed_pair
    g = traversal().with_(rr)
    before = relay.counters.bytes_up
    pending = rr.submit_async(g.add_v("order").property("id", 1).property("pad", PAD).bytecode)
    reached(relay, before)
    victim.kill()  # ...then the connection dies under it
    with pytest.raises(RequestMayHaveBeenAppliedError, match="may or may not have been applied"):
        pending.result(timeout=30)
    assert count_label(bystander, "order") == 0


def test_read_in_flight_when_its_server_dies_is_answered_by_another(
    doomed_pair: Doomed,
) -> None:
    rr, victim, bystander, relay = doomed_pair
    g = traversal().with_(rr)
    before = relay.counters.bytes_up
    pending = rr.submit_async(g.V().has_label("server").values("name").is_(P.neq(PAD)).bytecode)
    reached(relay, before)
    victim.kill()
    assert values(pending.result(timeout=30)) == [bystander.address]


def test_hung_server_is_detected_by_timeout_and_reads_still_succeed(
    rr: RoundRobinClientRemoteConnection, servers: Sequence[GremlinServerProcess]
) -> None:
    g = traversal().with_(rr)
    for _ in range(3):
        answered_by(g)  # warm every connection
    servers[2].pause()
    answers = [answered_by(g) for _ in range(6)]
    assert servers[2].address not in answers
    assert rr.balancer.state_of(servers[2].address) is HostState.DOWN
    last_error = {h.endpoint.address: h.last_error for h in rr.hosts()}[servers[2].address]
    assert last_error is not None
    assert "timed out" in last_error or "no answer within" in last_error


def test_restarted_server_is_back_in_rotation_by_health_checks_alone(
    rr: RoundRobinClientRemoteConnection, servers: Sequence[GremlinServerProcess]
) -> None:
    g = traversal().with_(rr)
    servers[1].kill()
    for _ in range(3):
        answered_by(g)
    assert rr.get_available()[servers[1].url] is False
    servers[1].restart()
    name_servers([servers[1]])
    # No request goes to it meanwhile: only a passing health check can bring it back.
    wait_until(lambda: rr.get_available()[servers[1].url], 30, "a passing health check")
    assert servers[1].address in {answered_by(g) for _ in range(3)}


def test_host_added_at_runtime_receives_traffic(
    rr: RoundRobinClientRemoteConnection, extra_server: GremlinServerProcess
) -> None:
    name_servers([extra_server])
    rr.add_host(extra_server.address)
    serving(rr)  # it takes requests once its first probe passed
    g = traversal().with_(rr)
    assert extra_server.address in {answered_by(g) for _ in range(4)}


def test_removed_host_receives_no_more_traffic(
    rr: RoundRobinClientRemoteConnection, servers: Sequence[GremlinServerProcess]
) -> None:
    rr.remove_host(servers[0].address)
    g = traversal().with_(rr)
    assert servers[0].address not in {answered_by(g) for _ in range(6)}
    assert servers[0].url not in rr.get_available()


def test_removing_an_unknown_host_is_a_clear_error(rr: RoundRobinClientRemoteConnection) -> None:
    with pytest.raises(UnknownEndpointError, match="not one of the hosts"):
        rr.remove_host("127.0.0.1:1")


def test_host_that_accepts_sockets_but_never_answers_is_not_healthy(
    servers: Sequence[GremlinServerProcess],
) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel accepts connections; nothing ever answers
        port = silent.getsockname()[1]
        rr = RoundRobinClientRemoteConnection(
            [servers[0].address, f"127.0.0.1:{port}"], settings=fast_settings()
        )
        try:
            g = traversal().with_(rr)
            assert [answered_by(g) for _ in range(4)] == [servers[0].address] * 4
            rr.check_health_now()
            assert rr.get_available()[f"ws://127.0.0.1:{port}/gremlin"] is False
        finally:
            rr.close()


def test_requests_wait_while_no_server_is_up_and_all_complete_after_recovery(
    extra_server: GremlinServerProcess,
) -> None:
    rr = RoundRobinClientRemoteConnection([extra_server.address], settings=fast_settings())
    try:
        g = traversal().with_(rr)
        g.inject(0).to_list()
        extra_server.kill()
        # Until the kill is noticed, a write may still go out on the old socket and then fail
        # as "may have been applied"; this test is about requests that arrive after that.
        wait_until(lambda: not rr.get_available()[extra_server.url], 10, "the kill noticed")
        pending = [rr.submit_async(g.add_v("queued").property("seq", i).bytecode) for i in range(5)]
        wait_until(lambda: rr.balancer.buffered == 5, 15, "five buffered requests")
        extra_server.restart()
        for future in pending:
            future.result(timeout=30)
        seqs = g.V().has_label("queued").values("seq").to_list()
        assert sorted(seqs) == [0, 1, 2, 3, 4]
    finally:
        rr.close()


def test_buffer_refuses_beyond_max_elements_naming_the_bound(
    extra_server: GremlinServerProcess,
) -> None:
    settings = fast_settings(buffer=BufferSettings(max_elements=2, max_wait=30))
    rr = RoundRobinClientRemoteConnection([extra_server.address], settings=settings)
    try:
        g = traversal().with_(rr)
        extra_server.kill()
        waiting = [rr.submit_async(g.inject(i).bytecode) for i in range(2)]
        wait_until(lambda: rr.balancer.buffered == 2, 15, "two buffered requests")
        with pytest.raises(BufferFullError, match="max_elements=2"):
            g.inject(99).to_list()
        extra_server.restart()
        assert [values(f.result(timeout=30)) for f in waiting] == [[0], [1]]
    finally:
        rr.close()


def test_buffer_refuses_a_request_larger_than_max_bytes(extra_server: GremlinServerProcess) -> None:
    settings = fast_settings(buffer=BufferSettings(max_bytes=200, max_wait=30))
    rr = RoundRobinClientRemoteConnection([extra_server.address], settings=settings)
    try:
        g = traversal().with_(rr)
        extra_server.kill()
        with pytest.raises(BufferFullError, match="max_bytes=200"):
            g.inject("x" * 500).to_list()
    finally:
        rr.close()


def test_buffered_request_fails_after_max_wait(extra_server: GremlinServerProcess) -> None:
    settings = fast_settings(buffer=BufferSettings(max_wait=1.0))
    rr = RoundRobinClientRemoteConnection([extra_server.address], settings=settings)
    try:
        g = traversal().with_(rr)
        extra_server.kill()
        started = time.monotonic()
        with pytest.raises(BufferTimeoutError, match=r"max_wait=1\.0"):
            g.inject(1).to_list()
        assert time.monotonic() - started >= 1.0
    finally:
        rr.close()


def test_transaction_commit_lands_on_one_server_only(
    rr: RoundRobinClientRemoteConnection, servers: Sequence[GremlinServerProcess]
) -> None:
    g = traversal().with_(rr)
    tx = g.tx()
    gtx = tx.begin()
    for i in range(4):
        gtx.add_v("txv").property("i", i).iterate()
    tx.commit()
    counts = [count_label(s, "txv") for s in servers]
    assert sorted(counts) == [0, 0, 4]


def test_transaction_rollback_leaves_no_trace(
    rr: RoundRobinClientRemoteConnection, servers: Sequence[GremlinServerProcess]
) -> None:
    g = traversal().with_(rr)
    tx = g.tx()
    gtx = tx.begin()
    for i in range(3):
        gtx.add_v("gone").property("i", i).iterate()
    assert gtx.V().has_label("gone").count().next() == 3  # visible inside the transaction
    tx.rollback()
    assert [count_label(s, "gone") for s in servers] == [0, 0, 0]


def test_request_waits_rather_than_fails_when_more_hosts_are_dead_than_max_attempts(
    servers: Sequence[GremlinServerProcess],
) -> None:
    rr = RoundRobinClientRemoteConnection(
        [servers[0].address, servers[1].address], settings=fast_settings(max_attempts=1)
    )
    try:
        g = traversal().with_(rr)
        servers[0].kill()
        servers[1].kill()
        pending = rr.submit_async(g.inject(42).bytecode)
        wait_until(lambda: rr.balancer.buffered == 1, 15, "the request to wait in the buffer")
        servers[1].restart()
        assert values(pending.result(timeout=30)) == [42]
    finally:
        rr.close()


def test_transaction_whose_server_dies_fails_with_session_lost(
    extra_server: GremlinServerProcess,
) -> None:
    rr = RoundRobinClientRemoteConnection([extra_server.address], settings=fast_settings())
    try:
        tx = traversal().with_(rr).tx()
        gtx = tx.begin()
        gtx.add_v("doomed").iterate()
        extra_server.kill()
        with pytest.raises(SessionLostError, match="rolls back uncommitted work"):
            gtx.add_v("doomed").iterate()
    finally:
        rr.close()


def test_reads_in_flight_when_every_server_dies_wait_and_complete_after_recovery(
    servers: Sequence[GremlinServerProcess],
) -> None:
    # A read written to both servers before each died may have been received twice: with
    # max_attempts 3 it has one attempt left, which waits for a server.
    rr = RoundRobinClientRemoteConnection(
        [servers[0].address, servers[1].address],
        settings=fast_settings(max_attempts=3, request_timeout=20.0),
    )
    try:
        g = traversal().with_(rr)
        for _ in range(4):
            g.inject(0).to_list()  # open sockets to both servers
        servers[0].pause()
        servers[1].pause()
        pending = [rr.submit_async(g.inject(i).bytecode) for i in range(4)]

        def in_flight_on(*hung: GremlinServerProcess) -> int:
            return sum(len(rr.balancer.in_flight(s.address)) for s in hung)

        wait_until(lambda: in_flight_on(servers[0], servers[1]) == 4, 10, "the reads to be sent")
        servers[0].kill()  # its reads fail over to the other server, still hung...
        wait_until(lambda: in_flight_on(servers[1]) == 4, 15, "the reads to fail over")
        servers[1].kill()  # ...which dies too: every read has now failed on every server
        wait_until(lambda: rr.balancer.buffered == 4, 15, "the four reads to wait")
        servers[1].restart()
        answers = [values(f.result(timeout=30)) for f in pending]
        assert answers == [[0], [1], [2], [3]]
    finally:
        rr.close()
