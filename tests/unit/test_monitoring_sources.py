"""The monitoring files stay one source each: manifests/monitoring/ is generated from the chart's
dashboard and rules, and every dashboard query reads the datasource variable."""

from __future__ import annotations

from hack.monitoring.manifests import PLAIN, plain_manifests
from tests.monitoring_support import dashboard


def test_manifests_monitoring_is_generated_from_the_charts_files() -> None:
    for name, text in plain_manifests().items():
        assert (PLAIN / name).read_text() == text, f"run `make generate`: {name} is stale"


def test_every_panel_reads_the_datasource_variable() -> None:
    panels = [p for p in dashboard()["panels"] if p["type"] != "row"]
    assert panels
    for panel in panels:
        sources = [panel["datasource"], *(t["datasource"] for t in panel["targets"])]
        assert all(s == {"type": "prometheus", "uid": "${datasource}"} for s in sources), panel
