"""What the balancer tells the world: host events for listeners, status snapshots, counters.

Plain records apart from the balancer, so adapters, metrics and status APIs read them without
knowing how the core decides.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from gremlinlb.core.endpoints import Endpoint, HostState
from gremlinlb.core.outcomes import Outcome


class EventKind(enum.Enum):
    ADDED = "added"
    REMOVED = "removed"
    STATE_CHANGED = "state_changed"


@dataclass(frozen=True, slots=True)
class HostEvent:
    kind: EventKind
    endpoint: Endpoint
    state: HostState
    previous: HostState | None = None
    reason: str = ""


Listener = Callable[[HostEvent], None]


@dataclass(frozen=True, slots=True)
class HostStatus:
    """A read-only snapshot of one host, for status APIs and metrics."""

    endpoint: Endpoint
    state: HostState
    state_since: float  # wall clock
    in_flight: int
    outcomes: dict[Outcome, int]
    last_error: str | None
    ewma_latency: float | None = None  # peak-EWMA seconds, as picking sees it now
    ejections: int = 0  # times ejected since it was added
    ejected_until: float | None = None  # wall clock, while ejected
    # Healthy but found stuck: new requests only when no other host can take them.
    deprioritised: bool = False

    @property
    def requests(self) -> int:
        return sum(self.outcomes.values())


@dataclass(frozen=True, slots=True)
class BalancerStats:
    """Counters for metrics, since the balancer was created."""

    ejections: dict[str, int]  # by reason: consecutive_failures, stuck, slow
    hedges_sent: int
    hedges_won: int
    extra_spent: int  # hedges and costly retries the budget allowed
    budget_exhausted: int  # ... and refused
    attempts_by_role: dict[str, int] = field(default_factory=dict)  # by the host's role
    # Attempts sent to a host in the client's own zone, and to one in another zone (counted
    # only while the client's zone is known and the host has one).
    same_zone: int = 0
    cross_zone: int = 0
    # Times a host was found stuck and deprioritised instead of ejected (see check_outliers).
    deprioritised: int = 0
