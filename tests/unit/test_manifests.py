"""manifests/: what they promise about availability and privilege, read from the files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]


def documents(*paths: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in paths:
        found += [d for d in yaml.safe_load_all((REPO / path).read_text()) if d]
    return found


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def test_two_operator_replicas_roll_and_drain_without_losing_the_webhook() -> None:
    docs = documents("manifests/20-operator.yaml")
    deployment = one(docs, "Deployment", "gremlinlb-operator")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    budget = one(docs, "PodDisruptionBudget", "gremlinlb-operator")
    assert budget["spec"]["minAvailable"] == 1
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_the_workload_role_is_bound_per_namespace_never_cluster_wide() -> None:
    docs = documents("manifests/10-rbac.yaml", "manifests/examples/gremlincluster.yaml")
    one(docs, "ClusterRole", "gremlinlb-operator-workload")
    cluster_bindings = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    assert {b["roleRef"]["name"] for b in cluster_bindings} == {"gremlinlb-operator"}
    example = documents("manifests/examples/gremlincluster.yaml")
    binding = one(example, "RoleBinding", "gremlinlb-operator")
    assert "namespace" not in binding["metadata"]  # applied into the cluster's namespace
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "gremlinlb-operator-workload",
    }


def test_no_rule_deletes_anything_or_lists_secrets() -> None:
    rules = [
        rule
        for d in documents("manifests/10-rbac.yaml")
        if d["kind"] in ("ClusterRole", "Role")
        for rule in d["rules"]
    ]
    assert not [r for r in rules if {"delete", "deletecollection", "*"} & set(r["verbs"])]
    secret_rules = [r for r in rules if "secrets" in r["resources"]]
    assert not [r for r in secret_rules if {"list", "watch"} & set(r["verbs"])]
