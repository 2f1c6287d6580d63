"""How the standalone sidecar reads a Neptune cluster: selectors (role, zone, instance tags),
backoff when the management API throttles, and a read at once when every writer fails.

moto in server mode is the API (it never throttles: a loopback front answers AWS's real
throttling XML before it, which botocore parses and retries); real Gremlin Servers stand in
for the instances (`addresses`).
"""

from __future__ import annotations

import urllib.request

import pytest
from gremlinlb.sidecar.testing import SidecarThread

from gremlinlb.core import HostState
from gremlinlb.devservers import Fleet
from gremlinlb.neptune import NeptuneTopology
from tests.client_support import count_label
from tests.helpers import wait_until
from tests.integration.test_sidecar_neptune import following, follows, listed, write_through
from tests.moto_support import (
    Moto,
    ThrottlingFront,
    after_failover,
    await_eager_read,
    fail_over,
    initial,
    writer_dies,
)

pytestmark = pytest.mark.integration


def metrics(sidecar: SidecarThread) -> str:
    with urllib.request.urlopen(f"{sidecar.admin_url}/metrics", timeout=10) as response:
        text: str = response.read().decode()
        return text


def topology_of(sidecar: SidecarThread) -> NeptuneTopology:
    topology = sidecar.sidecar.topology
    assert topology is not None
    return topology


def test_the_role_selector_lists_only_the_readers(moto: Moto, fleet: Fleet) -> None:
    with following(fleet, moto.url, roles=frozenset({"reader"})) as sidecar:
        follows(
            sidecar,
            {
                (fleet[1].address, "reader", "us-east-1a"),
                (fleet[2].address, "reader", "us-east-1b"),
            },
        )


def test_the_zone_selector_lists_only_the_zone_named(moto: Moto, fleet: Fleet) -> None:
    with following(fleet, moto.url, zones=frozenset({"us-east-1b"})) as sidecar:
        follows(sidecar, {(fleet[2].address, "reader", "us-east-1b")})


def test_the_tag_selector_follows_tags_added_to_an_instance(moto: Moto, fleet: Fleet) -> None:
    def tag(name: str) -> None:
        arn = moto.client.describe_db_instances(DBInstanceIdentifier=name)["DBInstances"][0]
        moto.client.add_tags_to_resource(
            ResourceName=arn["DBInstanceArn"], Tags=[{"Key": "team", "Value": "graph"}]
        )

    tag("r1")
    with following(fleet, moto.url, tags={"team": "graph"}) as sidecar:
        follows(sidecar, {(fleet[1].address, "reader", "us-east-1a")})
        tag("w1")
        follows(
            sidecar,
            {
                (fleet[0].address, "writer", "us-east-1a"),
                (fleet[1].address, "reader", "us-east-1a"),
            },
        )


def test_throttled_reads_keep_the_last_list_and_are_counted_after_botocores_retries(
    moto: Moto, fleet: Fleet
) -> None:
    with ThrottlingFront(moto.url) as front, following(fleet, front.url) as sidecar:
        wanted = initial(fleet)
        follows(sidecar, wanted)
        topology = topology_of(sidecar)
        front.throttle = 6  # botocore's "standard" mode tries each call 3 times: two reads
        wait_until(lambda: topology.reads["throttled"] == 2, 60, "two throttled reads")
        assert front.throttled == 6
        assert topology.reads["failed"] == 0
        assert 'gremlinlb_sidecar_neptune_reads_total{result="throttled"} 2.0' in metrics(sidecar)
        assert listed(sidecar) == wanted
        ok = topology.reads["ok"]
        wait_until(lambda: topology.reads["ok"] > ok, 60, "a good read after the throttling")
        assert topology.throttles == 0  # the backoff starts over
        fail_over(moto)
        follows(sidecar, after_failover(fleet))


def test_when_the_writer_dies_the_new_writer_is_read_before_the_next_interval(
    moto: Moto, fleet: Fleet
) -> None:
    with following(fleet, moto.url, refresh=600.0) as sidecar:  # one periodic read, at start
        follows(sidecar, initial(fleet))
        wait_until(
            lambda: all(h.state is HostState.HEALTHY for h in sidecar.balancer.hosts()),
            20,
            "every instance in service",
        )
        writer_dies(moto, fleet)
        await_eager_read(lambda: listed(sidecar), fleet)
        write_through(sidecar, "after-failover", 3)
    assert count_label(fleet[2], "after-failover") == 3
    assert count_label(fleet[1], "after-failover") == 0
