"""manifests/monitoring/, generated from the chart's dashboard and rules (`make generate`).

The chart ships the same objects (templates/monitoring/); plain manifests are for a cluster
installed without Helm. A unit spec (tests/unit/test_monitoring_sources.py) checks that the
files match what this makes, so editing the chart's files without `make generate` fails it.
"""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent.parent
CHART = REPO / "charts" / "gremlinlb"
DASHBOARD = CHART / "dashboards" / "gremlinlb.json"
RULES = CHART / "rules" / "gremlinlb.rules.yaml"
PLAIN = REPO / "manifests" / "monitoring"

NAMESPACE = "gremlinlb-system"
HEADER = (
    "# Generated from charts/gremlinlb/{source} by `make generate`"
    " (hack/monitoring/manifests.py);\n"
    "# the chart ships the same object (templates/monitoring/). Edit the source, not this file.\n"
)


def plain_manifests() -> dict[str, str]:
    """File name -> text of the objects under manifests/monitoring/ made from the chart's files."""
    rules = yaml.safe_load(RULES.read_text())
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "gremlinlb",
            "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/name": "gremlinlb"},
        },
        "spec": rules,
    }
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "gremlinlb-dashboard",
            "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/name": "gremlinlb", "grafana_dashboard": "1"},
        },
        "data": {"gremlinlb.json": DASHBOARD.read_text().rstrip("\n")},
    }
    return {
        "prometheusrule.yaml": HEADER.format(source="rules/gremlinlb.rules.yaml")
        + yaml.safe_dump(rule, sort_keys=False, width=100),
        "dashboard-configmap.yaml": HEADER.format(source="dashboards/gremlinlb.json")
        + yaml.safe_dump(configmap, sort_keys=False, width=100),
    }


def write_plain_manifests() -> None:
    for name, text in plain_manifests().items():
        (PLAIN / name).write_text(text)


if __name__ == "__main__":
    write_plain_manifests()
