"""The standalone sidecar follows a Neptune cluster read from the Neptune management API.

The API is moto in server mode (a real HTTP emulation of AWS's, its own process on loopback;
botocore's `neptune` client reaches it by endpoint URL with fake credentials). Its instances'
endpoint names resolve nowhere, so `--neptune-addresses` maps each instance to a real local
Gremlin Server, which serves the traffic. Writes are counted on the servers themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.process.anonymous_traversal import traversal
from gremlinlb.sidecar.config import SidecarConfig
from gremlinlb.sidecar.testing import SidecarThread

from gremlinlb import sigv4
from gremlinlb.core import (
    BalancerSettings,
    BufferSettings,
    HealthCheckSettings,
    HostState,
    SigV4Settings,
)
from gremlinlb.devservers import Fleet
from gremlinlb.devservers.sigv4front import Secret, SigV4Front
from gremlinlb.neptune import NeptuneSource
from tests.client_support import ReadLoop, count_label
from tests.helpers import wait_until
from tests.moto_support import CLUSTER, REGION, Moto, neptune_source

pytestmark = pytest.mark.integration


@contextmanager
def following(fleet: Fleet, api: str, **more: Any) -> Iterator[SidecarThread]:
    """A sidecar following the fixture's cluster through the API at `api` (`more`: other
    NeptuneSource fields, e.g. selectors)."""
    settings = BalancerSettings(
        health=HealthCheckSettings(interval=0.5, timeout=2.0, rise=1, fall=1),
        buffer=BufferSettings(max_wait=5.0),
        request_timeout=5.0,
    )
    source = neptune_source(fleet, api, **more)
    with SidecarThread(SidecarConfig(settings=settings, neptune=source)) as running:
        yield running


@pytest.fixture
def sidecar(moto: Moto, fleet: Fleet) -> Iterator[SidecarThread]:
    with following(fleet, moto.url) as running:
        yield running


def listed(sidecar: SidecarThread) -> set[tuple[str, str, str | None]]:
    """The sidecar's hosts in service: (address, role, zone)."""
    return {
        (h.endpoint.address, h.endpoint.role.value, h.endpoint.zone)
        for h in sidecar.balancer.hosts()
        if h.state is not HostState.DRAINING
    }


def follows(sidecar: SidecarThread, wanted: set[tuple[str, str, str | None]]) -> None:
    wait_until(lambda: listed(sidecar) == wanted, 20, f"the host list {wanted}")


def write_through(sidecar: SidecarThread, label: str, count: int) -> None:
    connection = DriverRemoteConnection(sidecar.url, "g")
    try:
        g = traversal().with_(connection)
        for _ in range(count):
            g.add_v(label).iterate()
    finally:
        connection.close()


def test_the_writer_and_the_readers_are_listed_with_their_zones(
    sidecar: SidecarThread, fleet: Fleet
) -> None:
    follows(
        sidecar,
        {
            (fleet[0].address, "writer", "us-east-1a"),
            (fleet[1].address, "reader", "us-east-1a"),
            (fleet[2].address, "reader", "us-east-1b"),
        },
    )


def test_after_a_failover_writes_go_to_the_new_writer(
    sidecar: SidecarThread, moto: Moto, fleet: Fleet
) -> None:
    follows(sidecar, {(fleet[i].address, r, z) for i, r, z in _initial()})
    write_through(sidecar, "before", 3)
    moto.client.failover_db_cluster(DBClusterIdentifier=CLUSTER, TargetDBInstanceIdentifier="r2")
    follows(
        sidecar,
        {
            (fleet[0].address, "reader", "us-east-1a"),
            (fleet[1].address, "reader", "us-east-1a"),
            (fleet[2].address, "writer", "us-east-1b"),
        },
    )
    write_through(sidecar, "after", 3)
    assert [count_label(server, "before") for server in fleet[:3]] == [3, 0, 0]
    assert [count_label(server, "after") for server in fleet[:3]] == [0, 0, 3]


def test_an_instance_removed_and_one_added_are_followed(
    sidecar: SidecarThread, moto: Moto, fleet: Fleet
) -> None:
    follows(sidecar, {(fleet[i].address, r, z) for i, r, z in _initial()})
    moto.client.delete_db_instance(DBInstanceIdentifier="r1", SkipFinalSnapshot=True)
    follows(
        sidecar,
        {(fleet[0].address, "writer", "us-east-1a"), (fleet[2].address, "reader", "us-east-1b")},
    )
    moto.add("r3", "us-east-1b")  # not mapped: its own endpoint name, as the API gives it
    wait_until(
        lambda: any(address.startswith("r3.") for address, _, _ in listed(sidecar)),
        20,
        "the added instance listed",
    )


