"""What the injection webhook adds to a pod."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from gremlinlb.operator.spec import parse_spec
from gremlinlb.operator.webhook import (
    Injection,
    already_injected,
    injection,
    native_sidecars,
    unknown_cluster_message,
    webhook_configuration,
)
from gremlinlb.sidecar.config import OPTIONS

REPO = Path(__file__).resolve().parents[2]


def pod(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "labels": {"gremlinlb.io/inject": "graph"}},
        "spec": {"containers": [{"name": "web", "image": "web:1"}], **spec},
    }


def cluster(**extra: Any) -> Any:
    return parse_spec("graph", {"service": {"name": "gremlin"}, **extra})


def test_the_sidecar_is_a_native_sidecar_placed_first() -> None:
    changes = injection(
        pod(initContainers=[{"name": "migrate", "image": "m:1"}]),
        "graph",
        cluster(),
        ["10.0.0.1:8182"],
    )
    assert changes is not None
    init = changes["spec"]["initContainers"]
    assert [c["name"] for c in init] == ["gremlinlb-sidecar", "migrate"]
    sidecar = init[0]
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["args"] == ["sidecar"]
    assert sidecar["ports"] == [
        {"name": "gremlinlb-admin", "containerPort": 9901, "protocol": "TCP"}
    ]
    assert sidecar["startupProbe"]["httpGet"] == {
        "path": "/healthz",
        "port": "gremlinlb-admin",
        "scheme": "HTTP",
    }
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert env["GREMLINLB_ENDPOINTS"] == "10.0.0.1:8182"
    assert env["GREMLINLB_LISTEN"] == "127.0.0.1:8182"
    assert env["GREMLINLB_ADMIN"] == "0.0.0.0:9901"
    assert changes["metadata"]["annotations"]["gremlinlb.io/injected"] == "graph"


def test_the_token_and_state_volumes_are_added_next_to_the_pods_own() -> None:
    changes = injection(pod(volumes=[{"name": "data", "emptyDir": {}}]), "graph", cluster(), [])
    assert changes is not None
    volumes = {v["name"]: v for v in changes["spec"]["volumes"]}
    assert list(volumes) == ["data", "gremlinlb-token", "gremlinlb-state"]
    assert volumes["gremlinlb-token"]["secret"]["secretName"] == "graph-gremlinlb-token"
    mounts = changes["spec"]["initContainers"][0]["volumeMounts"]
    assert {m["name"]: m["mountPath"] for m in mounts} == {
        "gremlinlb-token": "/var/run/gremlinlb/token",
        "gremlinlb-state": "/var/run/gremlinlb/state",
    }


def test_no_endpoints_are_passed_when_none_is_known() -> None:
    changes = injection(pod(), "graph", cluster(), [])
    assert changes is not None
    names = [e["name"] for e in changes["spec"]["initContainers"][0]["env"]]
    assert "GREMLINLB_ENDPOINTS" not in names


def test_credentials_and_ca_come_from_their_secrets() -> None:
    spec = cluster(
        tls={"enabled": True, "caSecretRef": {"name": "ca", "key": "bundle.pem"}},
        credentialsSecretRef={"name": "creds"},
    )
    changes = injection(pod(), "graph", spec, [])
    assert changes is not None
    sidecar = changes["spec"]["initContainers"][0]
    env = {e["name"]: e for e in sidecar["env"]}
    assert env["GREMLINLB_BACKEND_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "creds", "key": "password"}
    }
    assert env["GREMLINLB_BACKEND_CA_FILE"]["value"] == "/var/run/gremlinlb/ca/ca.crt"
    ca = next(v for v in changes["spec"]["volumes"] if v["name"] == "gremlinlb-ca")
    assert ca["secret"] == {"secretName": "ca", "items": [{"key": "bundle.pem", "path": "ca.crt"}]}


def test_injection_is_idempotent() -> None:
    first = injection(pod(), "graph", cluster(), [])
    assert first is not None
    injected = pod(**first["spec"])
    assert already_injected(injected)
    assert injection(injected, "graph", cluster(), []) is None


def test_settings_reach_the_sidecar_through_its_own_environment_variables() -> None:
    """Every variable the webhook sets is one the sidecar reads (with credentials and a CA)."""
    known = {option.env for option in OPTIONS} | {"GREMLINLB_BACKEND_PASSWORD"}
    spec = cluster(
        healthCheck={"interval": 3},
        tls={"enabled": True, "caSecretRef": {"name": "ca"}},
        credentialsSecretRef={"name": "creds"},
        sidecar={"memoryBudgetBytes": 200 * 1024 * 1024},
    )
    changes = injection(pod(), "graph", spec, ["10.0.0.1:8182"], Injection(admin_tls=True))
    assert changes is not None
    env = {e["name"]: e.get("value") for e in changes["spec"]["initContainers"][0]["env"]}
    assert env["GREMLINLB_HEALTH_INTERVAL"] == "3.0"
    assert env["GREMLINLB_POLICY"] == "round_robin"
    assert {name for name in env if name.startswith("GREMLINLB_")} <= known


def test_an_unknown_cluster_is_named_with_the_existing_ones() -> None:
    message = unknown_cluster_message("shop", "grpah", ["graph", "analytics"])
    assert "no GremlinCluster named 'grpah' in namespace 'shop'" in message
    assert "analytics, graph" in message


def test_the_webhook_only_sees_labelled_pods_outside_system_namespaces() -> None:
    config = webhook_configuration("x", {"service": {"namespace": "n", "name": "s", "port": 443}})
    (hook,) = config["webhooks"]
    assert hook["objectSelector"] == {
        "matchExpressions": [{"key": "gremlinlb.io/inject", "operator": "Exists"}]
    }
    assert "kube-system" in hook["namespaceSelector"]["matchExpressions"][0]["values"]
    assert hook["rules"][0]["operations"] == ["CREATE"]
    assert hook["clientConfig"]["service"]["path"] == "/inject-sidecar"


def test_the_webhook_manifest_is_the_generated_one() -> None:
    documents = list(yaml.safe_load_all((REPO / "manifests" / "30-webhook.yaml").read_text()))
    generated = webhook_configuration(
        "gremlinlb-sidecar-injector",
        {"service": {"namespace": "gremlinlb-system", "name": "gremlinlb-operator", "port": 443}},
    )
    assert documents == [generated]


def test_native_sidecars_are_used_from_kubernetes_1_29() -> None:
    assert native_sidecars({"major": "1", "minor": "29", "gitVersion": "v1.29.0"})
    assert native_sidecars({"major": "1", "minor": "31+", "gitVersion": "v1.31.2-eks-7f9249a"})
    assert not native_sidecars({"major": "1", "minor": "28+", "gitVersion": "v1.28.9-gke.1"})
    assert not native_sidecars({"major": "1", "minor": "27"})


def test_before_1_29_the_sidecar_is_the_first_regular_container() -> None:
    changes = injection(pod(), "graph", cluster(), [], Injection(native=False))
    assert changes is not None
    assert "initContainers" not in changes["spec"]
    sidecar, app = changes["spec"]["containers"]
    assert (sidecar["name"], app["name"]) == ("gremlinlb-sidecar", "web")
    assert "restartPolicy" not in sidecar


def test_the_sidecar_is_told_which_hosts_it_may_be_pushed() -> None:
    changes = injection(pod(), "graph", cluster(tls={"enabled": True}), [])
    assert changes is not None
    env = {e["name"]: e.get("value") for e in changes["spec"]["initContainers"][0]["env"]}
    assert env["GREMLINLB_BACKEND_TLS"] == "true"
    assert env["GREMLINLB_ALLOWED_HOSTS"].split(",")[0] == "10.0.0.0/8"
    plain = injection(pod(), "graph", cluster(), [], Injection(allowed_hosts=()))
    assert plain is not None
    names = {e["name"] for e in plain["spec"]["initContainers"][0]["env"]}
    assert not {"GREMLINLB_BACKEND_TLS", "GREMLINLB_ALLOWED_HOSTS"} & names


def test_with_a_push_ca_the_admin_api_serves_https_from_the_token_secret() -> None:
    changes = injection(pod(), "graph", cluster(), [], Injection(admin_tls=True))
    assert changes is not None
    sidecar = changes["spec"]["initContainers"][0]
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert env["GREMLINLB_ADMIN_TLS_CERT_FILE"] == "/var/run/gremlinlb/token/tls.crt"
    assert env["GREMLINLB_ADMIN_TLS_KEY_FILE"] == "/var/run/gremlinlb/token/tls.key"
    assert sidecar["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert changes["metadata"]["annotations"]["gremlinlb.io/admin-tls"] == "true"


def test_an_injected_sidecar_watches_the_operator_verified_by_the_push_ca() -> None:
    url = "https://gremlinlb-operator.gremlinlb-system.svc:8444"
    how = Injection(admin_tls=True, operator_url=url)
    changes = injection(pod(), "graph", cluster(), [], how)
    assert changes is not None
    env = changes["spec"]["initContainers"][0]["env"]
    values = {e["name"]: e.get("value") for e in env}
    fields = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in env}
    assert values["GREMLINLB_OPERATOR_URL"] == url
    assert values["GREMLINLB_OPERATOR_CA_FILE"] == "/var/run/gremlinlb/token/ca.crt"
    assert fields["GREMLINLB_POD_NAME"] == "metadata.name"
    # The kubelet expands $(...) from a variable defined before it.
    names = [e["name"] for e in env]
    assert names.index("GREMLINLB_POD_NAMESPACE") < names.index("GREMLINLB_OPERATOR_CLUSTER")
    assert fields["GREMLINLB_POD_NAMESPACE"] == "metadata.namespace"
    assert values["GREMLINLB_OPERATOR_CLUSTER"] == "$(GREMLINLB_POD_NAMESPACE)/graph"


def injected_env(how: Injection, **extra: Any) -> dict[str, Any]:
    changes = injection(pod(), "graph", cluster(**extra), [], how)
    assert changes is not None
    return {e["name"]: e.get("value") for e in changes["spec"]["initContainers"][0]["env"]}


def test_a_plain_http_watch_is_injected_only_into_a_cluster_that_allows_plain_http() -> None:
    how = Injection(operator_url="http://gremlinlb-operator.gremlinlb-system.svc:8444")
    allowed = injected_env(how, sidecar={"allowPlainHttpPush": True})
    assert allowed["GREMLINLB_OPERATOR_URL"] == how.operator_url
    assert allowed["GREMLINLB_ALLOW_PLAIN_HTTP_WATCH"] == "true"
    refused = injected_env(how)
    assert "GREMLINLB_OPERATOR_URL" not in refused
    assert "GREMLINLB_ALLOW_PLAIN_HTTP_WATCH" not in refused


def test_an_https_watch_is_injected_without_the_plain_http_opt_in() -> None:
    how = Injection(admin_tls=True, operator_url="https://op.example:8444")
    env = injected_env(how, sidecar={"allowPlainHttpPush": True})
    assert env["GREMLINLB_OPERATOR_URL"] == "https://op.example:8444"
    assert "GREMLINLB_ALLOW_PLAIN_HTTP_WATCH" not in env


def test_without_a_watch_url_an_injected_sidecar_waits_for_pushes() -> None:
    changes = injection(pod(), "graph", cluster(), [], Injection(admin_tls=True))
    assert changes is not None
    names = {e["name"] for e in changes["spec"]["initContainers"][0]["env"]}
    assert "GREMLINLB_OPERATOR_URL" not in names


def test_the_injected_memory_limit_is_sized_from_the_sidecars_memory_budget() -> None:
    default = injection(pod(), "graph", cluster(), [])
    bigger = injection(
        pod(),
        "graph",
        cluster(sidecar={"memoryBudgetBytes": 200 * 1024 * 1024, "clientPauseBytes": 1048576}),
        [],
    )
    assert default is not None
    assert bigger is not None
    plain = default["spec"]["initContainers"][0]
    sized = bigger["spec"]["initContainers"][0]
    assert plain["resources"]["limits"]["memory"] == "256Mi"
    assert sized["resources"]["limits"]["memory"] == "360Mi"
    env = {e["name"]: e.get("value") for e in sized["env"]}
    assert env["GREMLINLB_MEMORY_BUDGET_BYTES"] == str(200 * 1024 * 1024)
    assert env["GREMLINLB_CLIENT_PAUSE_BYTES"] == "1048576"
    assert "GREMLINLB_CLIENT_MAX_QUEUED_BYTES" not in env
    assert "GREMLINLB_MEMORY_BUDGET_BYTES" not in {e["name"] for e in plain["env"]}


def test_the_traversal_sources_to_probe_reach_the_sidecar() -> None:
    changes = injection(pod(), "graph", cluster(traversalSources=["g2", "tenant_a"]), [])
    assert changes is not None
    env = {e["name"]: e.get("value") for e in changes["spec"]["initContainers"][0]["env"]}
    assert env["GREMLINLB_TRAVERSAL_SOURCES"] == "g2,tenant_a"


def test_scrape_annotations_point_prometheus_at_the_sidecars_metrics() -> None:
    how = Injection(scrape_annotations=True, admin_tls=True)
    changes = injection(pod(), "graph", cluster(sidecar={"adminPort": 9911}), [], how)
    assert changes is not None
    annotations = changes["metadata"]["annotations"]
    assert {k: v for k, v in annotations.items() if k.startswith("prometheus.io/")} == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9911",
        "prometheus.io/path": "/metrics",
        "prometheus.io/scheme": "https",  # admin TLS: the admin API serves HTTPS only
    }


def test_scrape_annotations_are_added_only_when_asked() -> None:
    changes = injection(pod(), "graph", cluster(), [])
    assert changes is not None
    assert not any(k.startswith("prometheus.io/") for k in changes["metadata"]["annotations"])


def test_a_pod_with_its_own_scrape_annotations_keeps_them() -> None:
    own = pod()
    own["metadata"]["annotations"] = {"prometheus.io/scrape": "true", "prometheus.io/port": "80"}
    changes = injection(own, "graph", cluster(), [], Injection(scrape_annotations=True))
    assert changes is not None
    annotations = changes["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "80"
    assert "prometheus.io/path" not in annotations


def test_sigv4_and_the_status_probe_of_the_cluster_reach_the_sidecar() -> None:
    spec = cluster(
        sigv4={"enabled": True, "region": "us-east-1"},
        healthCheck={"statusProbe": True},
    )
    changes = injection(pod(), "graph", spec, ["10.0.0.1:8182"])
    assert changes is not None
    env = {e["name"]: e.get("value") for e in changes["spec"]["initContainers"][0]["env"]}
    assert (env["GREMLINLB_SIGV4_ENABLED"], env["GREMLINLB_SIGV4_REGION"]) == ("true", "us-east-1")
    assert env["GREMLINLB_SIGV4_SERVICE"] == "neptune-db"
    assert env["GREMLINLB_HEALTH_STATUS_PROBE"] == "true"
