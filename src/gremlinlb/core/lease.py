"""A lease: one attempt in flight on one host, as the core sees it.

The core keeps every lease until the adapter says how the attempt ended, so it can tell a
host that answers nothing (stuck) from one that is merely busy, measure latency itself, and
list what is in flight on a host it ejects.
"""

from __future__ import annotations

from dataclasses import dataclass

from gremlinlb.core.endpoints import Endpoint


@dataclass(eq=False, slots=True)
class Lease:
    """Identity matters (eq=False): two leases on one host at one instant are two attempts."""

    endpoint: Endpoint
    # On the balancer's clock; moved to the moment of sending by `Balancer.sent` when the
    # adapter first had to wait for a connection (not the server's latency).
    started: float
    hedge: bool = False  # a second attempt of a read, sent because the first was slow
    # A session's connection: in flight for the session's whole life, so it is neither a
    # latency sample nor evidence that its host is stuck.
    session: bool = False
    # It may write (or is a session): its retries and re-dispatches go to writers only.
    write: bool = True
