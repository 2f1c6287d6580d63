"""How the in-process client reaches each backend: one gremlinpython connection per host.

A host's connection is replaced as a whole (retired) when the host goes down or is ejected:
every pooled socket opened before is closed once its last request ended, so a server back from
a restart is never failed by a socket to its previous process. Its sockets also heal
themselves (see transport.py).

Each connection's pool has `pool_size` sockets, one request at a time on each. The client
takes a *slot* before it sends, so a request never blocks inside gremlinpython waiting for a
socket of a hung host: it waits here, where ejecting the host wakes it to go elsewhere.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from gremlin_python.driver.client import Client
from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.driver.protocol import (
    ConfigurationError,
    GremlinServerError,
    GremlinServerWSProtocol,
)
from gremlin_python.driver.serializer import GraphBinarySerializersV1

from gremlinlb import sigv4 as signing
from gremlinlb.client.errors import AnswerNotReadableError
from gremlinlb.client.keepalive import Keepalive
from gremlinlb.client.probe import StatusOnlyProtocol
from gremlinlb.client.transport import DEFAULT_MAX_MESSAGE_BYTES, PhaseTaggedTransport
from gremlinlb.core import ConnectionFailure, Endpoint, SigV4Settings
from gremlinlb.ping import answers_ping_now

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
    # pings idle pooled and session sockets, and says when a pooled one is too old
    keepalive: Keepalive | None = None
    # SigV4 on each new socket's upgrade (Neptune IAM auth), read when the socket opens
    sigv4: Callable[[], SigV4Settings] | None = None

    def connection(self, endpoint: Endpoint) -> DriverRemoteConnection:
        return self._remote(endpoint, pool_size=self.pool_size, session=None)

    def session(
        self, endpoint: Endpoint, keep_waiting: Callable[[], bool]
    ) -> DriverRemoteConnection:
        """A connection bound to a new server-side session: one socket, never reopened. A
        statement is waited for as long as `keep_waiting()` (its host still serves)."""
        return self._remote(endpoint, pool_size=1, session=uuid.uuid4(), keep_waiting=keep_waiting)

    def probe_client(self, endpoint: Endpoint, timeout: float) -> Client:
        """A one-socket client whose answers are judged by their status alone (probe.py): a
        result this client cannot decode never fails a probe."""
        serializer = self.message_serializer or GraphBinarySerializersV1()

        def protocol() -> StatusOnlyProtocol:
            return StatusOnlyProtocol(
                serializer,
                username=self.username,
                password=self.password,
                max_content_length=DEFAULT_MAX_MESSAGE_BYTES,
            )

        return Client(
            endpoint.url,
            self.traversal_source,
            protocol_factory=protocol,
            transport_factory=self._transport_factory(endpoint, timeout),
            pool_size=1,
            username=self.username,
            password=self.password,
            message_serializer=serializer,
            headers=self.headers,
        )

    def answers_ping(self, endpoint: Endpoint, budget: float) -> bool:
        """Whether `endpoint`'s server answers a WebSocket ping on a fresh connection within
        `budget` seconds: busy rather than hung (`gremlinlb.core.liveness`)."""
        ssl_context = self.ssl_context if endpoint.scheme == "wss" else None
        try:
            headers = {**(self.headers or {}), **self._sign(endpoint)}
        except signing.SigV4Error:
            return False
        return answers_ping_now(endpoint.url, budget, ssl_context=ssl_context, headers=headers)

    def _sign(self, endpoint: Endpoint) -> dict[str, str]:
        """Fresh SigV4 headers for a new socket to `endpoint` (none when SigV4 is off)."""
        return signing.upgrade_headers(self.sigv4(), endpoint) if self.sigv4 is not None else {}

    def _remote(
        self,
        endpoint: Endpoint,
        *,
        pool_size: int,
        session: uuid.UUID | None,
        keep_waiting: Callable[[], bool] | None = None,
    ) -> DriverRemoteConnection:
        serializer = self.message_serializer or GraphBinarySerializersV1()

        def protocol() -> GremlinServerWSProtocol:
            return ReadGuardProtocol(
                serializer,
                username=self.username,
                password=self.password,
                max_content_length=DEFAULT_MAX_MESSAGE_BYTES,
            )

        return DriverRemoteConnection(
            endpoint.url,
            self.traversal_source,
            protocol_factory=protocol,
            transport_factory=self._transport_factory(
                endpoint,
                self.request_timeout,
                reconnect=session is None,
                keep_waiting=keep_waiting,
                keepalive=self.keepalive,
            ),
            pool_size=pool_size,
            username=self.username,
            password=self.password,
            message_serializer=serializer,
            headers=self.headers,
            session=session,
        )

    def _transport_factory(
        self,
        endpoint: Endpoint,
        read_timeout: float,
        *,
        reconnect: bool = True,
        keep_waiting: Callable[[], bool] | None = None,
        keepalive: Keepalive | None = None,
    ) -> Callable[[], PhaseTaggedTransport]:
        def make() -> PhaseTaggedTransport:
            return PhaseTaggedTransport(
                connect_timeout=self.connect_timeout,
                read_timeout=read_timeout,
                write_timeout=self.connect_timeout,
                ssl_context=self.ssl_context,
                reconnect=reconnect,
                keep_waiting=keep_waiting,
                keepalive=keepalive,
                sign=partial(self._sign, endpoint) if self.sigv4 is not None else None,
            )

        return make


class ReadGuardProtocol(GremlinServerWSProtocol):  # type: ignore[misc]
    """gremlinpython's protocol, except that an answer it cannot decode is the request's error.

    gremlinpython raises whatever its deserializer raised (ValueError for a type it does not
    know, KeyError for an error frame without a request id, ...) and leaves the socket in the
    pool mid-stream, where the next request would read the rest of this answer. Here the socket
    is closed (it reconnects on next use) and the error says what happened.
    """

    def data_received(self, message: Any, results_dict: dict[str, Any]) -> Any:
        try:
            return super().data_received(message, results_dict)
        except (GremlinServerError, ConnectionFailure, ConfigurationError):
            raise
        except Exception as error:
            transport = getattr(self, "_transport", None)
            if isinstance(transport, PhaseTaggedTransport):
                transport.discard_socket()
            results_dict.clear()  # one request at a time per socket: only this one was there
            status = self._status_without_request_id(message)
            if status is not None:  # e.g. 499: the server could not read the request itself
                raise GremlinServerError(status) from error
            url = getattr(transport, "_url", "") or "the server"
            raise AnswerNotReadableError(
                url,
                f"gremlinpython could not decode it ({type(error).__name__}: {error})",
                "return types gremlinpython can read (e.g. project()/valueMap() instead of "
                "tree(), or a serializer that knows the type).",
            ) from error

    def _status_without_request_id(self, message: Any) -> dict[str, Any] | None:
        """The error status of an answer that names no request (the server could not read
        the request's id), which gremlinpython fails on with a KeyError."""
        try:
            decoded = self._message_serializer.deserialize_message(message)
        except Exception:
            return None
        status = decoded.get("status") or {}
        if decoded.get("requestId") not in (None, "None") or status.get("code") in (200, 204, 206):
            return None
        return {
            "code": status.get("code"),
            "message": f"{status.get('message')} (an answer naming no request)",
            "attributes": status.get("attributes") or {},
        }


class Generation:
    """One pooled connection of a host and the slots that gate it (one per pooled socket)."""

    def __init__(self, endpoint: Endpoint, connection: DriverRemoteConnection, size: int) -> None:
        self.endpoint = endpoint
        self.connection = connection
        self._free = size
        self._busy = 0
        self._retired = False
        self._closed = False
        self._changed = threading.Condition()

    @property
    def retired(self) -> bool:
        return self._retired

    def take(self, timeout: float | None = None) -> bool:
        """A slot: at once if `timeout` is 0, else waiting up to `timeout` seconds (None:
        without bound). False if none came in time or the generation was retired."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while not self._retired and self._free == 0:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._changed.wait(left)
            if self._retired:
                return False
            self._free -= 1
            self._busy += 1
            return True

    def give_back(self) -> None:
        with self._changed:
            self._free += 1
            self._busy -= 1
            self._changed.notify()
            close = self._retired and self._busy == 0 and not self._closed
            self._closed = self._closed or close
        if close:
            close_in_background(self.connection, self.endpoint)

    def retire(self) -> None:
        """No new request here; the sockets close once the requests on them ended."""
        with self._changed:
            if self._retired:
                return
            self._retired = True
            self._changed.notify_all()
            close = self._busy == 0
            self._closed = close
        if close:
            close_in_background(self.connection, self.endpoint)


class HostConnection:
    """The connection to one host, opened on first use, replaced when retired."""

    def __init__(self, endpoint: Endpoint, options: ConnectionOptions) -> None:
        self.endpoint = endpoint
        self._options = options
        self._lock = threading.Lock()
        self._generation: Generation | None = None

    def generation(self) -> Generation:
        with self._lock:
            if self._generation is None:
                connection = self._options.connection(self.endpoint)
                self._generation = Generation(self.endpoint, connection, self._options.pool_size)
            return self._generation

    def current(self) -> DriverRemoteConnection | None:
        with self._lock:
            return None if self._generation is None else self._generation.connection

    def retire(self) -> None:
        """Every socket opened so far goes (after its request); the next request opens anew."""
        with self._lock:
            generation, self._generation = self._generation, None
        if generation is not None:
            generation.retire()

    close = retire


def close_in_background(connection: DriverRemoteConnection | Client, endpoint: Endpoint) -> None:
    """Closing waits for gremlinpython's executor; never make a request thread wait for it."""

    def close() -> None:
        try:
            connection.close()
        except Exception as error:
            log.debug("closing connection to %s failed: %s", endpoint.address, error)

    threading.Thread(target=close, name=f"gremlinlb-close-{endpoint.address}", daemon=True).start()
