"""One host as the balancer knows it: its state, its leases, and each unit's record of it.

The per-host state is split by concern, as Envoy keeps a host's outlier monitor apart from
the host: `evidence` belongs to outlier detection, `probe` to probe scheduling, `ramp` to
slow start; what is left here is the state machine's (state, health counter, draining) and
the load the pickers read (leases in flight, peak EWMA).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from gremlinlb.core.endpoints import Endpoint, HostState
from gremlinlb.core.events import HostStatus
from gremlinlb.core.health import HealthCounter
from gremlinlb.core.latency import PeakEwma
from gremlinlb.core.lease import Lease
from gremlinlb.core.outcomes import Outcome
from gremlinlb.core.outliers import Evidence
from gremlinlb.core.probing import ProbeRecord
from gremlinlb.core.slowstart import Ramp


@dataclass(eq=False)
class Host:
    endpoint: Endpoint
    seq: int
    health: HealthCounter
    state: HostState
    state_since: float = field(default_factory=time.time)  # wall clock
    leases: dict[Lease, None] = field(default_factory=dict)  # in flight, oldest first
    from_buffer: set[Lease] = field(default_factory=set)  # handed out by the buffer, unfinished
    outcomes: Counter[Outcome] = field(default_factory=Counter)
    last_error: str | None = None
    ewma: PeakEwma = field(default_factory=PeakEwma)  # load, as the picking policy sees it
    down_until: float | None = None  # passive recovery, only while health checks are off
    # While draining: the state it had before, and since when it drains (balancer clock). A
    # host listed again returns to that state (see Balancer._relist).
    drained_from: HostState | None = None
    drained_at: float = 0.0
    evidence: Evidence = field(default_factory=Evidence)
    probe: ProbeRecord = field(default_factory=ProbeRecord)
    ramp: Ramp = field(default_factory=Ramp)

    @property
    def in_flight(self) -> int:
        return len(self.leases)

    def sample(self, latency: float, now: float) -> None:
        """One answer's latency, for picking (peak EWMA) and for judging it slow."""
        self.ewma.update(latency, now)
        self.evidence.sample(latency)

    def status(self, now: float, wall: float) -> HostStatus:
        """A snapshot for status APIs; `now` on the balancer's clock, `wall` the wall clock."""
        until = self.evidence.ejected_until
        return HostStatus(
            endpoint=self.endpoint,
            state=self.state,
            state_since=self.state_since,
            in_flight=self.in_flight,
            outcomes=dict(self.outcomes),
            last_error=self.last_error,
            ewma_latency=self.ewma.value(now),
            ejections=self.evidence.ejections,
            ejected_until=(
                wall + (until - now)
                if self.state is HostState.EJECTED and until is not None
                else None
            ),
            deprioritised=self.evidence.stuck,
        )

    def oldest_requests(self, count: int) -> list[Lease]:
        """The `count` oldest request leases (sessions left out), O(count + sessions)."""
        found: list[Lease] = []
        for lease in self.leases:
            if not lease.session:
                found.append(lease)
                if len(found) == count:
                    break
        return found


def seq_of(host: Host) -> int:
    """The sort key of the rings: hosts in the order they were listed."""
    return host.seq
