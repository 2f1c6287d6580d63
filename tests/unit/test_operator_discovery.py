"""EndpointSlices -> endpoints with states (live, draining, out)."""

from __future__ import annotations

from typing import Any

import pytest
from gremlinlb.operator.discovery import (
    EndpointState,
    PortChoice,
    endpoint_state,
    endpoints_from_slices,
    live,
)

PORT = PortChoice("gremlin", 8182)


def make_slice(
    *endpoints: dict[str, Any], port: int = 8182, name: str = "gremlin"
) -> dict[str, Any]:
    return {
        "addressType": "IPv4",
        "ports": [{"name": name, "port": port, "protocol": "TCP"}],
        "endpoints": list(endpoints),
    }


def endpoint(ip: str, pod: str | None = None, **conditions: bool) -> dict[str, Any]:
    found: dict[str, Any] = {"addresses": [ip], "conditions": conditions}
    if pod:
        found["targetRef"] = {"kind": "Pod", "name": pod}
    return found


@pytest.mark.parametrize(
    ("conditions", "state"),
    [
        ({"ready": True, "serving": True, "terminating": False}, EndpointState.LIVE),
        ({}, EndpointState.LIVE),  # absent means unknown: the API says to assume ready
        ({"ready": False, "serving": False}, EndpointState.OUT),
        ({"ready": False, "serving": True, "terminating": True}, EndpointState.DRAINING),
        ({"ready": False, "serving": False, "terminating": True}, EndpointState.OUT),
        ({"ready": True, "terminating": True}, EndpointState.DRAINING),  # no `serving`: ready
        ({"ready": False, "terminating": True}, EndpointState.OUT),
    ],
)
def test_conditions_map_to_states(conditions: dict[str, bool], state: EndpointState) -> None:
    assert endpoint_state(conditions) is state


def test_slices_give_sorted_endpoints_with_pods_and_states() -> None:
    found = endpoints_from_slices(
        [
            make_slice(
                endpoint("10.0.0.10", "g-2", ready=False, serving=True, terminating=True),
                endpoint("10.0.0.9", "g-1", ready=True),
                endpoint("10.0.0.11", "g-3", ready=False),
            )
        ],
        PORT,
    )
    assert [(e.address, e.state, e.pod) for e in found] == [
        ("10.0.0.9:8182", EndpointState.LIVE, "g-1"),
        ("10.0.0.10:8182", EndpointState.DRAINING, "g-2"),
        ("10.0.0.11:8182", EndpointState.OUT, "g-3"),
    ]
    assert [e.address for e in live(found)] == ["10.0.0.9:8182"]


def test_an_address_in_two_slices_keeps_its_best_state() -> None:
    found = endpoints_from_slices(
        [
            make_slice(endpoint("10.0.0.1", ready=False)),
            make_slice(endpoint("10.0.0.1", ready=True)),
        ],
        PORT,
    )
    assert [(e.address, e.state) for e in found] == [("10.0.0.1:8182", EndpointState.LIVE)]


def test_the_port_is_chosen_by_the_service_port_name() -> None:
    two_ports = {
        "addressType": "IPv4",
        "ports": [{"name": "metrics", "port": 9090}, {"name": "gremlin", "port": 8183}],
        "endpoints": [endpoint("10.0.0.1", ready=True)],
    }
    assert [e.address for e in endpoints_from_slices([two_ports], PORT)] == ["10.0.0.1:8183"]
    unnamed = make_slice(endpoint("10.0.0.2", ready=True), name="", port=7000)
    assert [e.address for e in endpoints_from_slices([unnamed], PortChoice("", None))] == [
        "10.0.0.2:7000"
    ]
    assert endpoints_from_slices([make_slice(endpoint("10.0.0.3"), name="other")], PORT) == []


def test_without_a_name_a_single_port_is_used() -> None:
    found = endpoints_from_slices([make_slice(endpoint("10.0.0.4"), port=9999)], PortChoice(None))
    assert [e.address for e in found] == ["10.0.0.4:9999"]


def test_fqdn_slices_and_address_less_endpoints_are_ignored() -> None:
    fqdn = {**make_slice(endpoint("gremlin.example")), "addressType": "FQDN"}
    empty = make_slice({"addresses": [], "conditions": {"ready": True}})
    assert endpoints_from_slices([fqdn, empty], PORT) == []


def test_ipv6_addresses_are_bracketed() -> None:
    v6 = {**make_slice(endpoint("fd00::1")), "addressType": "IPv6"}
    assert [e.address for e in endpoints_from_slices([v6], PORT)] == ["[fd00::1]:8182"]
