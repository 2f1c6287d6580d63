"""GremlinCluster spec -> the core's settings; the CRD is generated from the same source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from gremlinlb.operator.crd import build_crd, crd_yaml
from gremlinlb.operator.spec import (
    SpecError,
    parse_spec,
    settings_from_spec,
    settings_to_spec,
)

from gremlinlb.core import BalancerSettings, BufferSettings, HealthCheckSettings, Policy

REPO = Path(__file__).resolve().parents[2]
SERVICE = {"service": {"name": "gremlin"}}


def test_an_empty_spec_gives_the_core_defaults() -> None:
    assert settings_from_spec({}) == BalancerSettings()


def test_every_field_maps_onto_its_core_setting() -> None:
    spec: dict[str, Any] = {
        "policy": "least_in_flight",
        "healthCheck": {
            "interval": 3,
            "timeout": 1.5,
            "rise": 2,
            "fall": 4,
            "probeHealthy": False,
            "probe": "g.inject(1)",
        },
        "buffer": {"maxElements": 7, "maxBytes": 2048, "maxWait": 0},
        "maxAttempts": 5,
        "requestTimeout": 12,
        "connectTimeout": 2,
    }
    assert settings_from_spec(spec) == BalancerSettings(
        policy=Policy.LEAST_IN_FLIGHT,
        health=HealthCheckSettings(3.0, 1.5, 2, 4, False, "g.inject(1)"),
        buffer=BufferSettings(7, 2048, 0.0),
        max_attempts=5,
        request_timeout=12.0,
        connect_timeout=2.0,
    )
    assert settings_from_spec(settings_to_spec(settings_from_spec(spec))) == settings_from_spec(
        spec
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"healthCheck": {"rise": 0}}, r"spec.healthCheck.rise: must be an integer >= 1"),
        (
            {"hedging": {"delayFloor": 0.6}},
            "spec.hedging.delayFloor: hedge delay_floor must be <= max_delay",
        ),
        ({"healthCheck": {"interval": "5s"}}, "spec.healthCheck.interval: must be a number"),
        ({"policy": "random"}, "spec.policy: must be one of round_robin, least_in_flight"),
        ({"buffer": {"maxElements": 1.5}}, "spec.buffer.maxElements: must be an integer"),
    ],
)
def test_bad_settings_name_the_field(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        settings_from_spec(spec)


def test_the_client_selector_defaults_to_the_inject_label() -> None:
    parsed = parse_spec("graph", SERVICE)
    assert parsed.clients == {"matchLabels": {"gremlinlb.io/inject": "graph"}}
    custom = parse_spec("graph", {**SERVICE, "clients": {"selector": {"matchLabels": {"a": "b"}}}})
    assert custom.clients == {"matchLabels": {"a": "b"}}


def test_plain_http_pushes_are_off_unless_the_cluster_turns_them_on() -> None:
    assert not parse_spec("c", {"service": {"name": "s"}}).sidecar.allow_plain_http_push
    on = {"service": {"name": "s"}, "sidecar": {"allowPlainHttpPush": True}}
    assert parse_spec("c", on).sidecar.allow_plain_http_push
    bad = {"service": {"name": "s"}, "sidecar": {"allowPlainHttpPush": "yes"}}
    message = r"spec\.sidecar\.allowPlainHttpPush: must be true or false"
    with pytest.raises(SpecError, match=message):
        parse_spec("c", bad)


def test_the_service_or_a_neptune_cluster_is_required() -> None:
    with pytest.raises(SpecError, match=r"spec.service or spec.neptune is required: name the"):
        parse_spec("graph", {})


@pytest.mark.parametrize(
    ("extra", "host"),
    [
        ({}, "10.0.0.1:8182"),
        ({"path": "/g"}, "ws://10.0.0.1:8182/g"),
        ({"tls": {"enabled": True}}, "wss://10.0.0.1:8182/gremlin"),
    ],
)
def test_hosts_are_plain_addresses_unless_path_or_tls_need_a_url(
    extra: dict[str, Any], host: str
) -> None:
    assert parse_spec("graph", {**SERVICE, **extra}).host_address("10.0.0.1", 8182) == host


@pytest.mark.parametrize("where", ["crds", "charts/gremlinlb/crds"])
def test_the_checked_in_crd_is_the_generated_one(where: str) -> None:
    """crds/ for kubectl apply and the chart's crds/ for Helm: both from `make generate`."""
    assert (REPO / where / "gremlincluster.yaml").read_text() == crd_yaml()


def test_the_crd_defaults_are_the_core_defaults() -> None:
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]

    def defaults(properties: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
        return {
            key: defaults(properties[key]["properties"], value)
            if isinstance(value, dict)
            else properties[key]["default"]
            for key, value in fields.items()
        }

    core = BalancerSettings()
    from_crd = defaults(schema["properties"], settings_to_spec(core))
    assert from_crd == settings_to_spec(core)
    assert settings_from_spec(from_crd) == core


def test_the_example_cluster_is_valid() -> None:
    documents = yaml.safe_load_all((REPO / "manifests/examples/gremlincluster.yaml").read_text())
    example = next(d for d in documents if d["kind"] == "GremlinCluster")
    parsed = parse_spec(example["metadata"]["name"], example["spec"])
    assert parsed.settings.health.interval == 5.0
    assert parsed.service is not None
    assert parsed.service.name == "gremlin"


def test_the_sidecars_memory_bounds_are_positive_integers() -> None:
    parsed = parse_spec("graph", {**SERVICE, "sidecar": {"clientMaxQueuedBytes": 1024}})
    assert (parsed.sidecar.client_max_queued_bytes, parsed.sidecar.memory_budget_bytes) == (
        1024,
        None,
    )
    with pytest.raises(SpecError, match=r"spec.sidecar.memoryBudgetBytes: must be an integer"):
        parse_spec("graph", {**SERVICE, "sidecar": {"memoryBudgetBytes": "96Mi"}})
