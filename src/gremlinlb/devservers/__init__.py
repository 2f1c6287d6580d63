"""Local Apache TinkerPop Gremlin Servers for demos and tests (loopback only).

``gremlinlb dev-servers fetch`` caches the jars; :class:`Fleet` starts several servers in parallel;
:class:`GremlinServerProcess` controls one server (stop, kill, pause, resume, restart) so tests can
inject the faults a load balancer must survive.
"""

from __future__ import annotations

from gremlinlb.devservers.errors import (
    DevServerError,
    FetchError,
    PortInUseError,
    ServerStartError,
    ToolMissingError,
)
from gremlinlb.devservers.fetch import (
    DEFAULT_TINKERPOP_VERSION,
    ServerRuntime,
    cache_dir,
    fetch_runtime,
    find_runtime,
)
from gremlinlb.devservers.fleet import DEFAULT_BASE_PORT, Fleet
from gremlinlb.devservers.probe import answers, with_traversal_source
from gremlinlb.devservers.server import (
    DEFAULT_JVM_OPTIONS,
    GremlinServerProcess,
    build_class_archive,
    ensure_runtime,
    find_free_port,
    port_is_free,
)

__all__ = [
    "DEFAULT_BASE_PORT",
    "DEFAULT_JVM_OPTIONS",
    "DEFAULT_TINKERPOP_VERSION",
    "DevServerError",
    "FetchError",
    "Fleet",
    "GremlinServerProcess",
    "PortInUseError",
    "ServerRuntime",
    "ServerStartError",
    "ToolMissingError",
    "answers",
    "build_class_archive",
    "cache_dir",
    "ensure_runtime",
    "fetch_runtime",
    "find_free_port",
    "find_runtime",
    "port_is_free",
    "with_traversal_source",
]
