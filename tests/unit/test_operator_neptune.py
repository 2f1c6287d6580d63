"""A GremlinCluster with spec.neptune: the spec read, the CRD's rules, the endpoints and the
status made from a read, and what a failed read leaves (the API is moto's in
tests/integration/test_operator_neptune.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from gremlinlb.operator.crd import build_crd
from gremlinlb.operator.discovery import EndpointState
from gremlinlb.operator.neptune import (
    GremlinClusterNeptune,
    discovered,
    suspicion,
    topology_status,
)
from gremlinlb.operator.push import BackendHealth
from gremlinlb.operator.spec import (
    BOTH_SOURCES,
    NO_SOURCE,
    ROLES_WITH_NEPTUNE,
    SpecError,
    parse_spec,
)
from gremlinlb.operator.status import Observed, build_status

from gremlinlb.core import Endpoint, parse_endpoint
from gremlinlb.neptune import NeptuneSource

NEPTUNE = {"clusterIdentifier": "graph", "region": "us-east-1"}
WRITER = parse_endpoint("wss://w1.x:8182/gremlin?role=writer&zone=us-east-1a")
READER = parse_endpoint("wss://r1.x:8182/gremlin?role=reader&zone=us-east-1b")
SOURCE = NeptuneSource("graph", "us-east-1")


def test_spec_neptune_is_read_with_its_defaults() -> None:
    spec = parse_spec("c", {"neptune": NEPTUNE})
    assert spec.service is None
    assert spec.neptune == NeptuneSource("graph", "us-east-1", refresh=60.0, scheme="wss")


def test_spec_neptune_carries_its_endpoint_url_scheme_refresh_and_addresses() -> None:
    neptune = {
        **NEPTUNE,
        "endpointUrl": "http://127.0.0.1:5000",
        "scheme": "ws",
        "refreshSeconds": 2,
        "addresses": {"w1": "127.0.0.1:9001"},
    }
    found = parse_spec("c", {"neptune": neptune}).neptune
    assert found == NeptuneSource(
        "graph", "us-east-1", "http://127.0.0.1:5000", 2.0, {"w1": "127.0.0.1:9001"}, "ws"
    )


def test_spec_neptune_selects_instances_by_role_zone_and_tags() -> None:
    neptune = {
        **NEPTUNE,
        "roles": ["reader"],
        "zones": ["us-east-1a", "us-east-1b"],
        "tags": {"team": "graph"},
    }
    found = parse_spec("c", {"neptune": neptune}).neptune
    assert found is not None
    assert found.roles == frozenset({"reader"})
    assert found.zones == frozenset({"us-east-1a", "us-east-1b"})
    assert found.tags == {"team": "graph"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"service": {"name": "gremlin"}, "neptune": NEPTUNE}, BOTH_SOURCES),
        ({}, NO_SOURCE),
        ({"neptune": NEPTUNE, "roles": {"writerService": "w"}}, ROLES_WITH_NEPTUNE),
        ({"neptune": {"region": "us-east-1"}}, "spec.neptune.clusterIdentifier: required"),
        ({"neptune": {"clusterIdentifier": "graph"}}, "spec.neptune.region: required"),
        ({"neptune": {**NEPTUNE, "refreshSeconds": 0.1}}, "refreshSeconds: must be a number"),
        ({"neptune": {**NEPTUNE, "scheme": "http"}}, "spec.neptune.scheme: must be wss"),
        ({"neptune": {**NEPTUNE, "addresses": {"w1": "nohost"}}}, "addresses.w1: must be host"),
        ({"neptune": {**NEPTUNE, "roles": ["primary"]}}, "roles: primary not one of writer"),
        ({"neptune": {**NEPTUNE, "zones": "us-east-1a"}}, "zones: must be a list of names"),
        ({"neptune": {**NEPTUNE, "tags": {"team": 1}}}, "tags: each tag's value must be"),
    ],
    ids=[
        "both",
        "neither",
        "roles",
        "no-id",
        "no-region",
        "refresh-below-floor",
        "scheme",
        "address",
        "role-selector",
        "zone-selector",
        "tag-selector",
    ],
)
def test_a_spec_that_cannot_follow_one_source_is_refused_saying_what_to_do(
    spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecError) as raised:
        parse_spec("c", spec)
    assert message in str(raised.value)


def test_the_crd_refuses_both_sources_and_neither_with_the_operators_messages() -> None:
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    rules = {r["message"]: r["rule"] for r in schema["spec"]["x-kubernetes-validations"]}
    assert rules[BOTH_SOURCES] == "!(has(self.service) && has(self.neptune))"
    assert rules[NO_SOURCE] == "has(self.service) || has(self.neptune)"
    assert "required" not in schema["spec"]


def test_instances_are_live_endpoints_with_their_roles_and_zones() -> None:
    found = discovered((WRITER, READER))
    assert [(e.address, e.state, e.role, e.zone) for e in found] == [
        ("w1.x:8182", EndpointState.LIVE, "writer", "us-east-1a"),
        ("r1.x:8182", EndpointState.LIVE, "reader", "us-east-1b"),
    ]


def test_the_status_names_the_writer_and_the_readers_with_their_zones() -> None:
    status = topology_status(SOURCE, (WRITER, READER), "T1", None)
    assert status == {
        "cluster": "graph",
        "region": "us-east-1",
        "writer": {"address": "w1.x:8182", "zone": "us-east-1a"},
        "readers": [{"address": "r1.x:8182", "zone": "us-east-1b"}],
        "lastReadTime": "T1",
        "lastError": None,
    }


def _observed(neptune: dict[str, Any], hosts: tuple[Endpoint, ...]) -> Observed:
    return Observed(
        generation=1,
        hosts_generation=1,
        hosts=tuple(e.text for e in hosts),
        endpoints=discovered(hosts),
        sidecars=[],
        neptune=neptune,
    )


def test_a_failed_read_degrades_the_cluster_which_stays_ready_on_its_last_list() -> None:
    neptune = topology_status(SOURCE, (WRITER,), "T1", "cannot read Neptune cluster graph: boom")
    status = build_status(_observed(neptune, (WRITER,)), [], "T2")
    kinds = {c["type"]: (c["status"], c["reason"], c["message"]) for c in status["conditions"]}
    assert kinds["Ready"][:2] == ("True", "EndpointsAvailable")
    assert kinds["Degraded"][:2] == ("True", "NeptuneReadFailed")
    assert "boom; the sidecars keep the last host list read" in kinds["Degraded"][2]
    assert status["neptune"]["lastError"].endswith("boom")
    assert status["writers"] == 1


def test_a_cluster_never_read_is_not_ready_and_says_why() -> None:
    neptune = topology_status(SOURCE, None, None, "cannot read Neptune cluster graph: boom")
    status = build_status(_observed(neptune, ()), [], "T1")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NeptuneReadFailed")


def test_the_follower_pushes_the_list_it_read_and_keeps_it_when_a_read_fails() -> None:
    reads: list[Any] = [(WRITER, READER), RuntimeError("unreachable")]
    changes: list[int] = []

    def read(_source: NeptuneSource, _tags: object) -> tuple[Endpoint, ...]:
        result = reads.pop(0)
        if isinstance(result, Exception):
            raise result
        assert isinstance(result, tuple)
        return result

    follower = GremlinClusterNeptune(SOURCE, lambda: changes.append(1), read)
    assert follower.found() is None  # nothing pushed before the first good read

    async def twice() -> None:
        assert await follower.topology.refresh()
        assert not await follower.topology.refresh()

    asyncio.run(twice())
    assert follower.found() == (discovered((WRITER, READER)), (WRITER.text, READER.text))
    assert follower.error == "cannot read Neptune cluster graph: unreachable"
    assert follower.last_read is not None
    assert changes  # the controller was told


def health(read_only_violations: int = 0, *roles_out: str) -> BackendHealth:
    return BackendHealth(3, {WRITER.address: "healthy"}, read_only_violations, roles_out)


def test_more_writes_refused_by_a_reader_than_last_seen_suspect_a_failover() -> None:
    assert suspicion(health(1), health(2)) == "writes refused by a reader: 2"
    assert suspicion(None, health(1)) == "writes refused by a reader: 1"  # not seen before


def test_a_role_with_no_host_in_service_suspects_a_failover() -> None:
    assert suspicion(health(2), health(2, "writer")) == "no writer in service"
    both = suspicion(health(0), health(1, "writer", "reader"))
    assert both == "writes refused by a reader: 1; no writer and no reader in service"


def test_an_unchanged_count_with_every_role_in_service_suspects_nothing() -> None:
    assert suspicion(health(2), health(2)) is None
    assert suspicion(None, health()) is None
    assert suspicion(health(3), health(0)) is None  # a restarted sidecar counts from 0


def test_sidecars_suspecting_a_failover_make_the_follower_read_once_at_once() -> None:
    reads: list[int] = []

    def read(_source: NeptuneSource, _tags: object) -> tuple[Endpoint, ...]:
        reads.append(1)
        return (WRITER, READER)

    follower = GremlinClusterNeptune(SOURCE, lambda: None, read)

    async def burst() -> None:
        for key in ("ns/app-0", "ns/app-1", "ns/app-2"):
            follower.sidecar_health(key, health(0), health(1))
        follower.sidecar_health("ns/app-3", health(1), health(1))  # nothing new
        await asyncio.wait_for(follower.topology.refreshed.wait(), 5)
        await asyncio.sleep(0.05)

    asyncio.run(burst())
    assert reads == [1]  # one read shared by the burst
    assert follower.hosts == (WRITER, READER)


def test_a_sidecar_suspecting_nothing_makes_no_read() -> None:
    follower = GremlinClusterNeptune(SOURCE, lambda: None, lambda _s, _t: pytest.fail("read"))

    async def quiet() -> None:
        follower.sidecar_health("ns/app-0", health(1), health(1))
        await asyncio.sleep(0.05)

    asyncio.run(quiet())
    assert follower.hosts is None
