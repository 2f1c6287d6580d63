"""The monitoring sources and what the specs read from them: Prometheus's binaries, the queries
of the dashboard and the docs, and manifests/monitoring/ generated from the chart's files.

The queries are always read from the files a person reads (the dashboard JSON, the docs'
```promql blocks and inline PromQL), never from a list kept here, so none can drift unchecked.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "gremlinlb"
DASHBOARD = CHART / "dashboards" / "gremlinlb.json"
RULES = CHART / "rules" / "gremlinlb.rules.yaml"
RULE_TESTS = REPO / "tests" / "monitoring" / "rules_test.yaml"
PLAIN = REPO / "manifests" / "monitoring"
DOCS = [REPO / "README.md", REPO / "sidecar" / "README.md", REPO / "operator" / "README.md"]
DOCS += sorted((REPO / "docs").glob("*.md"))

#: Grafana's variables, as a person viewing every namespace gets them; the rate window holds
#: several scrapes of the specs' 1 s interval.
VARIABLES = {"$__rate_interval": "15s", "$namespace": ".*"}


def prometheus_bin(name: str) -> Path:
    """prometheus or promtool from `make prometheus` (GREMLINLB_PROMETHEUS_BIN or .cache)."""
    where = os.environ.get("GREMLINLB_PROMETHEUS_BIN")
    found = Path(where) if where else REPO / ".cache" / "prometheus" / "usr" / "bin"
    path = found / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make prometheus` first", pytrace=False)
    return path


@dataclass(frozen=True)
class Query:
    where: str
    expr: str
    #: Labels every series of the answer must have.
    labels: frozenset[str]

    def resolved(self) -> str:
        expr = self.expr
        for name, value in VARIABLES.items():
            expr = expr.replace(name, value)
        return expr


def dashboard() -> dict[str, Any]:
    found: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return found


def dashboard_queries() -> list[Query]:
    """Every panel's targets; a legend's {{label}}s name the labels it needs."""
    queries = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", ()):
            legend = target.get("legendFormat", "")
            queries.append(
                Query(
                    f"dashboard: {panel['title']} ({target['refId']})",
                    target["expr"],
                    frozenset(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend)),
                )
            )
    return queries


_FENCE = re.compile(r"^```promql\n(.*?)^```", re.MULTILINE | re.DOTALL)
_INLINE = re.compile(r"`([^`\n]*\bgremlinlb_\w+[^`\n]*)`")
#: An inline span is PromQL when it calls a function or aggregates (a bare name is a mention).
_CALL = re.compile(
    r"\b(sum|rate|increase|max|min|avg|histogram_quantile|count)\s*(by\s*\([^)]*\)\s*)?\("
)
_BY = re.compile(r"\bby\s*\(([^)]*)\)")


def docs_queries() -> list[Query]:
    """```promql blocks (one query a line) and inline code spans that call PromQL functions."""
    queries = []
    for path in DOCS:
        text = path.read_text()
        name = path.relative_to(REPO)
        lines = [q for block in _FENCE.findall(text) for q in block.splitlines()]
        lines += [span for span in _INLINE.findall(text) if _CALL.search(span)]
        for line in lines:
            expr = line.split(" #", 1)[0].strip()
            if expr:
                queries.append(Query(f"{name}: {expr}", expr, _outer_by(expr)))
    return queries


def _outer_by(expr: str) -> frozenset[str]:
    """The labels of the first `by (...)` clause: what the answer is grouped by (less `le`,
    which histogram_quantile consumes)."""
    match = _BY.search(expr)
    if match is None:
        return frozenset()
    labels = {label.strip() for label in match.group(1).split(",") if label.strip()}
    if expr.startswith("histogram_quantile("):
        labels.discard("le")
    return frozenset(labels)


# -- manifests/monitoring/, generated from the chart's files ---------------------------------------

NAMESPACE = "gremlinlb-system"
HEADER = (
    "# Generated from charts/gremlinlb/{source} by `make generate` (tests/monitoring_support.py);\n"
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
