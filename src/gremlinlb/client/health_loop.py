"""The active health loop of the in-process client: a daemon thread probing with real traversals.

A host only counts as healthy when it *answers a traversal*: an open port is not enough (a
server can accept sockets with a broken graph, or be stopped mid-flight). The answer's status
decides, never its result (probe.py): a type this client cannot decode says nothing about the
server, so it never fails a probe.

Each probe uses a fresh one-socket client, closed afterwards: nothing is shared between probes
or with requests, so a probe stuck on a hung server can never starve the next one, and queued
requests never hold a probe up on this side. Probes run on daemon threads and every phase is
bounded by the probe timeout, so the loop never keeps the interpreter from exiting.

On the server a probe's traversal still waits behind slow queries that fill its workers
(gremlinPool). So a probe whose traversal gets no answer in time asks the server a WebSocket
ping on a fresh connection (answered by its I/O threads): a pong says busy, and the core keeps
the host in rotation; a paused or dead server answers none (`gremlinlb.core.liveness`, the
sidecar's rule). A host found stuck is pinged along with its probe: no pong within the ping
budget fails the probe at once. `check_alive` pings a host a read waits on (its hedge delay
passed, the host quiet), so the read is hedged or re-sent only if the server is hung.

With `health.status_probe` on, a host whose traversal passed is also asked its status
(`GET /status`, Amazon Neptune's instance status: `gremlinlb.status`, the sidecar's too).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from gremlin_python.driver.client import Client
from gremlin_python.process.graph_traversal import __

from gremlinlb.client.backends import ConnectionOptions, close_in_background
from gremlinlb.core import (
    CHECK_INTERVAL,
    Balancer,
    Endpoint,
    ResponseTimeoutError,
    UpgradeBusyError,
)
from gremlinlb.core.liveness import BUSY_NOTE, hung_error, ping_budget
from gremlinlb.core.probing import probe_lost_after
from gremlinlb.status import status_problem_now

log = logging.getLogger(__name__)

# Probe threads at once: a long host list is probed in waves, not with a thread per host.
MAX_PROBES = 16
# Probes started per second, at most (after a first wave of MAX_PROBES): a probe of a dead
# host costs a thread and a connection attempt, and a long list of them probed back to back
# takes CPU from the application (the sidecar's figure: 20,000 dead hosts left 20% of live
# throughput, issue 20). The price: a dead host of a long list is probed every
# hosts / MAX_PROBE_RATE seconds rather than every unhealthy_interval. Hosts in rotation are
# probed first (Balancer.probe_due).
MAX_PROBE_RATE = 50.0


class HealthLoop:
    def __init__(self, balancer: Balancer, options: ConnectionOptions) -> None:
        self._balancer = balancer
        self._options = options
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._probing: set[Endpoint] = set()
        self._pinging: set[Endpoint] = set()
        self._tokens = float(MAX_PROBES)  # probes that may start now (a token bucket)
        self._refilled = time.monotonic()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="gremlinlb-health", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()

    def kick(self) -> None:
        """Look at the probe schedule now (a host joined: it is probed at once)."""
        self._kick.set()

    def probe_once(self) -> None:
        """One round: probe every target in parallel; return when all answered or timed out."""
        threads = [self._start(e) for e in self._balancer.probe_targets()]
        deadline = time.monotonic() + probe_lost_after(self._balancer.settings)
        for thread in threads:
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))

    def _run(self) -> None:
        """Each tick: let the core eject outliers, then probe the hosts it says are due."""
        while not self._stop.is_set():
            with self._lock:
                full = len(self._probing) >= MAX_PROBES or self._tokens < 1
            self._kick.wait(
                CHECK_INTERVAL if full else min(self._balancer.next_probe_in(), CHECK_INTERVAL)
            )
            self._kick.clear()
            if self._stop.is_set():
                return
            try:
                self._balancer.check_outliers()
                now = time.monotonic()
                self._tokens = min(
                    float(MAX_PROBES), self._tokens + (now - self._refilled) * MAX_PROBE_RATE
                )
                self._refilled = now
                with self._lock:
                    free = min(MAX_PROBES - len(self._probing), int(self._tokens))
                for endpoint in self._balancer.probe_due(limit=max(0, free)):
                    self._tokens -= 1
                    self._start(endpoint)
            except Exception:
                log.exception("health round failed")

    def _start(self, endpoint: Endpoint) -> threading.Thread | None:
        """Probe `endpoint` on a thread of its own, unless its last probe is still running."""
        with self._lock:
            if endpoint in self._probing:
                return None
            self._probing.add(endpoint)
        thread = threading.Thread(
            target=self._probe,
            args=(endpoint,),
            name=f"gremlinlb-probe-{endpoint.address}",
            daemon=True,
        )
        thread.start()
        return thread

    def _probe(self, endpoint: Endpoint) -> None:
        client: Client | None = None
        try:
            client = self._options.probe_client(endpoint, self._balancer.settings.health.timeout)
            error, timed_out = self._first_probe(client, endpoint)
            if error is None and self._balancer.settings.health.status_probe:
                error = self._status(endpoint)
            alive = False
            if error is not None and UpgradeBusyError.__name__ in error:  # 429 on the upgrade
                alive = True  # busy, not down (as the sidecar's probe)
            elif error is not None and timed_out and self._answers_ping(endpoint):
                alive = True
                error += BUSY_NOTE
            if not self._stop.is_set():
                self._balancer.record_probe(endpoint, ok=error is None, error=error, alive=alive)
        finally:
            if client is not None:
                close_in_background(client, endpoint)
            with self._lock:
                self._probing.discard(endpoint)

    def _first_probe(self, client: Client, endpoint: Endpoint) -> tuple[str | None, bool]:
        """The probe's traversal: the error that fails it (None: passed), and whether it
        timed out (rather than failed). Of a host found stuck, a ping goes along: no pong
        within the ping budget fails the probe at once (hung, whatever the probe timeout)."""
        settings = self._balancer.settings.health
        started = time.monotonic()
        answered = self._submit(client, settings.probe_script or _probe_traversal())
        hung = self._balancer.is_deprioritised(endpoint) and not self._answers_ping(endpoint)
        if hung and not answered.done():
            return hung_error(ping_budget(self._balancer.settings)), False
        try:
            answered.result(timeout=max(0.0, started + settings.timeout - time.monotonic()))
        except (FutureTimeout, ResponseTimeoutError):
            return f"no answer within {settings.timeout}s", True
        except Exception as error:
            return _text(error), False
        return None, False

    def _status(self, endpoint: Endpoint) -> str | None:
        """The status probe (Neptune's GET /status; `gremlinlb.status`, as the sidecar's)."""
        ssl_context = self._options.ssl_context if endpoint.scheme == "wss" else None
        return status_problem_now(
            endpoint,
            self._balancer.settings,
            ssl_context=ssl_context,
            headers=self._options.headers,
        )

    @staticmethod
    def _submit(client: Client, message: object) -> Future[None]:
        """Send the probe; a future of its end (the written request's answer, unread)."""
        answered: Future[None] = Future()

        def collected(done: Future[Any]) -> None:
            error = done.exception()
            if error is not None:
                answered.set_exception(error)
            else:
                answered.set_result(None)

        def written(done: Future[Any]) -> None:
            error = done.exception()
            if error is not None:
                answered.set_exception(error)
                return
            done.result().all().add_done_callback(collected)

        try:
            client.submit_async(message).add_done_callback(written)
        except Exception as error:  # refused before anything was written
            answered.set_exception(error)
        return answered

    def check_alive(self, endpoint: Endpoint) -> None:
        """Ask a quiet host (Balancer.is_quiet) a ping now, one at a time per host, and report
        the answer (Balancer.record_ping): a hung server goes down within the ping budget and
        its reads are re-sent; a busy one keeps its slow queries running once."""
        with self._lock:
            if endpoint in self._pinging or self._stop.is_set():
                return
            self._pinging.add(endpoint)
        threading.Thread(
            target=self._check_alive,
            args=(endpoint,),
            name=f"gremlinlb-ping-{endpoint.address}",
            daemon=True,
        ).start()

    def _check_alive(self, endpoint: Endpoint) -> None:
        try:
            answered = self._answers_ping(endpoint)
            if not self._stop.is_set():
                self._balancer.record_ping(endpoint, answered)
        except Exception:
            log.exception("ping of %s failed", endpoint.address)
        finally:
            with self._lock:
                self._pinging.discard(endpoint)

    def _answers_ping(self, endpoint: Endpoint) -> bool:
        return self._options.answers_ping(endpoint, ping_budget(self._balancer.settings))


def _probe_traversal() -> object:
    """g.V().limit(1).count(): it reaches the graph's storage, and its answer is a plain number
    whatever the provider's element and id types are (the status decides anyway: probe.py).
    The bytecode of an anonymous V() is exactly that of the source's V()."""
    return __.V().limit(1).count().bytecode


def _text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
