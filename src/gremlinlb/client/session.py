"""`PinnedSession`: a session (`g.tx()`) held on one host for its whole life.

A session's state lives on one server, so it is never balanced, hedged or retried elsewhere:
losing its host ends it (SessionLostError), and a commit whose answer was lost may have been
applied (RequestMayHaveBeenAppliedError). `RoundRobinClientRemoteConnection.create_session`
picks the host."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.driver.remote_connection import RemoteConnection, RemoteTraversal

from gremlinlb.core import (
    Balancer,
    ConnectionFailure,
    Lease,
    Outcome,
    RequestMayHaveBeenAppliedError,
    SessionLostError,
)

log = logging.getLogger(__name__)


class PinnedSession(RemoteConnection):  # type: ignore[misc]
    """A session (transaction) bound to one host for its whole life, as sessions must be.

    Never retried elsewhere: the session's state lives on that one server.
    """

    def __init__(
        self,
        balancer: Balancer,
        lease: Lease,
        connection: DriverRemoteConnection,
        traversal_source: str,
    ) -> None:
        super().__init__(lease.endpoint.url, traversal_source)
        self._balancer = balancer
        self.lease = lease
        self.endpoint = lease.endpoint
        self._connection = connection
        self._closed = False

    def submit(self, bytecode: Any) -> RemoteTraversal:
        traversal: RemoteTraversal = self._guard(lambda: self._connection.submit(bytecode))
        return traversal

    def submit_async(self, bytecode: Any) -> Future[RemoteTraversal]:
        outer: Future[RemoteTraversal] = Future()

        def settle(inner: Future[RemoteTraversal]) -> None:
            try:
                outer.set_result(self._guard(inner.result))
            except BaseException as error:
                outer.set_exception(error)

        self._connection.submit_async(bytecode).add_done_callback(settle)
        return outer

    def commit(self) -> Any:
        """Returns once the server confirmed the commit (gremlinpython alone does not wait)."""
        return self._guard(lambda: self._connection.commit().all().result(), ending=True)

    def rollback(self) -> Any:
        return self._guard(lambda: self._connection.rollback().all().result(), ending=True)

    def is_closed(self) -> bool:
        return self._closed or bool(self._connection.is_closed())

    def is_session_bound(self) -> bool:
        return True

    def close(self) -> None:
        """Ends the session on the server; a session whose server is gone just closes."""
        if self._closed:
            return
        self._closed = True
        try:
            self._connection.close()
        except ConnectionFailure as error:
            log.info("session on %s closed without the server: %s", self.endpoint.address, error)
        finally:
            self._balancer.finish(self.lease, Outcome.SUCCESS)

    def _guard(self, call: Callable[[], Any], *, ending: bool = False) -> Any:
        try:
            return call()
        except ConnectionFailure as error:
            self._balancer.observe(self.lease, error.outcome, error)
            if ending and error.outcome.may_have_executed:
                raise RequestMayHaveBeenAppliedError(self.endpoint.address, error) from error
            raise SessionLostError(self.endpoint.address, error) from error
