"""Run a real sidecar in a background thread, for tests and benchmarks (like kopf.testing).

The sidecar gets its own event loop and real sockets; callers use real drivers against
`runner.url`. Blocking drivers (gremlinpython) can then run in the calling thread.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from dataclasses import replace
from types import TracebackType
from typing import Any, TypeVar

from gremlinlb.sidecar.config import Address, SidecarConfig
from gremlinlb.sidecar.server import Sidecar

from gremlinlb.core import Balancer, HostState

T = TypeVar("T")


class SidecarThread:
    """`with SidecarThread(config) as sidecar:` serves on free loopback ports until the end."""

    def __init__(self, config: SidecarConfig, *, free_ports: bool = True) -> None:
        if free_ports:
            config = replace(config, listen=Address("127.0.0.1", 0), admin=Address("127.0.0.1", 0))
        self.sidecar = Sidecar(config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="gremlinlb-sidecar")
        self._stopped = False

    def start(self, timeout: float = 30.0, *, settle: bool = True) -> SidecarThread:
        """Serve, and return once every configured host had its first probe, so tests meet a
        settled rotation; `settle=False` returns as soon as the sidecar listens, as a freshly
        started process would be used (specs of the first requests need that)."""
        self._thread.start()
        self.call(self.sidecar.start(), timeout)
        if not settle:
            return self
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(
            h.state is HostState.JOINING for h in self.balancer.hosts()
        ):
            time.sleep(0.01)
        return self

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run `coroutine` on the sidecar's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def stop(self, grace: float = 0.0, timeout: float = 60.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            self.call(self.sidecar.stop(grace), timeout)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
            self._loop.close()

    @property
    def url(self) -> str:
        return self.sidecar.url

    @property
    def admin_url(self) -> str:
        return f"http://{self.sidecar.admin_address}"

    @property
    def token(self) -> str:
        """The bearer token PUT /v1/hosts requires (the configured one or a generated one)."""
        return self.sidecar.token

    @property
    def balancer(self) -> Balancer:
        """The core; its methods are thread-safe."""
        return self.sidecar.balancer

    def __enter__(self) -> SidecarThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
