"""Memory bounds of the sidecar: one budget for every byte it holds on behalf of clients.

The bytes that grow with load are the answers queued for a client that reads slower than its
backend answers, and the request frames in flight. Backend connections are shared by many
clients, so they always read; bounds apply on the client side instead:

- a client holding more than `client_pause_bytes` is not read: its next requests wait in the
  kernel's socket buffers (TCP backpressure) until it reads what it was sent;
- an answer frame that would take one client's queue over `client_max_queued_bytes` cuts that
  client off (close 1008): it does not read, and only it pays;
- when everything held passes `budget_bytes`, every client pauses, and the clients with the
  longest queues are cut off until the total is back under the budget.

Large buffers are returned to the system after a burst (glibc keeps freed heap otherwise).
"""

from __future__ import annotations

import ctypes
import functools

# Moved to options.py (the operator reads them); re-exported for the runtime.
from gremlinlb.sidecar.options import MemoryLimits as MemoryLimits
from gremlinlb.sidecar.options import MiB as MiB

# glibc's mallopt parameter: allocations above it get their own mapping, returned on free.
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 256 * 1024


class MemoryBudget:
    """The running total of held bytes, and the high-water mark since memory was last trimmed."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0

    @property
    def over(self) -> bool:
        return self.used > self.limit

    def charge(self, size: int) -> None:
        self.used += size
        if self.used > self.peak:
            self.peak = self.used

    def discharge(self, size: int) -> None:
        self.used -= size

    def burst_passed(self, threshold: int = 8 * MiB) -> bool:
        """Whether a burst of at least `threshold` bytes has passed since the last time this
        said so: freed memory is worth giving back to the system now."""
        if self.peak < threshold or self.used > self.peak // 4:
            return False
        self.peak = self.used
        return True

    def trim_after_burst(self, threshold: int = 8 * MiB) -> bool:
        """After a burst of at least `threshold` bytes that has passed, give freed memory back
        to the system; True if it did."""
        return self.burst_passed(threshold) and release_free_memory()


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """glibc, whose allocator these calls tune; None elsewhere (musl, macOS)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def tune_allocator() -> None:
    """On glibc, serve large buffers (answer frames) from their own mappings, which go back to
    the system when freed, instead of a heap that only grows."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)


def release_free_memory() -> bool:
    """glibc's malloc_trim: return free heap pages to the system (a no-op elsewhere). It walks
    the whole heap (milliseconds after a large burst) and releases the GIL: the sidecar calls it
    on a worker thread, not on its event loop."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
