"""Tunables of the balancing core, validated once so adapters can trust them.

Defaults are chosen for the fleets gremlinlb is built for: 2 to 5 Gremlin Servers, where one
host is a third or half of the capacity, so taking a host out is never a small decision.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

from gremlinlb.core.errors import InvalidSettingError


class Policy(enum.Enum):
    """How the next backend is chosen among the healthy ones."""

    ROUND_ROBIN = "round_robin"
    # Power of two choices by fewest requests in flight (Linkerd's and Envoy's default family):
    # steers away from a backend that is slow right now without global coordination.
    LEAST_IN_FLIGHT = "least_in_flight"
    # Linkerd's balancer: power of two choices by peak-EWMA latency x (in flight + 1). Learns
    # that a host is slow from its answers, not only from its queue.
    PEAK_EWMA = "peak_ewma"


class ReadRouting(enum.Enum):
    """Where read-only requests go when hosts have roles (writes always go to writers)."""

    # Readers (role reader or any); the writers only while no reader is healthy.
    PREFER_READERS = "prefer_readers"
    # Readers only: with every reader down a read waits (the buffer) rather than load a writer.
    READERS_ONLY = "readers_only"
    # Every host, writers included.
    ANY = "any"


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidSettingError(message)


def _finite(value: float) -> bool:
    return math.isfinite(value)


@dataclass(frozen=True, slots=True)
class HealthCheckSettings:
    """Active health checking: a real traversal, with rise/fall hysteresis like HAProxy."""

    interval: float = 10.0
    timeout: float = 5.0
    rise: int = 1
    fall: int = 2
    probe_healthy: bool = True
    # None sends the bytecode of g.V().limit(1); a string is sent as a script (op `eval`).
    probe_script: str | None = None
    # False: no probes at all. Hosts join healthy at once, ejected hosts return when their
    # ejection time is up, and a host taken down by a refused connection returns after
    # `unhealthy_interval` (passive recovery, like nginx's fail_timeout).
    enabled: bool = True
    # Down, ejected and joining hosts are probed this often (Envoy's unhealthy_interval): a
    # server back from a restart serves within a second instead of a whole `interval`.
    unhealthy_interval: float = 1.0
    # ... and this often while no host at all is healthy: every request is waiting then.
    outage_interval: float = 0.25

    def __post_init__(self) -> None:
        _require(
            self.interval > 0 and _finite(self.interval),
            f"health interval must be > 0 seconds, got {self.interval}",
        )
        _require(
            self.timeout > 0 and _finite(self.timeout),
            f"health probe timeout must be > 0 seconds, got {self.timeout}",
        )
        _require(self.rise >= 1, f"rise must be >= 1 consecutive passes, got {self.rise}")
        _require(self.fall >= 1, f"fall must be >= 1 consecutive failures, got {self.fall}")
        if self.probe_script is not None:
            _require(bool(self.probe_script.strip()), "probe_script must not be blank")
        _require(
            self.unhealthy_interval > 0 and _finite(self.unhealthy_interval),
            f"unhealthy_interval must be > 0 seconds, got {self.unhealthy_interval}",
        )
        _require(
            0 < self.outage_interval <= self.unhealthy_interval,
            f"outage_interval must be > 0 and <= unhealthy_interval "
            f"({self.unhealthy_interval}s), got {self.outage_interval}",
        )


@dataclass(frozen=True, slots=True)
class BufferSettings:
    """The bounded wait room used while no backend is healthy (Tremor's in-memory WAL idea)."""

    max_elements: int = 1000
    max_bytes: int = 1024 * 1024
    max_wait: float = 30.0
    # When hosts come back, at most this many buffered requests per host are handed out and
    # not yet finished; more follow as those finish. 32 keeps a just-restarted server (cold
    # JIT, empty caches) from getting a thousand requests in one burst, yet drains a full
    # buffer in a few round trips.
    release_per_host: int = 32

    def __post_init__(self) -> None:
        _require(self.max_elements >= 0, f"max_elements must be >= 0, got {self.max_elements}")
        _require(self.max_bytes >= 0, f"max_bytes must be >= 0, got {self.max_bytes}")
        _require(self.max_wait >= 0, f"max_wait must be >= 0 seconds, got {self.max_wait}")
        _require(
            self.release_per_host >= 1,
            f"release_per_host must be >= 1 request, got {self.release_per_host}",
        )

    @property
    def enabled(self) -> bool:
        return self.max_elements > 0 and self.max_bytes > 0 and self.max_wait > 0


@dataclass(frozen=True, slots=True)
class OutlierSettings:
    """When a host that still passes probes is taken out anyway (Envoy's outlier detection)."""

    # Connection losses or timeouts in a row. 5 is Envoy's default: with 2-5 hosts a false
    # ejection costs a third or half of the capacity, and one slow query (one timeout, never
    # retried) cannot reach it; a host whose connections keep breaking does within a second.
    consecutive_failures: int = 5
    # Ejection time = base_ejection x times ejected (decaying after healthy stretches), capped.
    # 5 s: a paused JVM or a GC storm is usually over by then, and a third of the fleet should
    # not sit out for Envoy's 30 s on one bad moment; a repeat offender stays out longer.
    base_ejection: float = 5.0
    max_ejection: float = 60.0
    # Never more than this share of the hosts ejected at once (at least one of 2+ hosts may
    # always be), and never the last healthy one: 1 of 2 or 3 hosts, 2 of 4 or 5.
    max_ejected_share: float = 0.5
    # Stuck: requests in flight and nothing answered for max(stuck_floor, stuck_factor x the
    # peers' typical latency) while the peers answered. 1 s: a cold JVM hit by a burst was
    # measured answering nothing for 0.54 s; hedges answer the reads on a hung host sooner.
    stuck_factor: float = 10.0
    stuck_floor: float = 1.0
    # Slow: the host's typical latency is over slow_factor x its peers' and over slow_floor.
    # 10x: a server answering 150 ms late next to peers at a few ms is 30-50x; a cold JVM on a
    # busy machine was measured at 5x its warm peers and should not be ejected for it.
    # 100 ms floor: below it, least-loaded picking and hedging absorb the difference.
    slow_factor: float = 10.0
    slow_floor: float = 0.1

    def __post_init__(self) -> None:
        _require(
            self.consecutive_failures >= 1,
            f"consecutive_failures must be >= 1, got {self.consecutive_failures}",
        )
        _require(
            0 < self.base_ejection <= self.max_ejection and _finite(self.max_ejection),
            f"base_ejection must be > 0 and <= max_ejection; got base_ejection="
            f"{self.base_ejection}, max_ejection={self.max_ejection}",
        )
        _require(
            0 <= self.max_ejected_share < 1,
            f"max_ejected_share must be >= 0 and < 1 (ejecting every host would leave none to "
            f"serve), got {self.max_ejected_share}",
        )
        _require(self.stuck_factor >= 1, f"stuck_factor must be >= 1, got {self.stuck_factor}")
        _require(
            self.stuck_floor > 0 and _finite(self.stuck_floor),
            f"stuck_floor must be > 0 seconds, got {self.stuck_floor}",
        )
        _require(self.slow_factor > 1, f"slow_factor must be > 1, got {self.slow_factor}")
        _require(
            self.slow_floor >= 0 and _finite(self.slow_floor),
            f"slow_floor must be >= 0 seconds, got {self.slow_floor}",
        )


@dataclass(frozen=True, slots=True)
class HedgeSettings:
    """A read with no answer after the hedge delay also goes to a second host (adapters)."""

    enabled: bool = True
    # The delay is this percentile of recent latencies: only the slowest 5% are hedged.
    percentile: float = 0.95
    # Never hedge sooner than 10 ms: below that a second request mostly doubles the work.
    delay_floor: float = 0.01
    # ... nor later than 500 ms, so a read stuck on a hung host is answered within a second.
    max_delay: float = 0.5

    def __post_init__(self) -> None:
        _require(
            0.5 <= self.percentile < 1,
            f"hedge percentile must be >= 0.5 and < 1, got {self.percentile}",
        )
        _require(
            0 < self.delay_floor <= self.max_delay and _finite(self.max_delay),
            f"hedge delay_floor must be > 0 and <= max_delay; got delay_floor="
            f"{self.delay_floor}, max_delay={self.max_delay}",
        )


@dataclass(frozen=True, slots=True)
class BudgetSettings:
    """How many extra requests (hedges, and retries that cost a server work) may be sent.

    Finagle's retry budget: within any `window`, extra requests <= ratio x requests +
    min_per_second x window. An overloaded fleet is not made worse by its own retries.
    """

    # 20% (Finagle's default): enough to hedge every read on one bad host of five.
    ratio: float = 0.2
    # A quiet client may still retry or hedge a few requests a second.
    min_per_second: float = 10.0
    window: float = 10.0

    def __post_init__(self) -> None:
        _require(
            0 <= self.ratio <= 1 and _finite(self.ratio),
            f"budget ratio must be between 0 and 1 (extra requests per request), got {self.ratio}",
        )
        _require(
            self.min_per_second >= 0 and _finite(self.min_per_second),
            f"budget min_per_second must be >= 0, got {self.min_per_second}",
        )
        _require(
            self.window > 0 and _finite(self.window),
            f"budget window must be > 0 seconds, got {self.window}",
        )


@dataclass(frozen=True, slots=True)
class BalancerSettings:
    """Everything the core needs; adapters add only their own I/O settings."""

    policy: Policy = Policy.ROUND_ROBIN
    health: HealthCheckSettings = field(default_factory=HealthCheckSettings)
    buffer: BufferSettings = field(default_factory=BufferSettings)
    outlier: OutlierSettings = field(default_factory=OutlierSettings)
    hedge: HedgeSettings = field(default_factory=HedgeSettings)
    budget: BudgetSettings = field(default_factory=BudgetSettings)
    # Tries per request, the first included. Retries go to other hosts (see Balancer.acquire).
    max_attempts: int = 3
    # A request with no answer after this long ends as a timeout (evidence against its host).
    request_timeout: float = 30.0
    connect_timeout: float = 5.0
    # A host back from down, ejected or joining gets a share ramping from 10% to a full one
    # over this many seconds (0: at once). 5 s warms a restarted JVM without starving it.
    slow_start: float = 5.0
    read_routing: ReadRouting = ReadRouting.PREFER_READERS
    # Prefer hosts in the client's own zone (the balancer's `zone`), spilling over as Envoy's
    # zone-aware routing does; takes effect only when the client's zone is known and hosts
    # carry zones.
    zone_aware: bool = True

    def __post_init__(self) -> None:
        _require(self.max_attempts >= 1, f"max_attempts must be >= 1, got {self.max_attempts}")
        _require(
            self.request_timeout > 0,
            f"request_timeout must be > 0 seconds, got {self.request_timeout}",
        )
        _require(
            self.connect_timeout > 0,
            f"connect_timeout must be > 0 seconds, got {self.connect_timeout}",
        )
        _require(
            self.slow_start >= 0 and _finite(self.slow_start),
            f"slow_start must be >= 0 seconds, got {self.slow_start}",
        )
