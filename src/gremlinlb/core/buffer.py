"""The bounded wait room for requests that arrive while no backend is healthy.

Like Tremor's in-memory WAL: bounded by count, by bytes and by time, FIFO, and nothing that was
admitted is dropped or reordered. Waiting itself belongs to the adapter (a thread blocks on an
event, a coroutine awaits a future); this module only keeps order and bounds.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from gremlinlb.core.errors import BufferFullError
from gremlinlb.core.lease import Lease
from gremlinlb.core.settings import BufferSettings

_sequence = itertools.count()


def _no_op() -> None:
    return None


@dataclass(eq=False)
class Waiter:
    """One buffered request. Exactly one of `lease` / `error` is set when it is released."""

    size: int
    deadline: float
    seq: int = field(default_factory=lambda: next(_sequence))
    lease: Lease | None = None
    session: bool = False  # the lease it gets is a session's (see Balancer.acquire)
    write: bool = True  # it may write: only a writer may take it (see Balancer.acquire)
    error: BaseException | None = None
    # Called (from any thread, under the balancer's lock) when the waiter is released; must not
    # block. A thread adapter sets an Event, an asyncio adapter schedules a future result.
    notify: Callable[[], None] = _no_op

    @property
    def released(self) -> bool:
        return self.lease is not None or self.error is not None


class PendingBuffer:
    """FIFO of waiters within `max_elements`, `max_bytes` and `max_wait`. Not thread-safe:
    the balancer serialises access."""

    def __init__(self, settings: BufferSettings) -> None:
        self._settings = settings
        self._waiters: deque[Waiter] = deque()
        self._bytes = 0

    @property
    def settings(self) -> BufferSettings:
        return self._settings

    @settings.setter
    def settings(self, settings: BufferSettings) -> None:
        """New bounds apply to new admissions; whoever waits already keeps its place."""
        self._settings = settings

    def __len__(self) -> int:
        return len(self._waiters)

    def __iter__(self) -> Iterator[Waiter]:
        return iter(self._waiters)

    @property
    def bytes(self) -> int:
        return self._bytes

    def admit(self, size: int, now: float, *, session: bool = False, write: bool = True) -> Waiter:
        """Queue a request of `size` bytes or say which bound stops it."""
        limits = self._settings
        if not limits.enabled:
            raise BufferFullError(
                "disabled",
                0,
                "no healthy Gremlin Server and the wait buffer is disabled "
                "(max_elements, max_bytes or max_wait is 0); enable it or restore a backend",
            )
        if len(self._waiters) >= limits.max_elements:
            raise BufferFullError(
                "max_elements",
                limits.max_elements,
                f"no healthy Gremlin Server and the wait buffer is full: max_elements="
                f"{limits.max_elements} requests are already waiting; the request was refused "
                "(nothing was sent). Retry later, restore a backend, or raise max_elements.",
            )
        if self._bytes + size > limits.max_bytes:
            raise BufferFullError(
                "max_bytes",
                limits.max_bytes,
                f"no healthy Gremlin Server and the wait buffer would exceed max_bytes="
                f"{limits.max_bytes} ({self._bytes} bytes waiting, this request {size}); the "
                "request was refused (nothing was sent). Retry later, restore a backend, or "
                "raise max_bytes.",
            )
        waiter = Waiter(size=size, deadline=now + limits.max_wait, session=session, write=write)
        self._waiters.append(waiter)
        self._bytes += size
        return waiter

    def peek(self) -> Waiter | None:
        return self._waiters[0] if self._waiters else None

    def pop(self) -> Waiter:
        waiter = self._waiters.popleft()
        self._bytes -= waiter.size
        return waiter

    def remove(self, waiter: Waiter) -> bool:
        """Take out a waiter that gave up; False if it was already released."""
        try:
            self._waiters.remove(waiter)
        except ValueError:
            return False
        self._bytes -= waiter.size
        return True

    def discard(self, released: list[Waiter]) -> None:
        """Take out waiters that were released, in one pass (they may be anywhere in line:
        a write waiting for a writer does not hold up the reads behind it)."""
        if not released:
            return
        if released[-1] is self._waiters[len(released) - 1]:
            for _ in released:  # the front ones, the common case
                self.pop()
            return
        gone = {id(w) for w in released}
        self._waiters = deque(w for w in self._waiters if id(w) not in gone)
        self._bytes -= sum(w.size for w in released)

    def expired(self, now: float) -> list[Waiter]:
        """Remove and return waiters whose deadline passed (FIFO with one max_wait: the front)."""
        gone: list[Waiter] = []
        while self._waiters and self._waiters[0].deadline <= now:
            gone.append(self.pop())
        return gone
