"""The in-process client follows a Neptune cluster (`neptune=NeptuneSource(...)`).

The same `gremlinlb.neptune.NeptuneTopology` as the sidecar's: reads on the interval with
jitter, throttling backoff, the last good list kept, and reads at once while every host of a
role is out of service. It runs on its own thread and event loop (the client has none: its
callers are plain threads), applies each new list with the connection's `replace_hosts`, and
stops when the connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from gremlinlb.core import Balancer, Endpoint
from gremlinlb.neptune import NeptuneSource, NeptuneTopology, TagCache, describe

#: The longest a caller waits for a read of the management API (botocore's retries included).
READ_WAIT = 30.0


@dataclass(frozen=True)
class FirstRead:
    """The cluster as read when the connection is made: its first round of hosts."""

    source: NeptuneSource
    hosts: tuple[Endpoint, ...]
    tags: TagCache  # kept for the reads that follow


def first_read(source: NeptuneSource) -> FirstRead:
    """The cluster's hosts now, for the connection's first round; a clear error if unread."""
    tags = TagCache(source.refresh)
    try:
        return FirstRead(source, describe(source, tags), tags)
    except Exception as error:
        raise ConnectionError(
            f"cannot read Neptune cluster {source.cluster!r} in {source.region} ({error}); "
            "check the cluster identifier, the region and the credentials (the IAM policy "
            "needs rds:DescribeDBClusters and rds:DescribeDBInstances)"
        ) from error


class NeptuneThread:
    """The in-process client's Neptune topology loop on a thread of its own, applying lists to
    the connection (the operator's per-cluster one: `operator.neptune.GremlinClusterNeptune`)."""

    def __init__(
        self,
        first: FirstRead,
        balancer: Balancer,
        apply: Callable[[tuple[Endpoint, ...]], object],
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self.topology = NeptuneTopology(first.source, apply, partial(describe, tags=first.tags))
        self.topology.last = first.hosts
        self.topology.watch(balancer, self._loop)
        self._task = self._loop.create_task(self.topology.run(read_first=False))
        self._thread = threading.Thread(target=self._run, name="gremlinlb-neptune", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        with contextlib.suppress(asyncio.CancelledError):
            self._loop.run_until_complete(self._task)
        self._loop.close()

    def refresh_now(self) -> bool:
        """Read the cluster at once from a caller's thread; True once the list is applied (a
        write refused by a reader is then re-sent to the writer it names)."""
        done = asyncio.run_coroutine_threadsafe(self.topology.refresh_now(), self._loop)
        return done.result(READ_WAIT)

    def stop(self) -> None:
        """End the loop (its eager reads too) and wait for the thread, a read at most."""
        with contextlib.suppress(RuntimeError):  # the loop has ended already
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(READ_WAIT)
