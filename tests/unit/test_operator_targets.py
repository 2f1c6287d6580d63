"""Which sidecar a client pod is pushed to (gremlinlb.operator.targets, pure)."""

from __future__ import annotations

from typing import Any

from gremlinlb.operator.targets import PodKey, push_target


def pod(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "metadata": {"name": "app-0"},
        "spec": {
            "containers": [
                {
                    "name": "gremlinlb-sidecar",
                    "ports": [{"name": "gremlinlb-admin", "containerPort": 9911}],
                }
            ]
        },
        "status": {
            "podIP": "10.0.0.5",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [
                {"name": "gremlinlb-sidecar", "restartCount": 2, "containerID": "c://1"}
            ],
        },
    }
    for key, value in changes.items():
        base[key] = {**base[key], **value}
    return base


def test_the_admin_port_is_the_named_container_port_and_plain_http_without_admin_tls() -> None:
    assert push_target("ns", pod(), 9901) == (
        "ns/app-0",
        "http://10.0.0.5:9911",
        PodKey("10.0.0.5", True, 2, "c://1"),
    )


def test_a_pod_with_admin_tls_is_pushed_to_over_https() -> None:
    found = push_target(
        "ns", pod(metadata={"annotations": {"gremlinlb.io/admin-tls": "true"}}), 9901
    )
    assert found is not None
    assert found[1] == "https://10.0.0.5:9911"


def test_without_a_named_port_the_clusters_admin_port_is_used() -> None:
    found = push_target("ns", pod(spec={"containers": [{"name": "app"}]}), 9901)
    assert found is not None
    assert found[1] == "http://10.0.0.5:9901"


def test_a_pod_without_an_ip_being_deleted_or_finished_gets_no_push() -> None:
    assert push_target("ns", pod(status={"podIP": None}), 9901) is None
    assert push_target("ns", pod(metadata={"deletionTimestamp": "T"}), 9901) is None
    assert push_target("ns", pod(status={"phase": "Succeeded"}), 9901) is None