def test_the_last_good_list_is_kept_while_the_api_is_down(
    sidecar: SidecarThread, moto: Moto, fleet: Fleet
) -> None:
    wanted = {(fleet[i].address, r, z) for i, r, z in _initial()}
    follows(sidecar, wanted)
    moto.stop()
    topology = sidecar.sidecar.topology
    assert topology is not None
    wait_until(lambda: topology.failures >= 2, 30, "two failed reads of the API")
    assert listed(sidecar) == wanted
    write_through(sidecar, "while-api-down", 2)
    assert count_label(fleet[0], "while-api-down") == 2


def _initial() -> list[tuple[int, str, str | None]]:
    return [(0, "writer", "us-east-1a"), (1, "reader", "us-east-1a"), (2, "reader", "us-east-1b")]


def test_a_failover_under_load_fails_no_read_and_writes_each_acknowledged_write_once(
    sidecar: SidecarThread, moto: Moto, fleet: Fleet
) -> None:
    follows(sidecar, {(fleet[i].address, r, z) for i, r, z in _initial()})
    acknowledged = 0
    with ReadLoop(sidecar.url) as reads:
        connection = DriverRemoteConnection(sidecar.url, "g")
        try:
            g = traversal().with_(connection)
            for i in range(40):
                if i == 10:
                    moto.client.failover_db_cluster(
                        DBClusterIdentifier=CLUSTER, TargetDBInstanceIdentifier="r2"
                    )
                g.add_v("load").property("n", i).iterate()
                acknowledged += 1
            follows(
                sidecar,
                {
                    (fleet[0].address, "reader", "us-east-1a"),
                    (fleet[1].address, "reader", "us-east-1a"),
                    (fleet[2].address, "writer", "us-east-1b"),
                },
            )
            for i in range(40, 50):
                g.add_v("load").property("n", i).iterate()
                acknowledged += 1
        finally:
            connection.close()
    counts = [count_label(server, "load") for server in fleet[:3]]
    assert sum(counts) == acknowledged == 50  # nothing written twice, nothing lost
    assert counts[1] == 0  # never on a reader
    assert counts[2] >= 10  # the writes after the list changed went to the new writer
    assert reads.errors == []
    assert len(reads.reads) > 0


def test_with_sigv4_a_mapped_instance_is_signed_for_its_own_endpoint_name(
    moto: Moto, fleet: Fleet
) -> None:
    writer = moto.client.describe_db_instances(DBInstanceIdentifier="w1")["DBInstances"][0]
    name = f"{writer['Endpoint']['Address']}:{writer['Endpoint']['Port']}"
    secrets = {"testing": Secret("testing")}  # the fixture's fake credentials
    with SigV4Front(fleet[0].address, secrets, region=REGION, name=name) as front:
        source = NeptuneSource(
            cluster=CLUSTER,
            region=REGION,
            endpoint_url=moto.url,
            refresh=0.2,
            scheme="ws",
            addresses={"w1": front.address, "r1": fleet[1].address, "r2": fleet[2].address},
        )
        settings = BalancerSettings(
            health=HealthCheckSettings(interval=0.5, timeout=2.0, rise=1, fall=1),
            buffer=BufferSettings(max_wait=5.0),
            request_timeout=5.0,
            sigv4=SigV4Settings(enabled=True, region=REGION),
        )
        sigv4.reset()
        try:
            with SidecarThread(SidecarConfig(settings=settings, neptune=source)) as running:
                follows(
                    running,
                    {
                        (front.address, "writer", "us-east-1a"),
                        (fleet[1].address, "reader", "us-east-1a"),
                        (fleet[2].address, "reader", "us-east-1b"),
                    },
                )
                wait_until(
                    lambda: all(h.state is HostState.HEALTHY for h in running.balancer.hosts()),
                    20,
                    "every instance healthy",
                )
                write_through(running, "signed", 3)
        finally:
            sigv4.reset()
    assert count_label(fleet[0], "signed") == 3
    assert set(front.hosts_signed) == {name}
    assert sum(front.refused.values()) == 0
