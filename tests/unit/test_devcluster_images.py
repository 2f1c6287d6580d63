"""Which container images the node agent runs, and as what (pure naming logic)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.devcluster.agent import ImageCatalog, image_repository


@pytest.mark.parametrize(
    ("image", "repository"),
    [
        ("gremlinlb:0.1.0", "gremlinlb"),
        ("gremlinlb", "gremlinlb"),
        ("tinkerpop/gremlin-server:3.8.2", "tinkerpop/gremlin-server"),
        ("docker.io/tinkerpop/gremlin-server:3.8.2", "tinkerpop/gremlin-server"),
        ("registry.local:5000/team/gremlinlb:1@sha256:abc", "registry.local:5000/team/gremlinlb"),
        ("docker.io/library/python:3.11-slim", "python"),
    ],
)
def test_an_image_reference_names_its_repository_without_tag_or_digest(
    image: str, repository: str
) -> None:
    assert image_repository(image) == repository


def test_the_catalog_runs_gremlinlb_and_gremlin_server_images_of_any_tag_and_nothing_else() -> None:
    catalog = ImageCatalog(bin_dir=Path("/venv/bin"))
    assert catalog.kind("gremlinlb:0.1.0") == "python"
    assert catalog.kind("tinkerpop/gremlin-server:3.8.2") == "gremlin-server"
    assert catalog.kind("nginx:1.27") is None
    assert "gremlinlb:*" in catalog.describe()
