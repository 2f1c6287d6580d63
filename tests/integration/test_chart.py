"""The Helm chart (charts/gremlinlb) as `helm` itself sees it: it lints, its default values render
the objects of manifests/ (so the two ways to install never drift), a bad value is refused with
a message naming it, and each non-default value lands where it should.

`helm` is the one `make k8s-bins` builds from its Go module (hack/k8s/build.sh); these specs
need no cluster. The chart's crds/ is compared with /crds by a unit spec (both generated).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.devcluster.binaries import find_binaries

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "gremlinlb"
NAMESPACE = "gremlinlb-system"
#: The labels Helm's chart adds to manifests/'s (selectors keep manifests/'s name label alone).
HELM_LABELS = (
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
)
Key = tuple[str, str, str]


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    binary = find_binaries().helm
    assert os.access(binary, os.X_OK), f"{binary} not built: run `make k8s-bins`"
    return subprocess.run(
        [str(binary), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        # No kubeconfig, no user's Helm settings: `helm template` alone.
        env={**os.environ, "HELM_CONFIG_HOME": "/nonexistent", "KUBECONFIG": "/dev/null"},
    )


def render(*sets: str, namespace: str = NAMESPACE) -> dict[Key, dict[str, Any]]:
    """`helm template` of the chart with ``--set`` values: every object by kind and name."""
    argv = ["template", "gremlinlb", str(CHART), "--namespace", namespace]
    for value in sets:
        argv += ["--set", value]
    done = helm(*argv)
    assert done.returncode == 0, done.stderr
    return by_key(yaml.safe_load_all(done.stdout))


def by_key(documents: Iterable[Any]) -> dict[Key, dict[str, Any]]:
    found: dict[Key, dict[str, Any]] = {}
    for doc in documents:
        if doc:
            meta = doc["metadata"]
            found[(doc["kind"], meta.get("namespace", ""), meta["name"])] = doc
    return found


def without_helm_labels(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` without the labels only Helm adds, on the object and on its pod template."""
    for meta in (doc["metadata"], doc.get("spec", {}).get("template", {}).get("metadata", {})):
        labels = meta.get("labels") or {}
        for label in HELM_LABELS:
            labels.pop(label, None)
    return doc


def manifests(folder: str = "manifests") -> dict[Key, dict[str, Any]]:
    documents: list[Any] = []
    for path in sorted((REPO / folder).glob("*.yaml")):
        documents += yaml.safe_load_all(path.read_text(encoding="utf-8"))
    return by_key(documents)


def operator(objects: dict[Key, dict[str, Any]]) -> dict[str, Any]:
    deployment = objects[("Deployment", NAMESPACE, "gremlinlb-operator")]
    pod: dict[str, Any] = deployment["spec"]["template"]
    return pod


def operator_args(objects: dict[Key, dict[str, Any]]) -> list[str]:
    args: list[str] = operator(objects)["spec"]["containers"][0]["args"]
    return args


def injector(objects: dict[Key, dict[str, Any]]) -> dict[str, Any]:
    hook: dict[str, Any] = objects[
        ("MutatingWebhookConfiguration", "", "gremlinlb-sidecar-injector")
    ]["webhooks"][0]
    return hook


MONITORING = (
    "monitoring.podMonitor.enabled=true",
    "monitoring.serviceMonitor.enabled=true",
    "monitoring.prometheusRule.enabled=true",
    "monitoring.dashboard.enabled=true",
)


# -- the chart as a whole --------------------------------------------------------------------


def test_helm_lint_finds_nothing_wrong() -> None:
    done = helm("lint", "--strict", "--namespace", NAMESPACE, str(CHART))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


def test_default_values_render_the_objects_of_manifests() -> None:
    chart = {key: without_helm_labels(doc) for key, doc in render().items()}
    plain = manifests()
    # `helm install --create-namespace` makes the namespace; the chart has no Namespace object.
    plain.pop(("Namespace", "", NAMESPACE))
    assert sorted(chart) == sorted(plain)
    for key, doc in plain.items():
        assert chart[key] == doc, key


def test_monitoring_values_on_render_the_objects_of_manifests_monitoring() -> None:
    chart = {key: without_helm_labels(doc) for key, doc in render(*MONITORING).items()}
    plain = manifests("manifests/monitoring")
    assert sorted(key for key in chart if key not in render()) == sorted(plain)
    for key, doc in plain.items():
        assert chart[key] == doc, key


def test_every_object_carries_helms_labels() -> None:
    for key, doc in render().items():
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm", key
        assert labels["app.kubernetes.io/name"] == "gremlinlb-operator", key


