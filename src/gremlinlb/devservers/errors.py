"""Errors raised by the dev-server tooling, each worded so the reader knows what to do next."""

from __future__ import annotations

from gremlinlb.core.errors import GremlinLBError


class DevServerError(GremlinLBError, RuntimeError):
    """Base class: anything that stops a development Gremlin Server from being fetched or run."""


class ToolMissingError(DevServerError):
    """A required external program (java, mvn) is not installed or not on PATH."""


class FetchError(DevServerError):
    """Maven could not resolve or copy the Gremlin Server jars."""


class PortInUseError(DevServerError):
    """The port a server should listen on is already taken by another process."""

    def __init__(self, port: int, detail: str = "") -> None:
        self.port = port
        message = (
            f"port {port} on 127.0.0.1 is already in use{': ' + detail if detail else ''}; "
            f"stop whatever listens there or pick another range with --base-port "
            f"(e.g. --base-port {port + 100})"
        )
        super().__init__(message)


class ServerStartError(DevServerError):
    """A Gremlin Server process exited or never answered a traversal during start-up."""
