"""An asyncio event loop on a thread of its own, for test peers used from synchronous tests
(a front's `with` block): start it, run its coroutines there, and stop it cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """One event loop running forever on a daemon thread until `stop`."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run `coroutine` on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def stop(self, closing: Coroutine[Any, Any, None], timeout: float = 10) -> None:
        """Run `closing` (errors ignored: the peer is going away), then stop the loop and
        join its thread."""
        with contextlib.suppress(Exception):
            self.run(closing, timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        self._loop.close()
