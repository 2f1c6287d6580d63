"""Many due times behind one event-loop timer.

Every read used to arm a loop timer of its own for its hedge and cancel it when answered;
under uvloop each is a libuv timer started and stopped per request (issue 26 point 3). A
`TimerQueue` keeps (due, callback) entries in one heap and one loop timer for the earliest:
arming costs a heap push, and nothing is cancelled. A callback finds out itself whether it
still matters (an answered read's hedge check returns at once); an entry holds its arguments
until it is due, at most the longest delay given.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: How early or late a callback may run so that the one timer is not re-armed for every entry
#: a little earlier than the first (a hedge delay moves with every answer).
SLACK = 0.002


class TimerQueue:
    """Callbacks at due times (loop.time()), run from one loop timer armed for the first."""

    __slots__ = ("_armed", "_handle", "_heap", "_order")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._order = itertools.count()  # equal due times run in the order they were added
        self._handle: asyncio.TimerHandle | None = None
        self._armed = 0.0

    def __len__(self) -> int:
        return len(self._heap)

    def call_later(
        self,
        loop: asyncio.AbstractEventLoop,
        delay: float,
        callback: Callable[..., None],
        *args: Any,
    ) -> None:
        due = loop.time() + delay
        heapq.heappush(self._heap, (due, next(self._order), callback, args))
        if self._handle is None or due < self._armed - SLACK:
            self._arm(loop, due)

    def _arm(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed = due
        self._handle = loop.call_at(due, self._fire, loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._handle = None
        heap = self._heap
        now = loop.time()
        while heap and heap[0][0] <= now + SLACK:
            _, _, callback, args = heapq.heappop(heap)
            try:
                callback(*args)
            except Exception:  # one failing callback must not hold back the others
                log.exception("a timer callback failed")
        if heap and self._handle is None:  # a callback may have armed an earlier one
            self._arm(loop, heap[0][0])

    def close(self) -> None:
        """Drop every entry (the loop is going away)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._heap.clear()
