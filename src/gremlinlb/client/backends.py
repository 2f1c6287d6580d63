"""Per-host gremlinpython connections, replaced when they break.

gremlinpython never reconnects a socket the server dropped: the dead connection goes back into
its pool. So a host that fails gets a fresh DriverRemoteConnection on its next use, and the old
one is retired: it takes no new requests and closes once its in-flight requests are done.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gremlin_python.driver.client import Client
from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection

from gremlinlb.client.transport import PhaseTaggedTransport
from gremlinlb.core import Endpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectionOptions:
    """How to reach every backend: credentials, TLS, serializer, pool and timeouts."""

    traversal_source: str = "g"
    username: str = ""
    password: str = ""
    ssl_context: ssl.SSLContext | None = None
    message_serializer: Any = None  # a gremlinpython serializer; None = GraphBinary v1
    pool_size: int = 8
    connect_timeout: float = 5.0
    request_timeout: float = 30.0
    headers: dict[str, str] | None = None

    def transport_factory(self, read_timeout: float) -> Callable[[], PhaseTaggedTransport]:
        def make() -> PhaseTaggedTransport:
            return PhaseTaggedTransport(
                connect_timeout=self.connect_timeout,
                read_timeout=read_timeout,
                write_timeout=self.connect_timeout,
                ssl_context=self.ssl_context,
            )

        return make

    def connection(self, endpoint: Endpoint) -> DriverRemoteConnection:
        return DriverRemoteConnection(
            endpoint.url,
            self.traversal_source,
            transport_factory=self.transport_factory(self.request_timeout),
            pool_size=self.pool_size,
            username=self.username,
            password=self.password,
            message_serializer=self.message_serializer,
            headers=self.headers,
        )

    def probe_client(self, endpoint: Endpoint, timeout: float) -> Client:
        return Client(
            endpoint.url,
            self.traversal_source,
            transport_factory=self.transport_factory(timeout),
            pool_size=1,
            username=self.username,
            password=self.password,
            message_serializer=self.message_serializer,
            headers=self.headers,
        )


class _Tracked:
    """A DriverRemoteConnection with a count of the requests using it."""

    def __init__(self, connection: DriverRemoteConnection) -> None:
        self.connection = connection
        self.in_flight = 0
        self.retired = False


class HostConnections:
    """The live connection to one host, created lazily, swapped out after a failure."""

    def __init__(self, endpoint: Endpoint, options: ConnectionOptions) -> None:
        self.endpoint = endpoint
        self._options = options
        self._lock = threading.Lock()
        self._current: _Tracked | None = None
        self._closed = False

    def lease(self) -> _Tracked:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"connections to {self.endpoint.address} are closed")
            if self._current is None:
                self._current = _Tracked(self._options.connection(self.endpoint))
            self._current.in_flight += 1
            return self._current

    def give_back(self, tracked: _Tracked) -> None:
        with self._lock:
            tracked.in_flight -= 1
            close_now = tracked.retired and tracked.in_flight == 0
        if close_now:
            _close_in_background(tracked.connection, self.endpoint)

    def retire(self) -> None:
        """Stop using the current connection; it closes when its requests are done."""
        with self._lock:
            tracked, self._current = self._current, None
            if tracked is None:
                return
            tracked.retired = True
            close_now = tracked.in_flight == 0
        if close_now:
            _close_in_background(tracked.connection, self.endpoint)

    def current(self) -> DriverRemoteConnection | None:
        with self._lock:
            return self._current.connection if self._current else None

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.retire()


def _close_in_background(connection: DriverRemoteConnection | Client, endpoint: Endpoint) -> None:
    """Closing waits for gremlinpython's executor; never make a request thread wait for it."""

    def close() -> None:
        try:
            connection.close()
        except Exception as error:
            log.debug("closing connection to %s failed: %s", endpoint.address, error)

    threading.Thread(target=close, name=f"gremlinlb-close-{endpoint.address}", daemon=True).start()
