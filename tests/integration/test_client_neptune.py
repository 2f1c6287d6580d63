"""The in-process client follows a Neptune cluster: `neptune=NeptuneSource(...)` instead of an
endpoint list. moto in server mode is the management API; real Gremlin Servers stand in for
the instances (`addresses`); real gremlinpython traversals; writes counted on the servers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from gremlin_python.process.anonymous_traversal import traversal

from gremlinlb import RoundRobinClientRemoteConnection
from gremlinlb.core import HostState
from gremlinlb.devservers import Fleet
from gremlinlb.neptune import NeptuneSource
from tests.client_support import count_label, fast_settings
from tests.helpers import wait_until
from tests.moto_support import (
    REGION,
    Listing,
    Moto,
    after_failover,
    await_eager_read,
    fail_over,
    initial,
    neptune_source,
    writer_dies,
)

pytestmark = pytest.mark.integration


@contextmanager
def following(
    moto: Moto, fleet: Fleet, refresh: float
) -> Iterator[RoundRobinClientRemoteConnection]:
    source = neptune_source(fleet, moto.url, refresh=refresh)
    rr = RoundRobinClientRemoteConnection(neptune=source, settings=fast_settings())
    try:
        yield rr
    finally:
        rr.close()


def listed(rr: RoundRobinClientRemoteConnection) -> Listing:
    return {
        (h.endpoint.address, h.endpoint.role.value, h.endpoint.zone)
        for h in rr.hosts()
        if h.state is not HostState.DRAINING
    }


def write(rr: RoundRobinClientRemoteConnection, label: str, count: int) -> None:
    g = traversal().with_(rr)
    for _ in range(count):
        g.add_v(label).iterate()


def test_the_writer_and_the_readers_are_listed_with_their_zones(moto: Moto, fleet: Fleet) -> None:
    with following(moto, fleet, refresh=60.0) as rr:
        assert listed(rr) == initial(fleet)  # read when the connection is made


def test_after_a_failover_writes_go_to_the_new_writer(moto: Moto, fleet: Fleet) -> None:
    with following(moto, fleet, refresh=0.2) as rr:
        write(rr, "before", 3)
        fail_over(moto)
        wait_until(lambda: listed(rr) == after_failover(fleet), 20, "the new writer listed")
        write(rr, "after", 3)
    assert [count_label(server, "before") for server in fleet[:3]] == [3, 0, 0]
    assert [count_label(server, "after") for server in fleet[:3]] == [0, 0, 3]


def test_when_the_writer_dies_the_new_writer_is_read_before_the_next_interval(
    moto: Moto, fleet: Fleet
) -> None:
    with following(moto, fleet, refresh=600.0) as rr:
        wait_until(lambda: all(rr.get_available().values()), 15, "every host probed")
        writer_dies(moto, fleet)
        await_eager_read(lambda: listed(rr), fleet)
        write(rr, "after-failover", 3)
    assert count_label(fleet[2], "after-failover") == 3


def test_a_cluster_that_cannot_be_read_is_refused_at_construction(moto: Moto) -> None:
    source = NeptuneSource(cluster="no-such-cluster", region=REGION, endpoint_url=moto.url)
    with pytest.raises(ConnectionError, match="cannot read Neptune cluster 'no-such-cluster'"):
        RoundRobinClientRemoteConnection(neptune=source)
