"""`RoundRobinClientRemoteConnection`: a gremlinpython RemoteConnection that balances every
traversal over many Gremlin Servers.

A thin adapter: the core decides (which host, whether to retry, hedge or wait, which host is
an outlier); this module sends the traversal on gremlinpython's own pooled connection to the
chosen host and reports how each attempt went.

Threads. A request is sent from the caller's thread; its answer is collected by gremlinpython's
executor of that host (one thread per pooled socket, as without gremlinlb), and the caller
waits on an event. A hedge or a re-dispatch is a second send from the same caller thread: no
thread per request is added. The cost of a hedge is one more request on another host and, for
its loser, one pooled socket busy until its answer arrives (or `request_timeout`). A retired
connection (host down or ejected) keeps its executor threads until its last request ended.

Hedging is for whole answers: gremlinpython's `submit` collects every frame of a bytecode
request before returning, so nothing reaches the caller before the winner is known and the
rule "committed to a host once a frame was forwarded" (the sidecar's, which streams) never
applies here.
"""

from __future__ import annotations

import logging
import math
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.driver.protocol import GremlinServerError
from gremlin_python.driver.remote_connection import RemoteConnection, RemoteTraversal
from gremlin_python.driver.request import RequestMessage
from gremlin_python.driver.serializer import GraphBinarySerializersV1

from gremlinlb.client.backends import ConnectionOptions, Generation, HostConnection
from gremlinlb.client.errors import AnswerNotReadableError
from gremlinlb.client.health_loop import HealthLoop
from gremlinlb.client.keepalive import Keepalive
from gremlinlb.client.neptune import NeptuneThread, first_read
from gremlinlb.client.neptune_errors import NeptuneRetry, verdict_of
from gremlinlb.client.session import PinnedSession
from gremlinlb.core import (
    OVERLOAD_STATUS_CODES,
    AllHostsTriedError,
    AttemptLimit,
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
    NoHealthyEndpointError,
    Outcome,
    RequestMayHaveBeenAppliedError,
    UnknownEndpointError,
    Waiter,
    bytecode_may_write,
    may_retry,
    parse_endpoint,
)
from gremlinlb.core.liveness import HEDGE_RECHECK_MAX
from gremlinlb.core.neptune_errors import NeptuneVerdict
from gremlinlb.neptune import NeptuneSource

log = logging.getLogger(__name__)


