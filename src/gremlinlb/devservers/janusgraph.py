"""JanusGraph Servers for the test suite: real JanusGraph, assembled from Maven like Gremlin Server.

gremlinlb balances JanusGraph fleets, and JanusGraph differs from a plain Gremlin Server where a
balancer can trip: custom GraphBinary/GraphSON types in answers (``RelationIdentifier`` ids,
``Geoshape``) and in requests (JanusGraph's text and geo predicates), and TinkerPop 3.7 rather
than 3.8. This module lives next to the Gremlin Server dev servers rather than in the tests so
both kinds share one fetch path (lock, ``.complete`` marker, Maven repository under the cache)
and one process controller (start, kill, pause, restart) without the tests reaching into
private code; ``gremlinlb dev-servers fetch --janusgraph`` fills the cache.

The jars land in ``$GREMLINLB_CACHE/janusgraph/<version>/lib``: ``janusgraph-server``,
``janusgraph-inmemory`` and ``janusgraph-lucene`` with JanusGraph's own pom imported as a BOM
(without it Maven picks a commons-lang3 the server cannot run with). Each server is in-memory
with a Lucene mixed index; it shares no data with its peers, so tests load each one.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from gremlinlb.devservers.fetch import ServerRuntime, cache_dir, maven_fetch
from gremlinlb.devservers.server import GremlinServerProcess

#: Newest JanusGraph release when this was written; it is built on TinkerPop 3.7.3.
DEFAULT_JANUSGRAPH_VERSION = "1.1.0"
#: The TinkerPop version the default JanusGraph speaks (the README's compatibility notes).
JANUSGRAPH_TINKERPOP_VERSION = "3.7.3"
JANUSGRAPH_MAIN_CLASS = "org.janusgraph.graphdb.server.JanusGraphServer"

#: Like the Gremlin Server dev servers, with more heap: JanusGraph and Lucene load more classes
#: and hold more per graph. slf4j-simple logs warnings only, plus the line that says the port
#: is bound (what ``wait_ready`` reads).
JANUSGRAPH_JVM_OPTIONS: tuple[str, ...] = (
    "-Xms64m",
    "-Xmx384m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:-UsePerfData",
    "-Djava.net.preferIPv4Stack=true",
    "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
    "-Dorg.slf4j.simpleLogger.log.org.apache.tinkerpop.gremlin.server.GremlinServer=info",
)

_REQUIRED_JAR_PREFIXES = (
    "janusgraph-server-",
    "janusgraph-core-",
    "janusgraph-inmemory-",
    "janusgraph-lucene-",
    "gremlin-server-",
    "slf4j-simple-",
)
_RESOURCES = ("janusgraph-server.yaml", "janusgraph.properties", "init.groovy")


def janusgraph_home(version: str = DEFAULT_JANUSGRAPH_VERSION, cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / "janusgraph" / version


def _resource(name: str) -> str:
    bundle = resources.files("gremlinlb.devservers").joinpath("resources", "janusgraph", name)
    return bundle.read_text(encoding="utf-8")


def fetch_janusgraph(
    version: str = DEFAULT_JANUSGRAPH_VERSION, cache: Path | None = None, *, force: bool = False
) -> ServerRuntime:
    """Make sure JanusGraph Server ``version`` is in the cache and return it (idempotent)."""
    cache = cache or cache_dir()
    return maven_fetch(
        janusgraph_home(version, cache),
        version,
        cache,
        render_pom=lambda staging: (
            _resource("pom.xml")
            .replace("@JANUSGRAPH_VERSION@", version)
            .replace("@OUTPUT_DIR@", str(staging))
        ),
        required_jar_prefixes=_REQUIRED_JAR_PREFIXES,
        what=f"JanusGraph Server {version}",
        hint=f"is org.janusgraph:janusgraph-server:{version} on Maven Central and reachable?",
        force=force,
    )


class JanusGraphServerProcess(GremlinServerProcess):
    """A JanusGraph Server (in-memory, Lucene mixed index ``search``, ``g`` bound) on one port.

    The schema is made by the server's init script at every start, so a restarted server has
    the schema and no data, as a freshly started Gremlin Server dev server has an empty graph.
    """

    main_class = JANUSGRAPH_MAIN_CLASS

    def __init__(
        self,
        port: int,
        work_dir: Path | None = None,
        *,
        runtime: ServerRuntime | None = None,
        jvm_options: Sequence[str] = JANUSGRAPH_JVM_OPTIONS,
        host: str = "127.0.0.1",
    ) -> None:
        # No class-data archive: the one the dev servers build holds Gremlin Server's classes.
        super().__init__(
            port,
            work_dir,
            runtime=runtime,
            jvm_options=jvm_options,
            use_class_archive=False,
            host=host,
        )

    def __repr__(self) -> str:
        return f"JanusGraphServerProcess({self.address}, pid={self.pid})"

    def _default_runtime(self) -> ServerRuntime:
        return fetch_janusgraph()

    def command(self) -> list[str]:
        return [
            arg if arg != str(self.work_dir / "gremlin-server.yaml") else self._yaml_path()
            for arg in super().command()
        ]

    def _yaml_path(self) -> str:
        return str(self.work_dir / "janusgraph-server.yaml")

    def _write_config(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        for name in _RESOURCES:
            text = _resource(name)
            text = text.replace("@PORT@", str(self.port)).replace("@HOST@", self.host)
            text = text.replace("@WORK_DIR@", str(self.work_dir))
            (self.work_dir / name).write_text(text, encoding="utf-8")
