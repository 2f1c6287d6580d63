"""Neptune's own errors, met for real: the sidecar following a cluster (moto in server mode)
and the in-process client, whose instances are Neptune fronts
(`gremlinlb.devservers.neptunefront`) before real Gremlin Servers, driven by real gremlinpython.

Each front learns its role from moto as a Neptune instance knows its own; as a reader it
refuses writes with ReadOnlyViolationException without forwarding them, and it can answer
writes ConcurrentModificationException (rolled back: not forwarded) or throttle. Writes are
counted on the servers themselves: what a front refused never reached them.
"""

from __future__ import annotations

import concurrent.futures
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.driver.protocol import GremlinServerError
from gremlin_python.process.anonymous_traversal import traversal
from gremlinlb.sidecar.config import SidecarConfig
from gremlinlb.sidecar.testing import SidecarThread

from gremlinlb import RoundRobinClientRemoteConnection
from gremlinlb.core import (
    BalancerSettings,
    BudgetSettings,
    BufferSettings,
    HealthCheckSettings,
    HedgeSettings,
    HostState,
)
from gremlinlb.core.endpoints import parse_endpoint
from gremlinlb.devservers import Fleet
from gremlinlb.devservers.neptunefront import NeptuneFront
from gremlinlb.neptune import NeptuneSource, describe
from tests.client_support import ReadLoop, count_label
from tests.helpers import wait_until
from tests.moto_support import CLUSTER, INSTANCES, REGION, Moto

pytestmark = pytest.mark.integration


def settings(
    budget: BudgetSettings | None = None, request_timeout: float = 10.0
) -> BalancerSettings:
    """Quick health checks, no hedges (every attempt a spec counts is a retry)."""
    return BalancerSettings(
        health=HealthCheckSettings(interval=0.5, timeout=2.0, rise=1, fall=1),
        buffer=BufferSettings(max_wait=5.0),
        request_timeout=request_timeout,
        hedge=HedgeSettings(enabled=False),
        budget=budget or BudgetSettings(),
    )


def start_sidecar(
    moto: Moto, fronts: list[NeptuneFront], budget: BudgetSettings | None = None
) -> SidecarThread:
    source = NeptuneSource(
        cluster=CLUSTER,
        region=REGION,
        endpoint_url=moto.url,
        refresh=600.0,  # only a write refused by a reader makes it read the cluster again
        scheme="ws",
        addresses={name: front.address for name, front in zip(INSTANCES, fronts, strict=True)},
    )
    return SidecarThread(SidecarConfig(settings=settings(budget), neptune=source))


@pytest.fixture
def sidecar(moto: Moto, fronts: list[NeptuneFront]) -> Iterator[SidecarThread]:
    with start_sidecar(moto, fronts) as running:
        wait_for_roles(running, fronts, writer=0)
        yield running


def wait_for_roles(sidecar: SidecarThread, fronts: list[NeptuneFront], writer: int) -> None:
    wanted = {
        (front.address, "writer" if i == writer else "reader") for i, front in enumerate(fronts)
    }

    def listed() -> bool:
        hosts = sidecar.balancer.hosts()
        return {(h.endpoint.address, h.endpoint.role.value) for h in hosts} == wanted and all(
            h.state is HostState.HEALTHY for h in hosts
        )

    wait_until(listed, 20, f"the host list {wanted}, every host healthy")


def fail_over_to_r2(moto: Moto, fronts: list[NeptuneFront]) -> None:
    """Fail the cluster over to r2; returns once w1's front knows it is a reader (as the
    instance would), while the sidecar's own next read of the cluster is far off."""
    moto.client.failover_db_cluster(DBClusterIdentifier=CLUSTER, TargetDBInstanceIdentifier="r2")
    wait_until(lambda: fronts[0].writer is False, 10, "w1 a reader")