class RoundRobinClientRemoteConnection(RemoteConnection):  # type: ignore[misc]
    """Use it wherever a DriverRemoteConnection goes: `traversal().with_(rr)`.

    `endpoints` are `host:port` or `ws://` / `wss://` URLs, optionally with the host's role
    and zone as a query (`10.0.0.1:8182?role=reader&zone=us-east-1a`): requests that may
    write, and `g.tx()`, go to writers; reads to readers (see `read_routing`). `zone` is this
    process's own zone: hosts in it are preferred. `client_zones` is how many instances of the
    application run in each zone (`{"us-east-1a": 3, "us-east-1b": 1}`, or later through
    `set_client_zones`): a zone with more of the clients than of the healthy servers then
    keeps only its fair share and spills the rest (Envoy's rule). Settings of the core
    (policy, health checks, retries, buffer) come in `settings`; `health_check_interval` is
    kept as a shortcut because it is what most callers tune. `neptune` instead of `endpoints`
    follows a Neptune cluster's writer and readers (client/neptune.py).
    """

    def __init__(
        self,
        endpoints: Iterable[str] = (),
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
        zone: str | None = None,
        client_zones: Mapping[str, int] | None = None,
        neptune: NeptuneSource | None = None,
    ) -> None:
        if isinstance(endpoints, str):
            raise TypeError(
                "endpoints must be a list of addresses, e.g. ['localhost:8182'], not one string"
            )
        parsed = [parse_endpoint(e) for e in endpoints]
        first = None
        if neptune is not None:
            if parsed:
                raise ValueError("give endpoints or neptune, not both: the cluster lists them")
            first = first_read(neptune)
            parsed = list(first.hosts)
        elif not parsed:
            raise ValueError("give at least one endpoint, e.g. ['localhost:8182']")
        settings = settings or BalancerSettings()
        if health_check_interval is not None:
            settings = _with_interval(settings, health_check_interval)
        if pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, got {pool_size}")
        super().__init__("roundrobin[" + ",".join(e.url for e in parsed) + "]", traversal_source)
        self._keepalive = Keepalive(lambda: self._balancer.settings)
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
            keepalive=self._keepalive,
            sigv4=lambda: self._balancer.settings.sigv4,
        )
        self._serializer = message_serializer or GraphBinarySerializersV1()
        # Given to the core's constructor, the hosts form its first round: they join together,
        # so the first traversals rotate over all that pass their first probe (which the health
        # loop starts at once), not only over the first to pass.
        self._balancer = Balancer(parsed, settings=settings, zone=zone, clients=client_zones)
        self._hosts: dict[Endpoint, HostConnection] = {
            endpoint: HostConnection(endpoint, self._options) for endpoint in parsed
        }
        self._hosts_lock = threading.Lock()
        self._sessions: list[PinnedSession] = []
        self._watching: dict[Lease, _Request] = {}  # attempts in flight -> their request
        self._watch_lock = threading.Lock()
        self._neptune_errors = NeptuneRetry(self._balancer)
        self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix="gremlinlb-submit")
        self._health = HealthLoop(self._balancer, self._options)
        self._balancer.subscribe(self._on_host_event)
        self._health.start()
        self._keepalive.start()
        self._follower = None
        if first is not None:
            self._follower = NeptuneThread(first, self._balancer, self.replace_hosts)
            self.refresh_topology = self._follower.refresh_now

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
        if self._follower is not None:
            self._follower.stop()
        self._balancer.close()
        self._health.stop()
        self._keepalive.stop()
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
            endpoint = lease.endpoint
            connection = self._options.session(endpoint, lambda: self._serves(endpoint))
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
        """Add a server at runtime; it gets traffic on its next turn once its first probe
        passed (requests do not wait for it, unlike for the hosts given to the constructor).
        False if already present."""
        parsed = parse_endpoint(endpoint)
        with self._hosts_lock:
            if parsed not in self._hosts:
                self._hosts[parsed] = HostConnection(parsed, self._options)
        added = self._balancer.add(parsed)
        self._health.kick()  # a joining host takes no request before its first probe passed
        return added

    def replace_hosts(self, endpoints: Iterable[Endpoint | str]) -> None:
        """Make the host list exactly `endpoints` (a topology source's): new ones join, kept
        ones take their new role and zone in place, the others drain."""
        parsed = [e if isinstance(e, Endpoint) else parse_endpoint(e) for e in endpoints]
        with self._hosts_lock:
            for endpoint in parsed:
                if endpoint not in self._hosts:
                    self._hosts[endpoint] = HostConnection(endpoint, self._options)
        self._balancer.replace(parsed)
        self._health.kick()

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

    def set_client_zones(self, client_zones: Mapping[str, int] | None) -> None:
        """How many instances of the application run in each zone (None: unknown, assume they
        are spread like the servers are listed); applies to the next request."""
        self._balancer.set_client_zones(client_zones)

    @property
    def refresh_topology(self) -> Callable[[], object] | None:
        """Reads the cluster at once and returns once the host list is updated (a Neptune
        topology source sets it: `neptune=`); a write refused by a reader
        (ReadOnlyViolationException) is then re-sent to the new writer. None: Neptune's answer
        is raised."""
        return self._neptune_errors.refresh_topology

    @refresh_topology.setter
    def refresh_topology(self, refresh: Callable[[], object] | None) -> None:
        self._neptune_errors.refresh_topology = refresh

    def check_health_now(self) -> None:
        """Run one probe round immediately (also what the background loop does)."""
        self._health.probe_once()

    # -- internals -----------------------------------------------------------------------

    def _execute(self, bytecode: Any) -> list[Any]:
        """Run one traversal to its answer: the first attempt, and for reads a hedge or a
        re-dispatch when the core says so; retries only where `may_retry` allows."""
        self._check_open()
        request = _Request(bytecode, read_only=not bytecode_may_write(bytecode))
        budget = AttemptLimit(self._balancer.settings.max_attempts)
        deadline = _now() + self._balancer.settings.request_timeout  # for Neptune's retries
        tried: list[Endpoint] = []
        last_error: BaseException | None = None
        live: list[_Attempt] = []
        hedged = False
        hedge_at = math.inf
        hedge_wait = 0.0
        while True:
            if not live:
                live.append(self._start(request, tried, last_error, budget))
                hedge_at = self._hedge_time(request)
                hedge_wait = max(0.0, hedge_at - _now()) if hedge_at < math.inf else 0.0
            request.wake.wait(None if hedge_at == math.inf else max(0.0, hedge_at - _now()))
            request.wake.clear()
            for attempt in [a for a in live if a.done]:
                live.remove(attempt)
                if attempt.outcome is Outcome.SUCCESS:
                    if attempt.lease.hedge:
                        self._balancer.hedge_won(attempt.lease)
                    return attempt.results  # any other attempt finishes on its own, unread
                tried.append(attempt.lease.endpoint)
                last_error = attempt.error
                if attempt.outcome is Outcome.NOT_SENT:
                    request.not_sent += 1
                if live:
                    continue  # another attempt of this read is still running: wait for it
                outcome = attempt.outcome
                assert outcome is not None
                assert last_error is not None
                again = self._neptune_errors.again(
                    last_error,
                    attempt.lease.endpoint,
                    request.read_only,
                    budget,
                    request.received(),
                    deadline,
                    request.rerouted,
                )
                if again is False:
                    raise last_error  # Neptune's own answer, unchanged
                if again:
                    if verdict_of(last_error) is NeptuneVerdict.CONFLICT:
                        tried.pop()  # rolled back on the writer: the writer again
                    else:
                        request.rerouted = True  # to the new writer, once
                    continue
                if not self._may_try_again(outcome, request, budget):
                    if outcome.may_have_executed and not request.read_only:
                        raise RequestMayHaveBeenAppliedError(
                            attempt.lease.endpoint.address, last_error
                        ) from last_error
                    raise last_error
                log.info(
                    "retrying on another host after %s on %s: %s",
                    outcome.value,
                    attempt.lease.endpoint.address,
                    last_error,
                )
            if not live or not request.read_only:
                continue
            if self._redispatch(request, live, tried, budget):
                continue
            if not hedged and len(live) == 1 and _now() >= hedge_at:
                hedge = self._hedge(request, live[0], tried, budget)
                if hedge is not None:
                    live.append(hedge)
                    hedged = True
                    hedge_at = math.inf
                else:  # not now: look again after twice the wait (a ping's verdict comes soon)
                    hedge_wait = min(2 * hedge_wait, HEDGE_RECHECK_MAX)
                    hedge_at = _now() + hedge_wait

    def _start(
        self,
        request: _Request,
        tried: list[Endpoint],
        last_error: BaseException | None,
        budget: AttemptLimit,
    ) -> _Attempt:
        """Acquire a host (waiting in the buffer if none is healthy) and send there."""
        while True:
            try:
                acquired = self._balancer.acquire(
                    lambda: self._size(request.bytecode), tried, write=not request.read_only
                )
            except AllHostsTriedError:
                if last_error is None:
                    raise
                raise last_error from None
            lease = acquired if isinstance(acquired, Lease) else self._wait(acquired)
            attempt = self._send(request, lease, wait_for_slot=True)
            if attempt is not None:
                return attempt
            # Nothing was sent (the host left rotation while the request waited for one of its
            # sockets): free to go anywhere, writes included; bounded like connection failures.
            if not budget.allows_another(Outcome.NOT_SENT, request.received()):
                raise NoHealthyEndpointError(
                    f"the request was not sent: its hosts left rotation before a connection to "
                    f"them was free ({lease.endpoint.address} last); check the servers' health"
                )

    def _send(self, request: _Request, lease: Lease, *, wait_for_slot: bool) -> _Attempt | None:
        """Send on one of the host's pooled sockets; None (lease released) if nothing was sent:
        the host is gone or left rotation while we waited for a socket, or (a hedge, which
        never waits) no socket is free."""
        with self._hosts_lock:
            host = self._hosts.get(lease.endpoint)
        while host is not None:
            generation = host.generation()
            if generation.take(self._options.request_timeout if wait_for_slot else 0):
                return self._submit(request, lease, generation)
            if not (wait_for_slot and generation.retired and self._in_rotation(lease.endpoint)):
                break
            # retired under us, yet the host serves (it came back already): use its new sockets
        self._balancer.release(lease)
        return None

    def _submit(self, request: _Request, lease: Lease, generation: Generation) -> _Attempt | None:
        attempt = _Attempt(request, lease, generation)
        with self._watch_lock:
            self._watching[lease] = request
        try:
            client = generation.connection._client  # gremlinpython's Client behind the DRC
            written = client.submit_async(request.bytecode, request_options=request.options)
        except Exception as error:  # refused before anything was written
            with self._watch_lock:
                self._watching.pop(lease, None)
            generation.give_back()
            if not generation.retired:  # the request's own (e.g. a requestId that is no UUID)
                self._balancer.finish(lease, Outcome.CLIENT_ERROR, error)
                raise
            log.debug("not sent to %s, its connection was retired: %s", lease.endpoint, error)
            self._balancer.release(lease)
            return None
        request.sent += 1
        written.add_done_callback(lambda future: self._written(attempt, future))
        return attempt

    def _written(self, attempt: _Attempt, future: Future[Any]) -> None:
        """On gremlinpython's executor thread: the request is out; collect its answer."""
        try:
            answer = future.result().all()
        except BaseException as error:
            self._settle(attempt, error)
            return
        answer.add_done_callback(lambda done: self._answered(attempt, done))

    def _answered(self, attempt: _Attempt, future: Future[list[Any]]) -> None:
        try:
            results = future.result()
        except BaseException as error:
            self._settle(attempt, error)
        else:
            self._settle(attempt, None, results)

    def _settle(
        self, attempt: _Attempt, error: BaseException | None, results: list[Any] | None = None
    ) -> None:
        """The attempt ended: free its socket, tell the core (it measures the latency, also for
        a hedge's loser), and wake the request if it still waits."""
        outcome = _classify(error, attempt.request.read_only)
        attempt.generation.give_back()
        with self._watch_lock:
            self._watching.pop(attempt.lease, None)
        # Done before the core hears of it: a host event it raises (down, ejected) wakes the
        # request, which must see this attempt as ended rather than re-dispatch it.
        attempt.outcome, attempt.error, attempt.results = outcome, error, results or []
        attempt.done = True
        try:
            self._balancer.finish(attempt.lease, outcome, error)
        finally:
            attempt.request.wake.set()

    def _may_try_again(self, outcome: Outcome, request: _Request, budget: AttemptLimit) -> bool:
        if not may_retry(outcome, request.read_only):
            return False
        if not budget.allows_another(outcome, request.received()):
            return False
        return not outcome.retry_costs_extra or self._balancer.try_spend_extra()

    def _hedge_time(self, request: _Request) -> float:
        if not request.read_only or not self._balancer.settings.hedge.enabled:
            return math.inf
        return _now() + self._balancer.hedge_delay()

    def _hedge(
        self, request: _Request, first: _Attempt, tried: list[Endpoint], budget: AttemptLimit
    ) -> _Attempt | None:
        """A second attempt of a slow read, to a host that answers, when the core says its
        host is not serving it, the request's attempt budget (once per read) and the
        extra-request budget allow; None otherwise. Not by timing alone: a read waiting on a
        quiet host makes the health loop ping that server; a pong (busy) keeps the read where
        it runs, none takes the host down and the read is re-sent (`_redispatch`)."""
        if not budget.allows_resend(request.received()):
            return None
        if not self._balancer.should_hedge(first.lease, pings=True):
            if self._balancer.is_quiet(first.lease):
                self._health.check_alive(first.lease.endpoint)  # hung or busy: its pong tells
            return None
        if not self._balancer.try_spend_extra():
            return None
        try:
            acquired = self._balancer.acquire(
                0, [*tried, first.lease.endpoint], hedge=True, write=False
            )
        except NoHealthyEndpointError:
            return None
        assert isinstance(acquired, Lease)  # a hedge never waits
        log.debug("hedging a read on %s to %s", first.lease.endpoint.address, acquired.endpoint)
        budget.resend()
        return self._send(request, acquired, wait_for_slot=False)

    def _redispatch(
        self,
        request: _Request,
        live: list[_Attempt],
        tried: list[Endpoint],
        budget: AttemptLimit,
    ) -> bool:
        """A read whose host was ejected or went down meanwhile goes to another host now; the
        old attempt stays (orphaned: the first answer still wins) and ends on its own. Once
        per read within its attempt budget, and never a read that ran normally there (a slow
        query: `Balancer.may_resend`). Like a hedge, to a host that answers when there is one
        (counted with the hedges): with two servers hung, a read taken off the first found out
        must not land on the second, where it would wait for good (issue 20)."""
        if any(self._in_rotation(a.lease.endpoint) for a in live):
            return False
        if not budget.allows_resend(request.received()):
            return False
        if not all(self._balancer.may_resend(a.lease) for a in live):
            return False
        budget.resend()
        exclude = [*tried, *(a.lease.endpoint for a in live)]
        log.info("re-dispatching a read away from %s", live[0].lease.endpoint.address)
        try:
            answering = self._balancer.acquire(0, exclude, hedge=True, write=False)
        except NoHealthyEndpointError:
            pass  # no host answers now: the next in turn, as a retry would
        else:
            assert isinstance(answering, Lease)  # a hedge's pick never waits
            attempt = self._send(request, answering, wait_for_slot=True)
            if attempt is not None:
                live.append(attempt)
                return True
        try:
            live.append(self._start(request, exclude, None, budget))
        except NoHealthyEndpointError:
            return False  # nowhere else to go: keep waiting for the orphan
        return True

    def _in_rotation(self, endpoint: Endpoint) -> bool:
        try:
            return self._balancer.state_of(endpoint) in (HostState.HEALTHY, HostState.DRAINING)
        except UnknownEndpointError:
            return False

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
        elif event.state in (HostState.DOWN, HostState.EJECTED):
            # Its pooled sockets may belong to a dead process: none is used again. Requests
            # waiting on it wake up: reads go elsewhere, unsent requests take another host.
            with self._hosts_lock:
                host = self._hosts.get(event.endpoint)
            if host is not None:
                host.retire()
            with self._watch_lock:
                waiting = [
                    self._watching.get(lease) for lease in self._balancer.in_flight(event.endpoint)
                ]
            for request in waiting:
                if request is not None:
                    request.wake.set()

    def _serves(self, endpoint: Endpoint) -> bool:
        """A session's statement is waited for while its host is not down (nor removed)."""
        try:
            return self._balancer.state_of(endpoint) is not HostState.DOWN
        except UnknownEndpointError:
            return False

    def _check_open(self) -> None:
        if self._balancer.closed:
            raise BalancerClosedError(f"{self.url} is closed; create a new connection")


