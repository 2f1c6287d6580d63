"""The active health loop of the in-process client: a daemon thread probing with real traversals.

A host only counts as healthy when it *answers a traversal*: an open port is not enough (a
server can accept sockets with a broken graph, or be stopped mid-flight). The answer's status
decides, never its result (probe.py): a type this client cannot decode says nothing about the
server, so it never fails a probe.

Each probe uses a fresh one-socket client, closed afterwards: nothing is shared between probes,
so a probe stuck on a hung server can never starve the next one of gremlinpython's pooled
connection. Probes run on daemon threads and every phase is bounded by the probe timeout, so
the loop never keeps the interpreter from exiting.
"""

from __future__ import annotations

import logging
import threading
import time

from gremlin_python.process.graph_traversal import __

from gremlinlb.client.backends import ConnectionOptions, close_in_background
from gremlinlb.core import CHECK_INTERVAL, Balancer, Endpoint

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
        timeout = self._balancer.settings.health.timeout
        threads = [self._start(e) for e in self._balancer.probe_targets()]
        deadline = time.monotonic() + timeout + self._options.connect_timeout + 1
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
        settings = self._balancer.settings.health
        client = self._options.probe_client(endpoint, settings.timeout)
        message: object = settings.probe_script or _probe_traversal()
        try:
            client.submit(message).all().result(timeout=settings.timeout)
        except Exception as error:
            if not self._stop.is_set():
                self._balancer.record_probe(endpoint, ok=False, error=_text(error))
        else:
            if not self._stop.is_set():
                self._balancer.record_probe(endpoint, ok=True)
        finally:
            close_in_background(client, endpoint)
            with self._lock:
                self._probing.discard(endpoint)


def _probe_traversal() -> object:
    """g.V().limit(1).count(): it reaches the graph's storage, and its answer is a plain number
    whatever the provider's element and id types are (the status decides anyway: probe.py).
    The bytecode of an anonymous V() is exactly that of the source's V()."""
    return __.V().limit(1).count().bytecode


def _text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
