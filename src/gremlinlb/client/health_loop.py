"""The active health loop of the in-process client: a daemon thread probing with real traversals.

A host only counts as healthy when it *answers a traversal*: an open port is not enough (a
server can accept sockets with a broken graph, or be stopped mid-flight).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor, wait

from gremlin_python.driver.client import Client
from gremlin_python.process.graph_traversal import __

from gremlinlb.client.backends import ConnectionOptions
from gremlinlb.core import Balancer, Endpoint

log = logging.getLogger(__name__)

_PROBE_WORKERS = 8


class HealthLoop:
    def __init__(self, balancer: Balancer, options: ConnectionOptions) -> None:
        self._balancer = balancer
        self._options = options
        self._stop = threading.Event()
        self._probes: dict[Endpoint, Client] = {}
        self._executor = ThreadPoolExecutor(_PROBE_WORKERS, thread_name_prefix="gremlinlb-probe")
        self._thread = threading.Thread(target=self._run, name="gremlinlb-health", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=self._balancer.settings.health.timeout + 1)
        self._executor.shutdown(wait=False, cancel_futures=True)
        for client in self._probes.values():
            _close_quietly(client)
        self._probes.clear()

    def forget(self, endpoint: Endpoint) -> None:
        client = self._probes.pop(endpoint, None)
        if client is not None:
            _close_quietly(client)

    def probe_once(self) -> None:
        """One round: probe every target in parallel, wait at most timeout + 1 s for all."""
        targets = self._balancer.probe_targets()
        if not targets:
            return
        futures = [self._executor.submit(self._probe, endpoint) for endpoint in targets]
        wait(futures, timeout=self._balancer.settings.health.timeout + 1)

    def _run(self) -> None:
        while not self._stop.wait(self._balancer.settings.health.interval):
            try:
                self.probe_once()
            except Exception:
                log.exception("health round failed")

    def _probe(self, endpoint: Endpoint) -> None:
        settings = self._balancer.settings.health
        client = self._probes.get(endpoint)
        if client is None:
            client = self._options.probe_client(endpoint, settings.timeout)
            self._probes[endpoint] = client
        message: object = settings.probe_script or _probe_traversal()
        try:
            client.submit(message).all().result(timeout=settings.timeout)
        except Exception as error:
            self.forget(endpoint)  # its socket may be dead or out of step: start clean
            self._balancer.record_probe(endpoint, ok=False, error=_text(error))
            return
        self._balancer.record_probe(endpoint, ok=True)


def _probe_traversal() -> object:
    """g.V().limit(1): the bytecode of an anonymous V() is exactly that of the source's V()."""
    return __.V().limit(1).bytecode


def _text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _close_quietly(client: Client) -> None:
    try:
        client.close()
    except Exception as error:
        log.debug("closing probe client failed: %s", error)
