"""The Neptune topology's pure parts: which instances become which hosts, and what a failed
read leaves in place (the API itself is moto's in tests/integration/test_sidecar_neptune.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from gremlinlb.sidecar.config import ConfigError, load_config

from gremlinlb import sigv4
from gremlinlb.core import Endpoint, Role, SigV4Settings
from gremlinlb.neptune import NeptuneSource, NeptuneTopology, hosts_of, signed_names

CLUSTER = {
    "DBClusterMembers": [
        {"DBInstanceIdentifier": "r1", "IsClusterWriter": False},
        {"DBInstanceIdentifier": "w1", "IsClusterWriter": True},
        {"DBInstanceIdentifier": "r2", "IsClusterWriter": False},
    ]
}


def instance(name: str, status: str = "available", zone: str = "us-east-1a") -> dict[str, Any]:
    return {
        "DBInstanceIdentifier": name,
        "DBInstanceStatus": status,
        "AvailabilityZone": zone,
        "Endpoint": {"Address": f"{name}.x.us-east-1.neptune.amazonaws.com", "Port": 8182},
    }


def test_the_writer_comes_first_with_its_role_and_zone() -> None:
    hosts = hosts_of(CLUSTER, [instance("r1"), instance("w1", zone="us-east-1b")], {})
    assert [(h.host, h.role, h.zone) for h in hosts] == [
        ("w1.x.us-east-1.neptune.amazonaws.com", Role.WRITER, "us-east-1b"),
        ("r1.x.us-east-1.neptune.amazonaws.com", Role.READER, "us-east-1a"),
    ]


def test_an_instance_that_is_not_available_gets_no_traffic() -> None:
    hosts = hosts_of(CLUSTER, [instance("w1"), instance("r1", status="rebooting")], {})
    assert [h.host.split(".")[0] for h in hosts] == ["w1"]


def test_an_instance_of_another_cluster_is_left_out() -> None:
    assert hosts_of(CLUSTER, [instance("other")], {}) == ()


def test_a_mapped_instance_is_reached_at_its_mapped_address() -> None:
    hosts = hosts_of(CLUSTER, [instance("w1")], {"w1": "127.0.0.1:9001"})
    assert hosts[0].address == "127.0.0.1:9001"


def test_a_failed_read_keeps_the_last_good_list() -> None:
    applied: list[tuple[Endpoint, ...]] = []
    good = hosts_of(CLUSTER, [instance("w1")], {})
    reads: list[Any] = [good, RuntimeError("throttled")]

    def read(_source: NeptuneSource) -> tuple[Endpoint, ...]:
        answer = reads.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[no-any-return]

    async def run() -> tuple[bool, bool]:
        topology = NeptuneTopology(NeptuneSource("graph", "us-east-1"), applied.append, read)
        return await topology.refresh(), await topology.refresh()

    assert asyncio.run(run()) == (True, False)
    assert applied == [good]


def test_the_neptune_flags_are_read_from_the_environment() -> None:
    config = load_config(
        {},
        {
            "GREMLINLB_NEPTUNE_CLUSTER": "graph",
            "GREMLINLB_NEPTUNE_REGION": "eu-west-1",
            "GREMLINLB_NEPTUNE_ADDRESSES": "w1=127.0.0.1:9001,r1=127.0.0.1:9002",
        },
    )
    assert config.neptune == NeptuneSource(
        "graph", "eu-west-1", addresses={"w1": "127.0.0.1:9001", "r1": "127.0.0.1:9002"}
    )


def test_a_neptune_cluster_without_a_region_is_refused() -> None:
    with pytest.raises(ConfigError, match="--neptune-region"):
        load_config({}, {"GREMLINLB_NEPTUNE_CLUSTER": "graph"})


def test_a_mapped_instance_is_signed_for_its_own_endpoint_name() -> None:
    names = signed_names([instance("w1"), instance("r1")], {"w1": "127.0.0.1:9001"})
    assert names == {"127.0.0.1:9001": "w1.x.us-east-1.neptune.amazonaws.com:8182"}
    sigv4.sign_as(names)
    try:
        signed = sigv4.signed_host(SigV4Settings(enabled=True), "ws://127.0.0.1:9001/gremlin")
    finally:
        sigv4.sign_as({})
    assert signed == "w1.x.us-east-1.neptune.amazonaws.com:8182"


def test_refresh_now_called_by_many_at_once_reads_the_api_once() -> None:
    reads: list[NeptuneSource] = []

    def read(source: NeptuneSource) -> tuple[Endpoint, ...]:
        reads.append(source)
        return ()

    async def run() -> list[bool]:
        topology = NeptuneTopology(NeptuneSource("c", "us-east-1"), lambda hosts: None, read)
        burst = await asyncio.gather(*(topology.refresh_now() for _ in range(5)))
        after = await topology.refresh_now()
        return [*burst, after]

    assert asyncio.run(run()) == [True] * 6
    assert len(reads) == 2  # one for the burst, one for the call after it