def test_a_failover_under_load_re_routes_refused_writes_to_the_new_writer_once_each(
    sidecar: SidecarThread, moto: Moto, fleet: Fleet, fronts: list[NeptuneFront]
) -> None:
    acknowledged = 0
    with ReadLoop(sidecar.url) as reads:
        connection = DriverRemoteConnection(sidecar.url, "g")
        try:
            g = traversal().with_(connection)
            for i in range(30):
                if i == 10:
                    fail_over_to_r2(moto, fronts)
                g.add_v("load").property("n", i).iterate()
                acknowledged += 1
        finally:
            connection.close()
    counts = [count_label(server, "load") for server in fleet[:3]]
    assert fronts[0].answered["ReadOnlyViolationException"] >= 1  # the old writer refused
    assert sum(counts) == acknowledged == 30  # every acknowledged write, none twice
    assert counts == [10, 0, 20]  # none on a reader
    assert reads.errors == []
    assert len(reads.reads) > 0


def by_hand(fronts: list[NeptuneFront], writer: int) -> tuple[str, ...]:
    """The fronts as a host list written by hand (or pushed), `writer` the writer."""
    return tuple(
        f"ws://{front.address}/gremlin?role={'writer' if i == writer else 'reader'}"
        for i, front in enumerate(fronts)
    )


def admin(sidecar: SidecarThread, method: str, path: str, body: Any = None) -> Any:
    """A call of the sidecar's admin API (with its token); the JSON answer, whatever the status."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{sidecar.admin_url}{path}", data=data, method=method)
    request.add_header("Authorization", f"Bearer {sidecar.token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return json.loads(error.read())


def write_one(url: str, label: str) -> None:
    connection = DriverRemoteConnection(url, "g")
    try:
        traversal().with_(connection).add_v(label).iterate()
    finally:
        connection.close()


def test_a_sidecar_given_its_list_by_hand_gives_back_read_only_violation_at_the_deadline(
    moto: Moto, fleet: Fleet, fronts: list[NeptuneFront]
) -> None:
    endpoints = tuple(parse_endpoint(text) for text in by_hand(fronts, writer=0))
    config = SidecarConfig(settings=settings(request_timeout=3.0), endpoints=endpoints)
    with SidecarThread(config) as running:  # nothing reads the cluster, nobody pushes
        wait_for_roles(running, fronts, writer=0)
        fail_over_to_r2(moto, fronts)
        with pytest.raises(GremlinServerError) as refused:
            write_one(running.url, "refused")
        reported = admin(running, "GET", "/readyz/backends")["read_only_violations"]
    assert '"code":"ReadOnlyViolationException"' in str(refused.value)  # Neptune's, unchanged
    assert reported == 1  # it waited for a new list that never came
    assert [count_label(server, "refused") for server in fleet[:3]] == [0, 0, 0]


def test_a_pushed_sidecar_holds_a_refused_write_until_a_list_names_the_new_writer(
    moto: Moto, fleet: Fleet, fronts: list[NeptuneFront]
) -> None:
    endpoints = tuple(parse_endpoint(text) for text in by_hand(fronts, writer=0))
    with (
        SidecarThread(SidecarConfig(settings=settings(), endpoints=endpoints)) as running,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        wait_for_roles(running, fronts, writer=0)
        fail_over_to_r2(moto, fronts)
        written = pool.submit(write_one, running.url, "held")

        def reported() -> bool:
            return bool(admin(running, "GET", "/readyz/backends")["read_only_violations"] >= 1)

        wait_until(reported, 10, "the suspected failover reported")
        assert not written.done()  # held, not refused
        pushed = admin(running, "PUT", "/v1/hosts", {"generation": 1, "hosts": by_hand(fronts, 2)})
        assert pushed["generation"] == 1, pushed
        written.result(10)
    assert fronts[0].answered["ReadOnlyViolationException"] == 1
    assert [count_label(server, "held") for server in fleet[:3]] == [0, 0, 1]


def test_a_write_answered_concurrent_modification_once_is_applied_exactly_once(
    sidecar: SidecarThread, fleet: Fleet, fronts: list[NeptuneFront]
) -> None:
    connection = DriverRemoteConnection(sidecar.url, "g")
    try:
        g = traversal().with_(connection)
        for _ in range(3):
            fronts[0].conflicts = 1  # this write's first attempt is rolled back
            g.add_v("conflicted").iterate()
    finally:
        connection.close()
    assert fronts[0].answered["ConcurrentModificationException"] == 3
    assert count_label(fleet[0], "conflicted") == 3


def test_with_the_retry_budget_spent_the_client_sees_neptunes_concurrent_modification(
    moto: Moto, fleet: Fleet, fronts: list[NeptuneFront]
) -> None:
    no_extra = BudgetSettings(ratio=0.0, min_per_second=0.0)
    with start_sidecar(moto, fronts, no_extra) as running:
        wait_for_roles(running, fronts, writer=0)
        fronts[0].conflicts = 1
        connection = DriverRemoteConnection(running.url, "g")
        try:
            g = traversal().with_(connection)
            with pytest.raises(GremlinServerError) as refused:
                g.add_v("refused").iterate()
        finally:
            connection.close()
    assert '"code":"ConcurrentModificationException"' in str(refused.value)
    assert count_label(fleet[0], "refused") == 0


def test_throttled_reads_are_answered_elsewhere_and_leave_the_host_healthy(
    sidecar: SidecarThread, fronts: list[NeptuneFront]
) -> None:
    fronts[1].throttle = 5
    connection = DriverRemoteConnection(sidecar.url, "g")
    try:
        g = traversal().with_(connection)
        answers = [g.inject(1).next() for _ in range(20)]
    finally:
        connection.close()
    assert answers == [1] * 20
    assert fronts[1].answered["ThrottlingException"] == 5
    assert sidecar.balancer.state_of(fronts[1].address) is HostState.HEALTHY


# -- the in-process client ------------------------------------------------------------------


def source_of(moto: Moto, fronts: list[NeptuneFront]) -> NeptuneSource:
    """The cluster as the client reads it: moto's instances served by the fronts; a refresh
    interval far beyond the spec, so only a read at once can show a failover in time."""
    return NeptuneSource(
        cluster=CLUSTER,
        region=REGION,
        endpoint_url=moto.url,
        refresh=600.0,
        scheme="ws",
        addresses={name: front.address for name, front in zip(INSTANCES, fronts, strict=True)},
    )


@pytest.fixture
def client(moto: Moto, fronts: list[NeptuneFront]) -> Iterator[RoundRobinClientRemoteConnection]:
    """A client given the cluster's hosts by hand: no topology source."""
    hosts = [e.text for e in describe(source_of(moto, fronts))]
    rr = RoundRobinClientRemoteConnection(hosts, settings=settings())
    try:
        yield rr
    finally:
        rr.close()