def test_another_namespace_is_refused_with_the_way_out() -> None:
    done = helm("template", "gremlinlb", str(CHART), "--namespace", "ops")
    assert done.returncode != 0
    assert "namespace gremlinlb-system only" in done.stderr
    assert "--namespace gremlinlb-system --create-namespace" in done.stderr


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("replicas=0", "at '/replicas': minimum: got 0, want 1"),
        ("webhook.failurePolicy=Never", "at '/webhook/failurePolicy': value must be one of"),
        ("webhook.timeoutSeconds=31", "at '/webhook/timeoutSeconds': maximum: got 31, want 30"),
        ("image.pullPolicy=Sometimes", "at '/image/pullPolicy'"),
        ("resources.limits.memory=lots", "at '/resources/limits/memory'"),
        ("imagee.tag=1", "additional properties 'imagee' not allowed"),
        ("scrapeAnnotations.sidecars=yes", "at '/scrapeAnnotations/sidecars'"),
    ],
)
def test_a_bad_value_is_refused_naming_it(value: str, says: str) -> None:
    done = helm("template", "gremlinlb", str(CHART), "--namespace", NAMESPACE, "--set", value)
    assert done.returncode != 0
    assert "values don't meet the specifications of the schema" in done.stderr
    assert says in done.stderr


# -- each value where it belongs -------------------------------------------------------------


def test_image_values_make_the_operators_image() -> None:
    pod = operator(
        render(
            "image.repository=registry.example/gremlinlb",
            "image.tag=9.9",
            "image.pullPolicy=Always",
        )
    )
    container = pod["spec"]["containers"][0]
    assert container["image"] == "registry.example/gremlinlb:9.9"
    assert container["imagePullPolicy"] == "Always"


def test_replicas_and_resources_reach_the_deployment() -> None:
    objects = render("replicas=3", "resources.limits.memory=1Gi")
    deployment = objects[("Deployment", NAMESPACE, "gremlinlb-operator")]
    assert deployment["spec"]["replicas"] == 3
    resources = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["limits"] == {"memory": "1Gi"}
    assert resources["requests"] == {"cpu": "100m", "memory": "128Mi"}


def test_watch_namespaces_become_namespace_flags() -> None:
    args = operator_args(render("watchNamespaces={team-a,team-b-*}"))
    assert args[-4:] == ["--namespace", "team-a", "--namespace", "team-b-*"]


def test_webhook_policy_and_timeout_reach_the_webhook_configuration() -> None:
    hook = injector(render("webhook.failurePolicy=Ignore", "webhook.timeoutSeconds=10"))
    assert (hook["failurePolicy"], hook["timeoutSeconds"]) == ("Ignore", 10)


def test_the_pdb_can_be_left_out_or_changed() -> None:
    key = ("PodDisruptionBudget", NAMESPACE, "gremlinlb-operator")
    assert key not in render("podDisruptionBudget.enabled=false")
    assert render("podDisruptionBudget.minAvailable=50%")[key]["spec"]["minAvailable"] == "50%"


def test_scheduling_values_reach_the_pod_spec() -> None:
    spec = operator(
        render(
            "priorityClassName=system-cluster-critical",
            "nodeSelector.pool=ops",
            "tolerations[0].key=dedicated,tolerations[0].operator=Exists",
            "affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight=1",
            "affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0]"
            ".preference.matchExpressions[0].key=ops",
            "affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0]"
            ".preference.matchExpressions[0].operator=Exists",
        )
    )["spec"]
    assert spec["priorityClassName"] == "system-cluster-critical"
    assert spec["nodeSelector"] == {"pool": "ops"}
    assert spec["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    # A given affinity replaces the default spreading of replicas.
    assert list(spec["affinity"]) == ["nodeAffinity"]


def test_scrape_annotations_are_off_by_default() -> None:
    objects = render()
    assert "annotations" not in operator(objects)["metadata"]
    assert "--sidecar-scrape-annotations" not in operator_args(objects)


def test_scrape_annotations_on_annotate_the_operator_and_make_it_annotate_sidecars() -> None:
    objects = render("scrapeAnnotations.operator=true", "scrapeAnnotations.sidecars=true")
    assert operator(objects)["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8081",
        "prometheus.io/path": "/metrics",
    }
    assert "--sidecar-scrape-annotations" in operator_args(objects)


def test_sidecar_allowed_hosts_and_extra_args_reach_the_operator() -> None:
    args = operator_args(
        render("sidecar.allowedHosts={10.0.0.0/8,*.graph.internal}", "extraArgs={--push-timeout,3}")
    )
    assert args[-4:] == [
        "--sidecar-allowed-hosts",
        "10.0.0.0/8,*.graph.internal",
        "--push-timeout",
        "3",
    ]
