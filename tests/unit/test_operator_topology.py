"""Roles and zones in the operator: read from EndpointSlices and a writer Service, pushed in the
endpoint text form, shown in status, and the sidecar's own zone injected by the webhook."""

from __future__ import annotations

import json
from typing import Any

import pytest
from gremlinlb.operator.discovery import (
    DiscoveredEndpoint,
    EndpointState,
    PortChoice,
    endpoints_from_slices,
    ready_addresses,
    with_roles,
)
from gremlinlb.operator.push import Payload
from gremlinlb.operator.spec import SpecError, parse_spec
from gremlinlb.operator.status import Observed, build_status
from gremlinlb.operator.webhook import injection, pod_zone

from gremlinlb.core import Role, parse_endpoint

PORT = PortChoice("gremlin", 8182)


def zoned(ip: str, zone: str | None = None, hint: str | None = None, **conditions: bool) -> Any:
    found: dict[str, Any] = {"addresses": [ip], "conditions": conditions}
    if zone:
        found["zone"] = zone
    if hint:
        found["hints"] = {"forZones": [{"name": hint}]}
    return found


def slices(*endpoints: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "addressType": "IPv4",
            "ports": [{"name": "gremlin", "port": 8182}],
            "endpoints": list(endpoints),
        }
    ]


def test_an_endpoint_takes_the_zone_of_its_slice_entry() -> None:
    found = endpoints_from_slices(slices(zoned("10.0.0.1", "a"), zoned("10.0.0.2")), PORT)
    assert [(e.ip, e.zone) for e in found] == [("10.0.0.1", "a"), ("10.0.0.2", None)]


def test_a_single_topology_hint_wins_over_the_endpoints_own_zone() -> None:
    found = endpoints_from_slices(slices(zoned("10.0.0.1", "a", hint="b")), PORT)
    assert found[0].zone == "b"


def test_the_writer_services_ready_addresses_are_writers_the_others_readers() -> None:
    writers = ready_addresses(slices(zoned("10.0.0.1"), zoned("10.0.0.9", ready=False)))
    found = with_roles(
        endpoints_from_slices(slices(zoned("10.0.0.1"), zoned("10.0.0.2")), PORT), writers
    )
    assert [(e.ip, e.role) for e in found] == [("10.0.0.1", "writer"), ("10.0.0.2", "reader")]


def test_without_a_writer_service_endpoints_have_no_role() -> None:
    found = with_roles(endpoints_from_slices(slices(zoned("10.0.0.1")), PORT), None)
    assert found[0].role is None


def test_the_pushed_text_carries_role_and_zone_for_the_sidecar_to_read() -> None:
    spec = parse_spec("graph", {"service": {"name": "gremlin"}})
    text = spec.host_address("10.0.0.1", 8182, "writer", "us-east-1a")
    endpoint = parse_endpoint(text)
    assert (text, endpoint.role, endpoint.zone) == (
        "10.0.0.1:8182?role=writer&zone=us-east-1a",
        Role.WRITER,
        "us-east-1a",
    )


def test_a_host_without_role_or_zone_is_pushed_as_before() -> None:
    spec = parse_spec("graph", {"service": {"name": "gremlin"}})
    assert spec.host_address("10.0.0.1", 8182) == "10.0.0.1:8182"


def test_the_writer_service_is_read_from_spec_roles() -> None:
    spec = parse_spec("graph", {"service": {"name": "gremlin"}, "roles": {"writerService": "w"}})
    assert spec.writer_service == "w"


def test_a_writer_service_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(SpecError, match=r"spec\.roles\.writerService: must be a string"):
        parse_spec("graph", {"service": {"name": "gremlin"}, "roles": {"writerService": 3}})


def status_of(endpoints: list[DiscoveredEndpoint]) -> dict[str, Any]:
    observed = Observed(
        generation=1, hosts_generation=1, hosts=(), endpoints=endpoints, sidecars=[]
    )
    return build_status(observed, [], "2026-01-01T00:00:00Z")


def test_status_counts_live_writers_and_readers_and_lists_roles_and_zones() -> None:
    live, out = EndpointState.LIVE, EndpointState.OUT
    status = status_of(
        [
            DiscoveredEndpoint("10.0.0.1", 8182, live, zone="a", role="writer"),
            DiscoveredEndpoint("10.0.0.2", 8182, live, zone="b", role="reader"),
            DiscoveredEndpoint("10.0.0.3", 8182, out, zone="b", role="reader"),
        ]
    )
    assert (status["writers"], status["readers"]) == (1, 1)
    assert status["endpoints"][0] == {
        "address": "10.0.0.1:8182",
        "state": "live",
        "zone": "a",
        "role": "writer",
    }


def test_status_has_no_role_counts_without_roles() -> None:
    status = status_of([DiscoveredEndpoint("10.0.0.1", 8182, EndpointState.LIVE)])
    assert "writers" not in status


def sidecar_env(pod: dict[str, Any]) -> dict[str, Any]:
    spec = parse_spec("graph", {"service": {"name": "gremlin"}})
    changes = injection(pod, "graph", spec, [])
    assert changes is not None
    return {e["name"]: e for e in changes["spec"]["initContainers"][0]["env"]}


def a_pod(annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "annotations": annotations or {}},
        "spec": {"containers": [{"name": "web", "image": "web:1"}]},
    }


def test_the_sidecar_learns_its_zone_from_the_pods_zone_label() -> None:
    assert sidecar_env(a_pod())["GREMLINLB_ZONE"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.labels['topology.kubernetes.io/zone']"}
    }


def test_a_zone_annotation_on_the_pod_names_the_sidecars_zone() -> None:
    env = sidecar_env(a_pod({"gremlinlb.io/zone": "us-east-1a"}))
    assert env["GREMLINLB_ZONE"] == {"name": "GREMLINLB_ZONE", "value": "us-east-1a"}


# -- the clients' zones, pushed as client_zones --------------------------------------------------


def test_a_pods_zone_is_its_zone_annotation_before_its_zone_label() -> None:
    both = {
        "annotations": {"gremlinlb.io/zone": "us-east-1a"},
        "labels": {"topology.kubernetes.io/zone": "us-east-1b"},
    }
    assert pod_zone(both) == "us-east-1a"
    assert pod_zone({"labels": {"topology.kubernetes.io/zone": "us-east-1b"}}) == "us-east-1b"
    assert pod_zone({"annotations": {"gremlinlb.io/zone": " "}, "labels": {}}) is None
    assert pod_zone({}) is None


def test_the_pushed_list_carries_the_client_zones_when_some_are_known() -> None:
    body = json.loads(Payload.build(3, ("h:1",), {}, {"b": 1, "a": 3}).body)
    assert body["client_zones"] == {"a": 3, "b": 1}
    assert "client_zones" not in json.loads(Payload.build(3, ("h:1",), {}).body)


def test_a_change_in_the_client_zones_alone_is_a_different_payload() -> None:
    before = Payload.build(3, ("h:1",), {}, {"a": 3, "b": 1})
    assert before != Payload.build(3, ("h:1",), {}, {"a": 4, "b": 1})
    assert before.next(4).client_zones == {"a": 3, "b": 1}


def test_the_status_lists_ready_sidecars_per_zone() -> None:
    status = build_status(
        Observed(
            generation=1,
            hosts_generation=1,
            hosts=(),
            endpoints=[],
            sidecars=[],
            client_zones={"a": 3, "b": 1},
        ),
        [],
        "2026-01-01T00:00:00Z",
    )
    assert status["sidecars"]["byZone"] == [{"zone": "a", "ready": 3}, {"zone": "b", "ready": 1}]
