"""The Neptune topology's pure parts: which instances become which hosts, and what a failed
read leaves in place (the API itself is moto's in tests/integration/test_sidecar_neptune.py)."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError
from gremlinlb.sidecar.config import ConfigError, load_config

from gremlinlb.core import Endpoint, HostState, HostStatus, Role, parse_endpoint
from gremlinlb.neptune import (
    THROTTLED_CAP,
    NeptuneSource,
    NeptuneTopology,
    TagCache,
    hosts_of,
    roles_out,
    throttled,
    throttled_delay,
)

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


def test_a_mapped_instance_carries_its_own_endpoint_name_to_sign() -> None:
    hosts = hosts_of(CLUSTER, [instance("w1"), instance("r1")], {"w1": "127.0.0.1:9001"})
    assert [h.sigv4_host for h in hosts] == ["w1.x.us-east-1.neptune.amazonaws.com:8182", None]
    assert "sigv4_host=w1.x.us-east-1.neptune.amazonaws.com:8182" in hosts[0].text


def test_the_role_selector_keeps_only_the_roles_named() -> None:
    both = [instance("w1"), instance("r1")]
    assert [h.role for h in hosts_of(CLUSTER, both, {}, roles={"reader"})] == [Role.READER]


def test_the_zone_selector_keeps_only_the_zones_named() -> None:
    both = [instance("w1", zone="us-east-1a"), instance("r1", zone="us-east-1b")]
    assert [h.zone for h in hosts_of(CLUSTER, both, {}, zones={"us-east-1b"})] == ["us-east-1b"]


def test_the_tag_selector_keeps_instances_carrying_every_tag_named() -> None:
    held = {"w1": {"team": "graph", "tier": "gold"}, "r1": {"team": "graph"}, "r2": {}}
    hosts = hosts_of(
        CLUSTER,
        [instance("w1"), instance("r1"), instance("r2")],
        {},
        tags={"team": "graph", "tier": "gold"},
        tags_of=held,
    )
    assert [h.host.split(".")[0] for h in hosts] == ["w1"]


class TagClient:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def list_tags_for_resource(self, ResourceName: str) -> dict[str, Any]:
        self.calls.append(ResourceName)
        return {"TagList": [{"Key": "team", "Value": ResourceName}]}


def test_tags_are_read_once_per_instance_within_the_refresh_interval() -> None:
    now = [0.0]
    cache, client = TagCache(60.0, lambda: now[0]), TagClient()
    cache.tags(client, ["arn:a", "arn:b"])
    now[0] = 30.0
    assert cache.tags(client, ["arn:a", "arn:b"]) == {
        "arn:a": {"team": "arn:a"},
        "arn:b": {"team": "arn:b"},
    }
    assert client.calls == ["arn:a", "arn:b"]
    now[0] = 61.0
    cache.tags(client, ["arn:a"])
    assert client.calls == ["arn:a", "arn:b", "arn:a"]


def test_the_throttled_wait_stays_between_the_interval_and_a_doubling_ceiling() -> None:
    rng = random.Random(7)
    for throttles, ceiling in [(1, 20.0), (2, 40.0), (3, 80.0), (5, 300.0), (20, THROTTLED_CAP)]:
        waits = [throttled_delay(throttles, 10.0, rng) for _ in range(200)]
        assert all(10.0 <= w <= ceiling for w in waits)
        assert max(waits) > ceiling * 0.9  # full jitter: the whole range is used
        assert min(waits) < 10.0 + (ceiling - 10.0) * 0.1


def throttling(code: str = "Throttling") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "Rate exceeded"}}, "DescribeDBClusters")


@pytest.mark.parametrize(
    "code",
    ["Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException"],
)
def test_each_aws_throttling_code_counts_as_throttling(code: str) -> None:
    assert throttled(throttling(code))


def test_an_access_error_is_not_throttling() -> None:
    assert not throttled(ClientError({"Error": {"Code": "AccessDenied"}}, "DescribeDBClusters"))


def test_throttled_reads_back_off_and_a_good_read_resets_the_schedule() -> None:
    answers: list[Any] = [throttling(), throttling(), (), ()]
    now = [0.0]

    def read(_source: NeptuneSource) -> tuple[Endpoint, ...]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[no-any-return]

    async def run() -> list[tuple[int, float]]:
        source = NeptuneSource("graph", "us-east-1", refresh=10.0)
        topology = NeptuneTopology(source, lambda hosts: None, read, clock=lambda: now[0])
        seen = []
        for _ in range(3):
            await topology.refresh()
            seen.append((topology.throttles, topology.next_delay()))
        assert dict(topology.reads) == {"throttled": 2, "ok": 1}
        return seen

    (one, first), (two, second), (reset, after) = asyncio.run(run())
    assert (one, two, reset) == (1, 2, 0)
    assert 10.0 <= first <= 20.0
    assert 10.0 <= second <= 40.0
    assert 8.0 <= after <= 12.0  # the interval again, jittered by a fifth


def status(role: Role, state: HostState, port: int) -> HostStatus:
    endpoint = parse_endpoint(f"127.0.0.1:{port}?role={role.value}")
    return HostStatus(endpoint, state, time.time(), 0, {}, None)


def test_a_role_whose_every_host_is_down_is_out() -> None:
    hosts = [
        status(Role.WRITER, HostState.DOWN, 1),
        status(Role.READER, HostState.HEALTHY, 2),
        status(Role.READER, HostState.DOWN, 3),
    ]
    assert roles_out(hosts) == [Role.WRITER]


def test_a_role_with_one_host_in_service_or_none_listed_is_not_out() -> None:
    hosts = [status(Role.READER, HostState.EJECTED, 2), status(Role.READER, HostState.HEALTHY, 3)]
    assert roles_out(hosts) == []  # no writer listed (e.g. --neptune-roles reader)


def test_the_selector_flags_are_read_from_the_environment() -> None:
    config = load_config(
        {},
        {
            "GREMLINLB_NEPTUNE_CLUSTER": "graph",
            "GREMLINLB_NEPTUNE_REGION": "eu-west-1",
            "GREMLINLB_NEPTUNE_ROLES": "reader",
            "GREMLINLB_NEPTUNE_ZONES": "eu-west-1a,eu-west-1b",
            "GREMLINLB_NEPTUNE_TAGS": "team=graph,tier=gold",
        },
    )
    assert config.neptune is not None
    assert config.neptune.roles == {"reader"}
    assert config.neptune.zones == {"eu-west-1a", "eu-west-1b"}
    assert config.neptune.tags == {"team": "graph", "tier": "gold"}


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"GREMLINLB_NEPTUNE_ROLES": "primary"}, "roles are writer and reader, got primary"),
        ({"GREMLINLB_NEPTUNE_TAGS": "team"}, "expected key=value"),
    ],
)
def test_a_bad_selector_is_refused_with_the_reason(env: dict[str, str], reason: str) -> None:
    base = {"GREMLINLB_NEPTUNE_CLUSTER": "graph", "GREMLINLB_NEPTUNE_REGION": "eu-west-1"}
    with pytest.raises(ConfigError, match=reason):
        load_config({}, {**base, **env})


def test_refresh_now_called_by_many_at_once_reads_the_api_once() -> None:
    reads: list[NeptuneSource] = []

    def read(source: NeptuneSource) -> tuple[Endpoint, ...]:
        reads.append(source)
        return ()

    async def run() -> list[bool]:
        clock = itertools.count(step=10).__next__  # every read later than the spacing
        topology = NeptuneTopology(
            NeptuneSource("c", "us-east-1"), lambda hosts: None, read, clock=clock
        )
        burst = await asyncio.gather(*(topology.refresh_now() for _ in range(5)))
        after = await topology.refresh_now()
        return [*burst, after]

    assert asyncio.run(run()) == [True] * 6
    assert len(reads) == 2  # one for the burst, one for the call after it


def test_an_eager_read_asked_for_within_the_spacing_waits_for_it() -> None:
    reads: list[NeptuneSource] = []

    def read(source: NeptuneSource) -> tuple[Endpoint, ...]:
        reads.append(source)
        return ()

    async def run() -> None:
        topology = NeptuneTopology(
            NeptuneSource("c", "us-east-1"), lambda hosts: None, read, clock=lambda: 100.0
        )
        await topology.refresh_now()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(topology.refresh_now(), 0.3)

    asyncio.run(run())
    assert len(reads) == 1
