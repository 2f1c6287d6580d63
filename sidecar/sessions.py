"""Sessions and `g.tx()`: a client connection's session requests live on one backend
connection, on one server, for the client connection's life.

Gremlin Server keeps a session's state (and an open transaction) on the connection it was
opened on, so a session is never moved: if that connection fails, the request in flight and
every later session request on that client connection get 500 "session lost", never a
silent new session elsewhere. A statement that outlives request_timeout gets 598 for that
request only and says nothing about its host (a long transaction must not eject the host its
session lives on).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from gremlinlb.sidecar import answers
from gremlinlb.sidecar.answers import ANSWERED, ClientLeftError
from gremlinlb.sidecar.backend_connection import BackendConnection
from gremlinlb.sidecar.bigframes import backend_frame
from gremlinlb.sidecar.exchange import Attempt, Exchange
from gremlinlb.sidecar.frames import Channel

from gremlinlb.core import (
    Balancer,
    BalancerClosedError,
    ConnectionFailure,
    Lease,
    NoHealthyEndpointError,
    Outcome,
)

if TYPE_CHECKING:
    from gremlinlb.sidecar.clients import ClientConnection
    from gremlinlb.sidecar.proxy import Proxy

log = logging.getLogger(__name__)


class SessionPin:
    """The backend connection one client connection's sessions live on, for its whole life."""

    def __init__(self, balancer: Balancer, lease: Lease, connection: BackendConnection):
        self.lease = lease
        self.endpoint = lease.endpoint
        self.connection = connection
        self.broken: BaseException | None = None
        self._balancer = balancer
        self._closed = False

    def close(self) -> None:
        """The client left: end the session. A statement still running there ends as the
        client's doing, not as a lost connection: the host did nothing wrong."""
        if self._closed:
            return
        self._closed = True
        left = ClientLeftError(f"its client left while {self.endpoint.address} ran it")
        for request_id, _sink in self.connection.routes():
            self.connection.expire(request_id, left)
        self.connection.close("closed: its client left")  # Gremlin Server ends the session
        self._balancer.finish(self.lease, Outcome.SUCCESS)


async def open_pin(
    proxy: Proxy, client: ClientConnection, channel: Channel, source: str | None
) -> SessionPin:
    """A host of the session's kind and a dedicated backend connection to it (the caller
    holds the client's pin lock, so a client connection opens one at most)."""
    lease = await proxy.acquire(0, (), session=True, source=source)
    settings = proxy.balancer.settings
    try:
        connection = await proxy.backends.dedicated(
            lease.endpoint, channel, settings.connect_timeout
        )
    except ConnectionFailure as error:
        proxy.balancer.finish(lease, error.outcome, error)
        raise
    except asyncio.CancelledError:  # its client left: nothing was sent there
        proxy.balancer.release(lease)
        raise
    if client.closed:
        connection.close("its client left")
        proxy.balancer.release(lease)
        raise ConnectionFailure("the client left while its session connection opened")
    log.info("client %s: sessions pinned to %s", client.peer, lease.endpoint.address)
    return SessionPin(proxy.balancer, lease, connection)


async def serve_statement(proxy: Proxy, exchange: Exchange) -> None:
    """Send one session request on its client's pinned connection and give the client its
    answer, or the final error that says what became of the session."""
    request = exchange.request
    client = exchange.client
    try:
        pin = await client.session_pin(request.channel, exchange.source)
    except (NoHealthyEndpointError, ConnectionFailure, BalancerClosedError) as error:
        exchange.answer_error(*answers.no_session(error))
        return
    if pin.broken is not None:
        exchange.answer_error(*answers.session_was_lost(pin.endpoint, pin.broken))
        return
    if client.closed:
        return  # it left while the session connection was found: withdrawn, not sent
    balancer = proxy.balancer

    def observe(lease: Lease, outcome: Outcome, error: BaseException | None) -> None:
        """A statement that outlives request_timeout says nothing about its host: it is not
        reported (a long transaction must not eject the host its session lives on). Nor is
        one ended because its client left (the session closes with it)."""
        if outcome is not Outcome.TIMEOUT and not isinstance(error, ClientLeftError):
            balancer.observe(lease, outcome, error)

    attempt = Attempt(exchange, pin.lease, observe)
    backend_id, frame = backend_frame(request, proxy.backends.ids.next)
    try:
        exchange.sent = True
        pin.connection.send(frame, backend_id, attempt)
    except ConnectionFailure as error:
        attempt.on_failure(error)
    assert attempt.result is not None
    outcome = await attempt.result
    if attempt.held is not None:  # 429/596 inside a session: no other host can take it
        exchange.forward(*attempt.held)
        return
    if outcome in ANSWERED:
        return
    if outcome is Outcome.TIMEOUT:  # a long statement: this request's problem only
        timeout = balancer.settings.request_timeout
        exchange.answer_error(*answers.session_timeout(pin.endpoint, attempt.error, timeout))
        return
    pin.broken = attempt.error or RuntimeError(outcome.value)
    pin.connection.close("lost its session")
    exchange.answer_error(*answers.session_failed(pin.endpoint, pin.broken))
