"""How the standalone sidecar reads a Neptune cluster: selectors (role, zone, instance tags),
backoff when the management API throttles, and a read at once when every writer fails.

moto in server mode is the API (it never throttles: a loopback front answers AWS's real
throttling XML before it, which botocore parses and retries); real Gremlin Servers stand in
for the instances (`addresses`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from gremlinlb.sidecar.config import SidecarConfig
from gremlinlb.sidecar.testing import SidecarThread

from gremlinlb.core import BalancerSettings, BufferSettings, HealthCheckSettings
from gremlinlb.devservers import Fleet
from gremlinlb.neptune import NeptuneSource, NeptuneTopology
from tests.client_support import count_label
from tests.helpers import wait_until
from tests.integration.test_sidecar_neptune import follows, listed, write_through
from tests.moto_support import CLUSTER, REGION, Moto, ThrottlingFront

pytestmark = pytest.mark.integration


@contextmanager
def following(fleet: Fleet, api: str, **selectors: object) -> Iterator[SidecarThread]:
    source = NeptuneSource(
        cluster=CLUSTER,
        region=REGION,
        endpoint_url=api,
        scheme="ws",
        addresses={"w1": fleet[0].address, "r1": fleet[1].address, "r2": fleet[2].address},
        **{"refresh": 0.2, **selectors},  # type: ignore[arg-type]
    )
    settings = BalancerSettings(
        health=HealthCheckSettings(interval=0.5, timeout=2.0, rise=1, fall=1),
        buffer=BufferSettings(max_wait=10.0),
        request_timeout=5.0,
    )
    with SidecarThread(SidecarConfig(settings=settings, neptune=source)) as running:
        yield running


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
        wanted: set[tuple[str, str, str | None]] = {
            (fleet[0].address, "writer", "us-east-1a"),
            (fleet[1].address, "reader", "us-east-1a"),
            (fleet[2].address, "reader", "us-east-1b"),
        }
        follows(sidecar, wanted)
        topology = topology_of(sidecar)
        front.throttle = 6  # botocore's "standard" mode tries each call 3 times: two reads
        wait_until(lambda: topology.reads["throttled"] == 2, 60, "two throttled reads")
        assert front.throttled == 6
        assert topology.reads["failed"] == 0
        assert listed(sidecar) == wanted
        ok = topology.reads["ok"]
        wait_until(lambda: topology.reads["ok"] > ok, 60, "a good read after the throttling")
        assert topology.throttles == 0  # the backoff starts over
        moto.client.failover_db_cluster(
            DBClusterIdentifier=CLUSTER, TargetDBInstanceIdentifier="r2"
        )
        follows(
            sidecar,
            {
                (fleet[0].address, "reader", "us-east-1a"),
                (fleet[1].address, "reader", "us-east-1a"),
                (fleet[2].address, "writer", "us-east-1b"),
            },
        )


def test_when_the_writer_dies_the_new_writer_is_read_before_the_next_interval(
    moto: Moto, fleet: Fleet
) -> None:
    with following(fleet, moto.url, refresh=600.0) as sidecar:  # one periodic read, at start
        follows(
            sidecar,
            {
                (fleet[0].address, "writer", "us-east-1a"),
                (fleet[1].address, "reader", "us-east-1a"),
                (fleet[2].address, "reader", "us-east-1b"),
            },
        )
        fleet[0].kill()
        moto.client.failover_db_cluster(
            DBClusterIdentifier=CLUSTER, TargetDBInstanceIdentifier="r2"
        )
        # Far sooner than 600 s: only an eager read can have named the new writer.
        wait_until(
            lambda: (fleet[2].address, "writer", "us-east-1b") in listed(sidecar),
            60,
            "the new writer listed",
        )
        write_through(sidecar, "after-failover", 3)
    assert count_label(fleet[2], "after-failover") == 3
    assert count_label(fleet[1], "after-failover") == 0