def test_the_client_retries_a_write_answered_concurrent_modification_on_the_writer(
    client: RoundRobinClientRemoteConnection,
    fleet: Fleet,
    fronts: list[NeptuneFront],
) -> None:
    g = traversal().with_(client)
    for _ in range(3):
        fronts[0].conflicts = 1
        g.add_v("conflicted").iterate()
    assert fronts[0].answered["ConcurrentModificationException"] == 3
    assert count_label(fleet[0], "conflicted") == 3


def test_a_client_following_the_cluster_re_sends_a_write_refused_by_a_reader_to_the_new_writer(
    moto: Moto,
    fleet: Fleet,
    fronts: list[NeptuneFront],
) -> None:
    rr = RoundRobinClientRemoteConnection(neptune=source_of(moto, fronts), settings=settings())
    try:
        g = traversal().with_(rr)
        g.add_v("before").iterate()
        fail_over_to_r2(moto, fronts)
        for _ in range(3):
            g.add_v("after").iterate()
    finally:
        rr.close()
    assert fronts[0].answered["ReadOnlyViolationException"] == 1
    assert [count_label(server, "before") for server in fleet[:3]] == [1, 0, 0]
    assert [count_label(server, "after") for server in fleet[:3]] == [0, 0, 3]


def test_without_a_topology_source_the_client_raises_neptunes_read_only_violation(
    client: RoundRobinClientRemoteConnection,
    moto: Moto,
    fleet: Fleet,
    fronts: list[NeptuneFront],
) -> None:
    fail_over_to_r2(moto, fronts)
    with pytest.raises(GremlinServerError) as refused:
        traversal().with_(client).add_v("refused").iterate()
    assert '"code":"ReadOnlyViolationException"' in str(refused.value)
    assert [count_label(server, "refused") for server in fleet[:3]] == [0, 0, 0]
