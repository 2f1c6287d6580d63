"""The GremlinCluster status: counts, conditions and their transition times."""

from __future__ import annotations

from gremlinlb.operator.discovery import DiscoveredEndpoint, EndpointState
from gremlinlb.operator.push import BackendHealth, TargetStatus
from gremlinlb.operator.status import Observed, build_status, same_status

LIVE = [DiscoveredEndpoint(f"10.0.0.{i}", 8182, EndpointState.LIVE) for i in range(3)]


def sidecar(
    name: str, in_sync: bool = True, error: str | None = None, **backends: str
) -> TargetStatus:
    """A sidecar; ``backends`` (``a="healthy"``...) is its health read, if it answered one."""
    return TargetStatus(
        f"ns/{name}",
        f"http://127.0.0.1:{len(name)}",
        4 if in_sync else None,
        in_sync,
        0 if in_sync else 2,
        error,
        health=BackendHealth(4, {f"{b}:8182": state for b, state in backends.items()})
        if backends
        else None,
    )


def observed(**changes: object) -> Observed:
    base = dict(
        generation=2,
        hosts_generation=4,
        hosts=("10.0.0.0:8182",),
        endpoints=LIVE,
        sidecars=[sidecar("a"), sidecar("b")],
    )
    base.update(changes)
    return Observed(**base)  # type: ignore[arg-type]


def conditions(status: dict[str, object]) -> dict[str, tuple[str, str]]:
    items = status["conditions"]
    assert isinstance(items, list)
    return {c["type"]: (c["status"], c["reason"]) for c in items}


def test_all_live_and_in_sync_is_ready_and_not_degraded() -> None:
    status = build_status(observed(), [], "T1")
    assert conditions(status) == {
        "Ready": ("True", "EndpointsAvailable"),
        "Degraded": ("False", "AsExpected"),
    }
    assert status["readyEndpoints"] == 3
    assert status["sidecars"] == {
        "total": 2,
        "inSync": 2,
        "watching": 0,
        "outOfSync": [],
        "plainHttpRefused": [],
        "byZone": [],
    }
    assert status["observedGeneration"] == 2


def test_pods_refused_a_plain_http_push_make_the_cluster_degraded_saying_what_to_do() -> None:
    status = build_status(observed(plain_http_refused=("app-7",)), [], "T1")
    assert conditions(status)["Degraded"] == ("True", "SidecarsWithoutAdminTLS")
    assert status["sidecars"]["plainHttpRefused"] == ["app-7"]
    (degraded,) = [c for c in status["conditions"] if c["type"] == "Degraded"]
    assert "app-7" in degraded["message"]
    assert "spec.sidecar.allowPlainHttpPush: true" in degraded["message"]


def test_an_out_of_sync_sidecar_is_listed_with_its_error() -> None:
    status = build_status(
        observed(sidecars=[sidecar("a"), sidecar("b", False, "connection refused")]), [], "T1"
    )
    assert conditions(status)["Degraded"] == ("True", "SidecarsOutOfSync")
    assert conditions(status)["Ready"] == ("True", "EndpointsAvailable")
    assert status["sidecars"]["outOfSync"] == [
        {"pod": "b", "address": "127.0.0.1:1", "error": "connection refused"}
    ]


def test_draining_endpoints_are_counted_but_not_ready() -> None:
    endpoints = [*LIVE[:2], DiscoveredEndpoint("10.0.0.9", 8182, EndpointState.DRAINING, "g-9")]
    status = build_status(observed(endpoints=endpoints), [], "T1")
    assert (status["readyEndpoints"], status["totalEndpoints"]) == (2, 3)
    assert status["endpoints"][2] == {"address": "10.0.0.9:8182", "state": "draining", "pod": "g-9"}
    assert conditions(status)["Degraded"] == ("True", "EndpointsNotLive")


def test_no_live_endpoint_and_a_missing_service_are_not_ready() -> None:
    none_live = build_status(observed(endpoints=[]), [], "T1")
    assert conditions(none_live)["Ready"] == ("False", "NoLiveEndpoints")
    missing = build_status(observed(service_found=False), [], "T1")
    assert conditions(missing)["Ready"] == ("False", "ServiceNotFound")


def test_transition_times_change_only_with_the_condition_status() -> None:
    first = build_status(observed(), [], "T1")
    second = build_status(observed(sidecars=[sidecar("a", False, "x")]), first["conditions"], "T2")
    times = {c["type"]: c["lastTransitionTime"] for c in second["conditions"]}
    assert times == {"Ready": "T1", "Degraded": "T2"}
    assert same_status(first, build_status(observed(), [], "T9"))
    assert not same_status(first, second)


def test_backends_count_how_many_sidecars_see_each_state() -> None:
    sidecars = [
        sidecar("a", x="healthy", y="healthy"),
        sidecar("b", x="healthy", y="ejected"),
        sidecar("c"),  # not read yet: not counted
    ]
    backends = build_status(observed(sidecars=sidecars), [], "T1")["backends"]
    assert backends["sidecarsReporting"] == 2
    assert backends["sidecarsServing"] == 2
    assert backends["withoutHealthyBackend"] == []
    assert backends["hosts"] == [
        {"address": "x:8182", "healthy": 2, "down": 0, "draining": 0, "ejected": 0, "joining": 0},
        {"address": "y:8182", "healthy": 1, "down": 0, "draining": 0, "ejected": 1, "joining": 0},
    ]


def test_a_backend_some_sidecar_does_not_see_healthy_degrades_the_cluster() -> None:
    sidecars = [sidecar("a", x="healthy", y="healthy"), sidecar("b", x="healthy", y="down")]
    status = build_status(observed(sidecars=sidecars), [], "T1")
    assert conditions(status)["Degraded"] == ("True", "BackendsUnhealthy")
    assert conditions(status)["Ready"] == ("True", "EndpointsAvailable")
    message = status["conditions"][1]["message"]
    assert "y:8182: 1 down of 2 sidecars" in message
    assert "x:8182" not in message


def test_a_sidecar_that_sees_no_healthy_backend_is_named_before_anything_else() -> None:
    sidecars = [
        sidecar("a", x="healthy"),
        sidecar("b", x="down"),
        sidecar("c", False, "connection refused"),
    ]
    status = build_status(observed(sidecars=sidecars), [], "T1")
    assert conditions(status)["Degraded"] == ("True", "SidecarsWithoutHealthyBackend")
    assert "1 of 2 sidecars see no healthy backend" in status["conditions"][1]["message"]
    assert status["backends"]["withoutHealthyBackend"] == ["b"]
    assert status["backends"]["sidecarsServing"] == 1


def test_every_sidecar_seeing_every_backend_healthy_is_as_expected() -> None:
    sidecars = [sidecar("a", x="healthy"), sidecar("b", x="healthy")]
    status = build_status(observed(sidecars=sidecars), [], "T1")
    assert conditions(status)["Degraded"] == ("False", "AsExpected")
