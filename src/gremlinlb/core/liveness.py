"""Busy or hung: the rule both adapters follow when a server answers nothing (issue 20).

Gremlin Server runs every request, probes included, on its worker pool (gremlinPool); a few
slow queries fill it, and a probe's traversal then waits like any request. WebSocket pings
are answered by the server's I/O threads, workers busy or not: a pong on a fresh connection
says the JVM is up and busy (the host stays in rotation and what it runs is not re-sent:
`Balancer.record_probe(alive=True)`, `Balancer.record_ping`); no pong within the budget says
it is hung or dead. The ping itself is I/O, in `gremlinlb.ping`.
"""

from __future__ import annotations

from gremlinlb.core.settings import BalancerSettings

# Seconds the ping that tells a busy server from a dead one may take (at most the probe timeout).
PING_BUDGET = 1.0

# Seconds between looks at an unanswered read whose hedge was not due (its host quiet, its
# ping under way), at most: the verdict comes within about PING_BUDGET, and a hung host's reads
# should move soon after. Both adapters use it (client/remote_connection.py, sidecar/resend.py).
HEDGE_RECHECK_MAX = 0.25

#: Appended to a probe's error when its traversal timed out but the server answered a ping.
BUSY_NOTE = "; the server answers pings: busy, not down"


def ping_budget(settings: BalancerSettings) -> float:
    """How long a ping may take: PING_BUDGET, never more than the probe timeout."""
    return min(PING_BUDGET, settings.health.timeout)


def hung_error(budget: float) -> str:
    """A probe's error when a quiet server answered no ping within `budget` seconds."""
    return f"no answer to a ping within {budget:g}s: the server is hung"
