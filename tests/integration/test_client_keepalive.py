"""Keepalive and recycling of the in-process client's backend sockets.

Real Gremlin Servers and real gremlinpython; the idle limit of a cloud load balancer comes from
the loopback fault proxy (``idle_close``), which also counts the connections it accepted.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence

import pytest
from gremlin_python.process.anonymous_traversal import traversal
from gremlin_python.process.graph_traversal import GraphTraversalSource

from gremlinlb import HealthCheckSettings, RoundRobinClientRemoteConnection
from gremlinlb.core import Outcome
from gremlinlb.devservers import GremlinServerProcess
from gremlinlb.devservers.faults import FaultProxy
from tests.client_support import count_label, fast_settings, outlast_idle_close, serving

pytestmark = pytest.mark.integration

# probed once at start, then rarely: the proxy's connection count is then the request sockets'
QUIET_HEALTH = HealthCheckSettings(interval=60.0, timeout=2.0, rise=1, fall=1)


def outcomes(rr: RoundRobinClientRemoteConnection) -> Counter[Outcome]:
    total: Counter[Outcome] = Counter()
    for host in rr.hosts():
        total.update(host.outcomes)
    return total


def writes_until(g: GraphTraversalSource, label: str, deadline: float) -> list[BaseException]:
    """Writes (never re-sent by the client, so any lost one is an error) until `deadline`."""
    errors: list[BaseException] = []
    i = 0
    while time.monotonic() < deadline:
        try:
            g.add_v(label).property("i", i).iterate()
        except Exception as error:
            errors.append(error)
        i += 1
    return errors


def test_sockets_behind_an_idle_closing_proxy_are_kept_open_and_serve_past_its_idle_close(
    idle_closing_proxy: FaultProxy,
) -> None:
    rr = RoundRobinClientRemoteConnection(
        [idle_closing_proxy.address],
        settings=fast_settings(health=QUIET_HEALTH, keepalive_interval=1.0),
        pool_size=4,
    )
    try:
        g = traversal().with_(serving(rr))
        for i in range(8):  # every pooled socket opened and used
            g.add_v("before").property("i", i).iterate()
        opened = idle_closing_proxy.counters.accepted
        outlast_idle_close(idle_closing_proxy)
        errors: list[BaseException] = []
        for i in range(8):
            try:
                g.add_v("after").property("i", i).iterate()  # writes are never re-sent
            except Exception as error:
                errors.append(error)
        assert errors == []
        assert outcomes(rr) == Counter({Outcome.SUCCESS: 16})
        # The witness alone was closed and opened: the pings kept every pooled socket open.
        assert idle_closing_proxy.counters.idle_closed == 1
        assert idle_closing_proxy.counters.accepted == opened + 1  # none had to be reopened
    finally:
        rr.close()


def test_sockets_past_max_connection_age_are_replaced_under_load_without_a_failed_request(
    counting_proxy: FaultProxy, fleet: Sequence[GremlinServerProcess]
) -> None:
    pool_size = 2
    rr = RoundRobinClientRemoteConnection(
        [counting_proxy.address],
        settings=fast_settings(health=QUIET_HEALTH, max_connection_age=1.0),
        pool_size=pool_size,
    )
    try:
        g = traversal().with_(serving(rr))
        opened_before = counting_proxy.counters.accepted  # the first probe's
        deadline = time.monotonic() + 4.0
        errors: list[BaseException] = []
        workers = [
            threading.Thread(target=lambda: errors.extend(writes_until(g, "load", deadline)))
            for _ in range(pool_size)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        assert errors == []
        assert set(outcomes(rr)) == {Outcome.SUCCESS}
        # 4 s of load at a 1 s maximum age: each socket was replaced at least twice
        assert counting_proxy.counters.accepted - opened_before >= 3 * pool_size
        assert count_label(fleet[0], "load") == outcomes(rr)[Outcome.SUCCESS]
    finally:
        rr.close()


def test_a_transaction_outlives_max_connection_age_on_its_own_socket(
    counting_proxy: FaultProxy, fleet: Sequence[GremlinServerProcess]
) -> None:
    rr = RoundRobinClientRemoteConnection(
        [counting_proxy.address], settings=fast_settings(max_connection_age=1.0)
    )
    try:
        g = traversal().with_(serving(rr))
        tx = g.tx()
        gtx = tx.begin()
        gtx.add_v("tx").iterate()
        # Time itself is the scenario (the session's socket outlives two maximum ages, and
        # nothing observable marks a session socket's age): a sleep, then the positive signal,
        # the second write answered in the same transaction.
        time.sleep(2.5)
        gtx.add_v("tx").iterate()
        tx.commit()
        assert count_label(fleet[0], "tx") == 2
    finally:
        rr.close()
