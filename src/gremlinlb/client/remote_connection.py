"""`RoundRobinClientRemoteConnection`: a gremlinpython RemoteConnection that balances every
traversal over many Gremlin Servers.

A thin adapter: the core decides (which host, whether to retry, whether to wait); this module
runs the traversal on gremlinpython's own DriverRemoteConnection for the chosen host and
reports how it went.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.driver.protocol import GremlinServerError
from gremlin_python.driver.remote_connection import RemoteConnection, RemoteTraversal
from gremlin_python.driver.request import RequestMessage
from gremlin_python.driver.serializer import GraphBinarySerializersV1

from gremlinlb.client.backends import ConnectionOptions, HostConnection
from gremlinlb.client.health_loop import HealthLoop
from gremlinlb.core import (
    OVERLOAD_STATUS_CODES,
    AllHostsTriedError,
    Balancer,
    BalancerClosedError,
    BalancerSettings,
    ConnectionFailure,
    Endpoint,
    EventKind,
    HostEvent,
    HostState,
    HostStatus,
    Lease,
    Outcome,
    RequestMayHaveBeenAppliedError,
    RetryBudget,
    SessionLostError,
    Waiter,
    bytecode_may_write,
    may_retry,
    parse_endpoint,
)

log = logging.getLogger(__name__)


class RoundRobinClientRemoteConnection(RemoteConnection):  # type: ignore[misc]
    """Use it wherever a DriverRemoteConnection goes: `traversal().with_(rr)`.

    `endpoints` are `host:port` or `ws://` / `wss://` URLs. Settings of the core (policy,
    health checks, retries, buffer) come in `settings`; `health_check_interval` is kept as a
    shortcut because it is what most callers tune.
    """

    def __init__(
        self,
        endpoints: Iterable[str],
        traversal_source: str = "g",
        health_check_interval: float | None = None,
        *,
        settings: BalancerSettings | None = None,
        username: str = "",
        password: str = "",
        ssl_context: ssl.SSLContext | None = None,
        message_serializer: Any = None,
        pool_size: int = 8,
        max_workers: int = 32,
        headers: dict[str, str] | None = None,
    ) -> None:
        if isinstance(endpoints, str):
            raise TypeError(
                "endpoints must be a list of addresses, e.g. ['localhost:8182'], not one string"
            )
        parsed = [parse_endpoint(e) for e in endpoints]
        if not parsed:
            raise ValueError("give at least one endpoint, e.g. ['localhost:8182']")
        settings = settings or BalancerSettings()
        if health_check_interval is not None:
            settings = _with_interval(settings, health_check_interval)
        if pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, got {pool_size}")
        super().__init__("roundrobin[" + ",".join(e.url for e in parsed) + "]", traversal_source)
        self._options = ConnectionOptions(
            traversal_source=traversal_source,
            username=username,
            password=password,
            ssl_context=ssl_context,
            message_serializer=message_serializer,
            pool_size=pool_size,
            connect_timeout=settings.connect_timeout,
            request_timeout=settings.request_timeout,
            headers=headers,
        )
        self._serializer = message_serializer or GraphBinarySerializersV1()
        self._balancer = Balancer(settings=settings)
        self._hosts: dict[Endpoint, HostConnection] = {}
        self._hosts_lock = threading.Lock()
        self._sessions: list[PinnedSession] = []
        self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix="gremlinlb-submit")
        self._health = HealthLoop(self._balancer, self._options)
        self._balancer.subscribe(self._on_host_event)
        for endpoint in parsed:
            self.add_host(endpoint.url)
        self._health.start()

    # -- RemoteConnection ----------------------------------------------------------------

    def submit(self, bytecode: Any) -> RemoteTraversal:
        results = self._execute(bytecode)
        return RemoteTraversal(iter(results))

    def submit_async(self, bytecode: Any) -> Future[RemoteTraversal]:
        self._check_open()
        return self._executor.submit(self.submit, bytecode)

    def is_closed(self) -> bool:
        return self._balancer.closed

    def close(self) -> None:
        if self._balancer.closed:
            return
        log.info("closing %s", self.url)
        self._balancer.close()
        self._health.stop()
        for session in list(self._sessions):
            session.close()
        with self._hosts_lock:
            hosts = list(self._hosts.values())
            self._hosts.clear()
        for host in hosts:
            host.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def is_session_bound(self) -> bool:
        return False

    def create_session(self) -> PinnedSession:
        """Open a session (for `g.tx()`) pinned to one healthy host for its whole life."""
        self._check_open()
        acquired = self._balancer.acquire(0, session=True)
        lease = acquired if isinstance(acquired, Lease) else self._wait(acquired)
        try:
            connection = self._options.session(lease.endpoint)
        except Exception:
            self._balancer.release(lease)
            raise
        session = PinnedSession(self._balancer, lease, connection, self.traversal_source)
        self._sessions.append(session)
        log.info("session pinned to %s", lease.endpoint.address)
        return session

    def remove_session(self, session: PinnedSession) -> None:
        session.close()
        if session in self._sessions:
            self._sessions.remove(session)

    def commit(self) -> Any:
        raise RuntimeError("commit() belongs to a transaction: use tx = g.tx(); gtx = tx.begin()")

    def rollback(self) -> Any:
        raise RuntimeError("rollback() belongs to a transaction: use tx = g.tx(); gtx = tx.begin()")

    # -- host management (seed API) ------------------------------------------------------

    def add_host(self, endpoint: str) -> bool:
        """Add a server at runtime; it gets traffic on its next turn. False if already present."""
        parsed = parse_endpoint(endpoint)
        with self._hosts_lock:
            if parsed not in self._hosts:
                self._hosts[parsed] = HostConnection(parsed, self._options)
        return self._balancer.add(parsed)

    def remove_host(self, endpoint: str) -> None:
        """Remove a server; requests in flight there finish, then its connections close.

        Raises UnknownEndpointError (a LookupError) for a host that is not in the list.
        """
        self._balancer.remove(parse_endpoint(endpoint), drain=True)

    def get_clients(self) -> dict[str, DriverRemoteConnection | None]:
        """The underlying connection per host URL (None until first use or after a failure)."""
        with self._hosts_lock:
            return {e.url: h.current() for e, h in self._hosts.items()}

    def get_available(self) -> dict[str, bool]:
        """True for each host that takes new requests now."""
        return {s.endpoint.url: s.state is HostState.HEALTHY for s in self._balancer.hosts()}

    def hosts(self) -> list[HostStatus]:
        """State, in-flight count, outcome totals and last error of every host."""
        return self._balancer.hosts()

    @property
    def balancer(self) -> Balancer:
        return self._balancer

    def check_health_now(self) -> None:
        """Run one probe round immediately (also what the background loop does)."""
        self._health.probe_once()

    # -- internals -----------------------------------------------------------------------

    def _execute(self, bytecode: Any) -> list[Any]:
        self._check_open()
        read_only = not bytecode_may_write(bytecode)
        budget = RetryBudget(self._balancer.settings.max_attempts)
        tried: list[Endpoint] = []
        last_error: BaseException | None = None
        while True:
            try:
                acquired = self._balancer.acquire(lambda: self._size(bytecode), tried)
            except AllHostsTriedError:
                assert last_error is not None  # only raised when something was tried
                raise last_error from None
            lease = acquired if isinstance(acquired, Lease) else self._wait(acquired)
            endpoint = lease.endpoint
            outcome, result = self._attempt(lease, bytecode)
            if outcome is Outcome.SUCCESS:
                return list(result)
            error: BaseException = result
            if not may_retry(outcome, read_only) or not budget.allows_another(outcome):
                if outcome.may_have_executed and not read_only:
                    raise RequestMayHaveBeenAppliedError(endpoint.address, error) from error
                raise error
            log.info(
                "retrying on another host after %s on %s: %s",
                outcome.value,
                endpoint.address,
                error,
            )
            tried.append(endpoint)
            last_error = error

    def _attempt(self, lease: Lease, bytecode: Any) -> tuple[Outcome, Any]:
        endpoint = lease.endpoint
        with self._hosts_lock:
            host = self._hosts.get(endpoint)
        if host is None:  # removed between pick and use: nothing was sent
            self._balancer.release(lease)
            return Outcome.NOT_SENT, ConnectionError(f"{endpoint.address} was removed")
        try:
            traversal = host.get().submit(bytecode)
            results = list(traversal.traversers)
        except ConnectionFailure as error:
            self._balancer.finish(lease, error.outcome, error)
            return error.outcome, error
        except GremlinServerError as error:
            overloaded = error.status_code in OVERLOAD_STATUS_CODES
            outcome = Outcome.OVERLOADED if overloaded else Outcome.SERVER_ERROR
            self._balancer.finish(lease, outcome, error)
            return outcome, error
        except Exception as error:  # anything else from the driver: treat as a lost connection
            self._balancer.finish(lease, Outcome.CONNECTION_LOST, error)
            return Outcome.CONNECTION_LOST, error
        self._balancer.finish(lease, Outcome.SUCCESS)
        return Outcome.SUCCESS, results

    def _wait(self, waiter: Waiter) -> Lease:
        """Block until the buffer releases this request, or its max_wait passes."""
        released = threading.Event()
        waiter.notify = released.set
        if waiter.released:  # released before notify was set
            released.set()
        timeout = max(0.0, waiter.deadline - time.monotonic())
        if not released.wait(timeout):
            self._balancer.time_out(waiter)
        released.wait()
        if waiter.error is not None:
            raise waiter.error
        assert waiter.lease is not None
        return waiter.lease

    def _size(self, bytecode: Any) -> int:
        message = RequestMessage(
            "traversal", "bytecode", {"gremlin": bytecode, "aliases": {"g": self.traversal_source}}
        )
        return len(self._serializer.serialize_message(str(uuid.uuid4()), message))

    def _on_host_event(self, event: HostEvent) -> None:
        if event.kind is EventKind.REMOVED:
            with self._hosts_lock:
                host = self._hosts.pop(event.endpoint, None)
            if host is not None:
                host.close()

    def _check_open(self) -> None:
        if self._balancer.closed:
            raise BalancerClosedError(f"{self.url} is closed; create a new connection")


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


def _with_interval(settings: BalancerSettings, interval: float) -> BalancerSettings:
    return replace(settings, health=replace(settings.health, interval=interval))
