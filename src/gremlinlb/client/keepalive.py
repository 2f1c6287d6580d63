"""Keeps the in-process client's idle backend sockets alive with WebSocket pings.

gremlinpython's sockets run their event loop only while a request is being sent or read, so a
socket idle between requests answers no ping and sends none: a load balancer or NAT in front
of the servers (AWS ALB 60 s, NLB 350 s) cuts it, and the next request on it meets a closed
connection. One daemon thread per client pings every socket that has been idle for
`keepalive_interval`; a socket busy with a request is left alone (its request is the traffic).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Protocol

from gremlinlb.core import BalancerSettings

log = logging.getLogger(__name__)


class Pingable(Protocol):
    def ping_if_idle(self, settings: BalancerSettings, now: float) -> bool:
        """Ping if idle for the keepalive interval and not in use; True if it pinged."""


class Keepalive:
    """The sockets of one client and the thread that pings the idle ones."""

    def __init__(self, settings: Callable[[], BalancerSettings]) -> None:
        self.settings = settings
        self._sockets: weakref.WeakSet[Pingable] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gremlinlb-keepalive", daemon=True)

    def register(self, socket: Pingable) -> None:
        with self._lock:
            self._sockets.add(socket)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def ping_idle(self, now: float | None = None) -> int:
        """Ping every registered socket that is due; returns how many were pinged."""
        settings = self.settings()
        now = time.monotonic() if now is None else now
        with self._lock:
            sockets = list(self._sockets)
        return sum(1 for socket in sockets if socket.ping_if_idle(settings, now))

    def _run(self) -> None:
        while not self._stop.wait(_tick(self.settings())):
            try:
                self.ping_idle()
            except Exception:
                log.exception("keepalive round failed")


def _tick(settings: BalancerSettings) -> float:
    """A quarter of the interval: a socket is pinged at most 25% after it became due."""
    interval = settings.keepalive_interval
    return 1.0 if interval <= 0 else min(5.0, max(0.05, interval / 4))
