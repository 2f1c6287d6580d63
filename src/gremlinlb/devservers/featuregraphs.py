"""A Gremlin Server holding TinkerPop's test graphs, for TinkerPop's own feature suite.

The feature files (in TinkerPop's gremlin-test jar) run against the graphs ``modern``,
``classic``, ``crew``, ``sink`` and ``grateful`` and an empty graph, each behind the traversal
source the step definitions name (``gmodern`` ... ``ggraph``). This server serves them all, loaded
at start-up by its init script as TinkerPop's own server tests do; it is the same JVM and the same
jars as the other dev servers, only its configuration differs (``resources/features``).
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from gremlinlb.devservers.server import GremlinServerProcess

#: The traversal source for each test graph, as the feature files name the graphs.
TRAVERSAL_SOURCES = {
    "empty": "ggraph",
    "modern": "gmodern",
    "classic": "gclassic",
    "crew": "gcrew",
    "sink": "gsink",
    "grateful": "ggrateful",
}

_RESOURCES = ("gremlin-server.yaml", "tinkergraph.properties", "init.groovy")

#: Gryo (Kryo) reads the grateful graph's data file by reflection into java.base, which Java 17
#: refuses unless opened; the same opens as TinkerPop's bin/gremlin-server.sh passes.
OPENS_FOR_GRYO: tuple[str, ...] = tuple(
    f"--add-opens=java.base/{package}=ALL-UNNAMED"
    for package in (
        "java.io",
        "java.nio",
        "sun.nio.cs",
        "java.lang",
        "java.lang.invoke",
        "java.lang.reflect",
        "java.util",
        "java.util.concurrent",
        "java.util.concurrent.atomic",
        "java.net",
    )
)


class TestGraphsServerProcess(GremlinServerProcess):
    """A Gremlin Server on one port with TinkerPop's test graphs (and ``g`` on the empty one)."""

    def __init__(
        self,
        port: int,
        work_dir: Path | None = None,
        *,
        extra_jvm_options: Sequence[str] = OPENS_FOR_GRYO,
        **options: Any,
    ) -> None:
        super().__init__(port, work_dir, extra_jvm_options=extra_jvm_options, **options)

    def __repr__(self) -> str:
        return f"TestGraphsServerProcess({self.address}, pid={self.pid})"

    def _write_config(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        bundle = resources.files("gremlinlb.devservers").joinpath("resources", "features")
        for name in _RESOURCES:
            text = bundle.joinpath(name).read_text(encoding="utf-8")
            text = text.replace("@PORT@", str(self.port)).replace("@HOST@", self.host)
            text = text.replace("@WORK_DIR@", str(self.work_dir))
            (self.work_dir / name).write_text(text, encoding="utf-8")