class _Request:
    """One traversal as the caller sees it, across its attempts."""

    __slots__ = ("bytecode", "not_sent", "options", "read_only", "rerouted", "sent", "wake")

    def __init__(self, bytecode: Any, *, read_only: bool) -> None:
        self.bytecode = bytecode
        # OptionsStrategy values (evaluationTimeout, requestId, ...), as DriverRemoteConnection
        # sends them
        self.options = DriverRemoteConnection._extract_request_options(bytecode)
        self.read_only = read_only
        self.rerouted = False  # a write refused by a reader went to the new writer
        self.sent = 0  # attempts handed to a server, of every kind (see AttemptLimit)
        # ... of which were provably never written (NOT_SENT: refused, the connection failed
        # before the request left, a pooled socket found closed before writing: transport.py).
        # Only these are free: a connection lost after the request was written may have
        # been received, and counts against max_attempts like an answer (issue 20).
        self.not_sent = 0
        self.wake = threading.Event()  # an attempt ended, or a host it waits on left rotation

    def received(self) -> int:
        """Attempts a server may have received (written, whatever came of them)."""
        return self.sent - self.not_sent


class _Attempt:
    """One send of a request to one host; settled from gremlinpython's executor thread."""

    __slots__ = ("done", "error", "generation", "lease", "outcome", "request", "results")

    def __init__(self, request: _Request, lease: Lease, generation: Generation) -> None:
        self.request = request
        self.lease = lease
        self.generation = generation
        self.done = False
        self.outcome: Outcome | None = None
        self.error: BaseException | None = None
        self.results: list[Any] = []


def _classify(error: BaseException | None, read_only: bool) -> Outcome:
    """What an attempt's ending says. Network failures come tagged from the transport; an
    answer the server gave is its own verdict; anything else (an answer gremlinpython cannot
    decode, a request it cannot serialize) is the request's own problem, never the host's."""
    if error is None:
        return Outcome.SUCCESS
    if isinstance(error, ConnectionFailure):
        return error.outcome
    verdict = verdict_of(error)
    if verdict is not None:  # Neptune's own error (client/neptune_errors.py)
        return verdict.outcome(read_only)
    if isinstance(error, GremlinServerError):
        overloaded = error.status_code in OVERLOAD_STATUS_CODES
        return Outcome.OVERLOADED if overloaded else Outcome.SERVER_ERROR
    if isinstance(error, AnswerNotReadableError):
        return error.outcome
    return Outcome.CLIENT_ERROR


def _now() -> float:
    return time.monotonic()


def _with_interval(settings: BalancerSettings, interval: float) -> BalancerSettings:
    return replace(settings, health=replace(settings.health, interval=interval))
