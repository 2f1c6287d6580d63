"""How the in-process client reaches each backend: one gremlinpython connection per host.

Its pooled sockets heal themselves (see transport.py), so a host that failed and recovered is
used again without rebuilding anything.
"""

from __future__ import annotations

import logging
import ssl
import threading
import uuid
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

    def connection(self, endpoint: Endpoint) -> DriverRemoteConnection:
        return self._remote(endpoint, pool_size=self.pool_size, session=None)

    def session(self, endpoint: Endpoint) -> DriverRemoteConnection:
        """A connection bound to a new server-side session: one socket, never reopened."""
        return self._remote(endpoint, pool_size=1, session=uuid.uuid4())

    def probe_client(self, endpoint: Endpoint, timeout: float) -> Client:
        return Client(
            endpoint.url,
            self.traversal_source,
            transport_factory=self._transport_factory(timeout),
            pool_size=1,
            username=self.username,
            password=self.password,
            message_serializer=self.message_serializer,
            headers=self.headers,
        )

    def _remote(
        self, endpoint: Endpoint, *, pool_size: int, session: uuid.UUID | None
    ) -> DriverRemoteConnection:
        return DriverRemoteConnection(
            endpoint.url,
            self.traversal_source,
            transport_factory=self._transport_factory(
                self.request_timeout, reconnect=session is None
            ),
            pool_size=pool_size,
            username=self.username,
            password=self.password,
            message_serializer=self.message_serializer,
            headers=self.headers,
            session=session,
        )

    def _transport_factory(
        self, read_timeout: float, *, reconnect: bool = True
    ) -> Callable[[], PhaseTaggedTransport]:
        def make() -> PhaseTaggedTransport:
            return PhaseTaggedTransport(
                connect_timeout=self.connect_timeout,
                read_timeout=read_timeout,
                write_timeout=self.connect_timeout,
                ssl_context=self.ssl_context,
                reconnect=reconnect,
            )

        return make


class HostConnection:
    """The connection to one host, opened on first use and closed when the host is removed."""

    def __init__(self, endpoint: Endpoint, options: ConnectionOptions) -> None:
        self.endpoint = endpoint
        self._options = options
        self._lock = threading.Lock()
        self._connection: DriverRemoteConnection | None = None

    def get(self) -> DriverRemoteConnection:
        with self._lock:
            if self._connection is None:
                self._connection = self._options.connection(self.endpoint)
            return self._connection

    def current(self) -> DriverRemoteConnection | None:
        with self._lock:
            return self._connection

    def close(self) -> None:
        with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            close_in_background(connection, self.endpoint)


def close_in_background(connection: DriverRemoteConnection | Client, endpoint: Endpoint) -> None:
    """Closing waits for gremlinpython's executor; never make a request thread wait for it."""

    def close() -> None:
        try:
            connection.close()
        except Exception as error:
            log.debug("closing connection to %s failed: %s", endpoint.address, error)

    threading.Thread(target=close, name=f"gremlinlb-close-{endpoint.address}", daemon=True).start()
