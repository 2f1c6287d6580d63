"""Closing backend pools of mimes no client uses any more (issue 20, point 5).

Each host gets one pool per mime a client used (a backend connection never mixes
serializers). Only the served mimes open pools (frames.SERVED_MIMES), but a pool opened for a
rare mime used to stay open for good: connections_per_host sockets per host and mime, and a
file descriptor and some memory on every server. A pool for any mime but the default
(GraphBinary, every driver's default, which the sidecar keeps warm) is closed once it has had
no request for `BackendOptions.mime_pool_idle` seconds and carries none; the next request on
that mime opens it again, as the first one did.
"""

from __future__ import annotations

import logging
import time
from collections.abc import MutableMapping
from typing import TYPE_CHECKING

from gremlinlb.sidecar.frames import GRAPHBINARY_CHANNEL, Channel

from gremlinlb.core import Endpoint

if TYPE_CHECKING:
    from gremlinlb.sidecar.backend import BackendPool

log = logging.getLogger(__name__)

#: The pools kept whatever their use: every driver's default serializer.
DEFAULT_CHANNEL = GRAPHBINARY_CHANNEL


def idle(pool: BackendPool, idle_seconds: float, now: float) -> bool:
    """No request was handed a connection of `pool` for `idle_seconds`, and none is in flight
    on it or waiting for it (a slow answer still streaming keeps its pool)."""
    return now - pool.last_used >= idle_seconds and not pool.busy


def close_idle_pools(
    pools: MutableMapping[tuple[Endpoint, Channel], BackendPool],
    idle_seconds: float,
    now: float | None = None,
) -> int:
    """Close and forget the idle pools of mimes other than the default; returns how many."""
    now = time.monotonic() if now is None else now
    closing = [
        key
        for key, pool in pools.items()
        if key[1] != DEFAULT_CHANNEL and idle(pool, idle_seconds, now)
    ]
    for key in closing:
        pool = pools.pop(key)
        log.info(
            "closing the %d connection(s) to %s for %s: no request for %gs (mime_pool_idle)",
            len(pool.connections),
            key[0].address,
            key[1].mime,
            idle_seconds,
        )
        pool.close()
    return len(closing)
