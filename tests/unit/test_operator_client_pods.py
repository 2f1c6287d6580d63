"""The client pods of one GremlinCluster, indexed per watch event (targets.ClientPods, pure)."""

from __future__ import annotations

from typing import Any

from gremlinlb.operator.targets import Change, ClientPods


def pod(
    name: str,
    ip: str | None = "10.0.0.5",
    *,
    zone: str | None = "a",
    ready: bool = True,
    tls: bool = True,
    restarts: int = 0,
) -> dict[str, Any]:
    annotations = {"gremlinlb.io/admin-tls": "true"} if tls else {}
    labels = {"topology.kubernetes.io/zone": zone} if zone else {}
    return {
        "metadata": {"name": name, "annotations": annotations, "labels": labels},
        "spec": {"containers": [{"name": "app"}]},
        "status": {
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [{"name": "gremlinlb-sidecar", "restartCount": restarts}],
        },
    }


def index(plain_allowed: bool = False) -> ClientPods:
    return ClientPods("ns", 9901, plain_allowed)


def test_an_added_pod_becomes_a_target_and_counts_in_its_zone() -> None:
    pods = index()
    change = pods.apply("uid-1", pod("app-1"))
    assert change == Change(added=("ns/app-1", "https://10.0.0.5:9901"), zones_changed=True)
    assert pods.targets == {"ns/app-1": "https://10.0.0.5:9901"}
    assert pods.zones == {"a": 1}


def test_zone_counts_follow_each_event_by_delta() -> None:
    pods = index()
    pods.apply("uid-1", pod("app-1", "10.0.0.1", zone="a"))
    pods.apply("uid-2", pod("app-2", "10.0.0.2", zone="b"))
    pods.apply("uid-3", pod("app-3", "10.0.0.3", zone="b", ready=False))
    assert pods.zones == {"a": 1, "b": 1}
    assert pods.apply("uid-3", pod("app-3", "10.0.0.3", zone="b")).zones_changed
    assert pods.zones == {"a": 1, "b": 2}
    pods.apply("uid-1", None)
    assert pods.zones == {"b": 2}


def test_a_status_change_that_keeps_the_zone_count_changes_no_zones() -> None:
    pods = index()
    pods.apply("uid-1", pod("app-1"))
    change = pods.apply("uid-1", pod("app-1", restarts=1))
    assert not change.zones_changed
    assert change.poke == "ns/app-1"  # the sidecar may have restarted: pushed to again
    assert change.added is None
    assert change.removed is None


def test_a_new_ip_replaces_the_target() -> None:
    pods = index()
    pods.apply("uid-1", pod("app-1", "10.0.0.1"))
    change = pods.apply("uid-1", pod("app-1", "10.0.0.9"))
    assert change.removed == "ns/app-1"
    assert change.added == ("ns/app-1", "https://10.0.0.9:9901")
    assert pods.targets == {"ns/app-1": "https://10.0.0.9:9901"}


def test_a_pod_that_loses_its_ip_stops_being_a_target_and_counting() -> None:
    pods = index()
    pods.apply("uid-1", pod("app-1"))
    change = pods.apply("uid-1", pod("app-1", None))
    assert change == Change(removed="ns/app-1", zones_changed=True)
    assert pods.targets == {}
    assert pods.zones == {}


def test_deleting_an_unknown_pod_changes_nothing() -> None:
    pods = index()
    pods.apply("uid-1", pod("app-1"))
    assert pods.apply("uid-404", None) == Change()
    assert pods.targets == {"ns/app-1": "https://10.0.0.5:9901"}
    assert pods.zones == {"a": 1}


def test_a_pod_relabelled_from_one_cluster_to_another_moves_between_their_indexes() -> None:
    # A label-selected watch sees a pod that stops matching as DELETED, and the other
    # cluster's watch sees it ADDED.
    first, second = index(), index()
    first.apply("uid-1", pod("app-1"))
    assert first.apply("uid-1", None) == Change(removed="ns/app-1", zones_changed=True)
    second.apply("uid-1", pod("app-1"))
    assert first.targets == {}
    assert first.zones == {}
    assert second.targets == {"ns/app-1": "https://10.0.0.5:9901"}
    assert second.zones == {"a": 1}


def test_a_recreated_pod_of_the_same_name_is_not_removed_by_its_predecessors_deletion() -> None:
    pods = index()
    pods.apply("uid-old", pod("app-1", "10.0.0.1"))
    pods.apply("uid-new", pod("app-1", "10.0.0.2"))
    pods.apply("uid-old", None)
    assert pods.targets == {"ns/app-1": "https://10.0.0.2:9901"}
    assert pods.pod_key("ns/app-1") is not None
    assert pods.zones == {"a": 1}


def test_plain_http_pods_are_refused_counted_and_released() -> None:
    pods = index(plain_allowed=False)
    change = pods.apply("uid-1", pod("app-1", tls=False))
    assert change.refused_changed
    assert change.added is None
    assert change.zones_changed
    assert pods.targets == {}
    assert pods.zones == {"a": 1}
    refused_before = pods.refused
    assert pods.apply("uid-1", None).refused_changed
    assert (refused_before, pods.refused) == (("app-1",), ())


def test_a_resync_rebuilds_the_index_and_names_the_sidecars_that_restarted() -> None:
    pods = index()
    pods.apply("uid-1", pod("app-1", "10.0.0.1"))
    pods.apply("uid-2", pod("app-2", "10.0.0.2"))
    pods.apply("uid-gone", pod("app-3", "10.0.0.3"))
    pokes = pods.reset(
        {"uid-1": pod("app-1", "10.0.0.1", restarts=1), "uid-2": pod("app-2", "10.0.0.2")}
    )
    assert pokes == ["ns/app-1"]
    assert sorted(pods.targets) == ["ns/app-1", "ns/app-2"]
    assert pods.zones == {"a": 2}


def test_a_resync_with_plain_http_now_allowed_makes_refused_pods_targets() -> None:
    pods = index(plain_allowed=False)
    listed = {"uid-1": pod("app-1", tls=False)}
    pods.reset(listed)
    pods.plain_allowed = True
    pods.reset(listed)
    assert pods.refused == ()
    assert pods.targets == {"ns/app-1": "http://10.0.0.5:9901"}
