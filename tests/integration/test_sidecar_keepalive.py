"""Keepalive and recycling of the sidecar's backend connections.

Real Gremlin Servers, the real sidecar, real gremlinpython; the idle limit of a cloud load
balancer comes from the loopback fault proxy (``idle_close``), which also counts the
connections it accepted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest
from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.process.anonymous_traversal import traversal
from gremlin_python.process.graph_traversal import GraphTraversalSource
from gremlinlb.sidecar.config import SidecarConfig
from gremlinlb.sidecar.testing import SidecarThread

from gremlinlb.core import BalancerSettings, HealthCheckSettings, parse_endpoint
from gremlinlb.devservers import GremlinServerProcess
from gremlinlb.devservers.faults import FaultProxy
from tests.client_support import count_label, outlast_idle_close

pytestmark = pytest.mark.integration

HEALTH = HealthCheckSettings(interval=0.5, timeout=1.5, rise=1, fall=1)


def config_at(address: str, **settings: object) -> SidecarConfig:
    return SidecarConfig(
        endpoints=(parse_endpoint(address),),
        settings=BalancerSettings(health=HEALTH, **settings),  # type: ignore[arg-type]
    )


def writes_until(
    g: GraphTraversalSource, label: str, deadline: float, written: list[int]
) -> list[BaseException]:
    """Writes (never re-sent after a lost connection, so any lost one is an error) until
    `deadline`; each one answered is appended to `written`."""
    errors: list[BaseException] = []
    i = 0
    while time.monotonic() < deadline:
        try:
            g.add_v(label).property("i", i).iterate()
            written.append(i)
        except Exception as error:
            errors.append(error)
        i += 1
    return errors


def test_backend_connections_behind_an_idle_closing_proxy_are_kept_open_past_its_idle_close(
    idle_closing_proxy: FaultProxy, fleet: Sequence[GremlinServerProcess]
) -> None:
    config = config_at(idle_closing_proxy.address, keepalive_interval=1.0)
    with SidecarThread(config) as sidecar:
        connection = DriverRemoteConnection(sidecar.url, "g")
        try:
            g = traversal().with_(connection)
            for i in range(8):
                g.add_v("before").property("i", i).iterate()
            opened = idle_closing_proxy.counters.accepted
            outlast_idle_close(idle_closing_proxy)
            errors: list[BaseException] = []
            for i in range(8):
                try:
                    g.add_v("after").property("i", i).iterate()
                except Exception as error:
                    errors.append(error)
        finally:
            connection.close()
    assert errors == []
    assert count_label(fleet[0], "after") == 8
    # The witness alone was closed: the pings kept every connection open...
    assert idle_closing_proxy.counters.idle_closed == 1
    # ... and the server answered them: a missing pong would have closed and reopened one
    assert idle_closing_proxy.counters.accepted == opened + 1  # (+1: the witness)


def test_pooled_connections_past_max_age_are_replaced_under_load_without_a_failed_request(
    counting_proxy: FaultProxy, fleet: Sequence[GremlinServerProcess]
) -> None:
    config = config_at(counting_proxy.address, max_connection_age=1.0)
    with SidecarThread(config) as sidecar:
        connection = DriverRemoteConnection(sidecar.url, "g", pool_size=4)
        try:
            g = traversal().with_(connection)
            g.inject(1).iterate()  # the pool opened
            opened_before = counting_proxy.counters.accepted
            deadline = time.monotonic() + 4.0
            errors: list[BaseException] = []
            written: list[int] = []
            workers = [
                threading.Thread(
                    target=lambda: errors.extend(writes_until(g, "load", deadline, written))
                )
                for _ in range(4)
            ]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(60)
        finally:
            connection.close()
        opened = counting_proxy.counters.accepted - opened_before
    assert errors == []
    # 4 s at a 1 s maximum age: pooled (up to 2) and probe connections replaced several times
    assert opened >= 4
    assert count_label(fleet[0], "load") == len(written) > 0
