"""Tunables of the balancing core, validated once so adapters can trust them.

Defaults are chosen for the fleets gremlinlb is built for: 2 to 5 Gremlin Servers, where one
host is a third or half of the capacity, so taking a host out is never a small decision.

Each field carries a :class:`Doc` (what it means, its unit, its bounds, and its name where a
surface spells it differently): the flags, environment variables, config file, admin API, the
injected sidecar's environment and the GremlinCluster CRD are all generated from these
dataclasses (see :mod:`gremlinlb.schema`), and the bounds below are the only range checks.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass, field
from typing import Any

from gremlinlb.core.errors import InvalidSettingError

#: Key of a field's :class:`Doc` in ``dataclasses.Field.metadata``.
DOC = "gremlinlb"


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


@dataclass(frozen=True, slots=True)
class Doc:
    """What one setting means and where it may lie (bounds are inclusive unless ``gt``/``lt``)."""

    help: str
    unit: str = ""
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    #: The flag/env/config-file name when it is not ``<section flag>_<field>``.
    flag: str | None = None
    #: The GremlinCluster field name when it is not the field's name in camelCase.
    cr: str | None = None
    #: A value outside the bounds that is admitted too and means "off" (0 for keepalive).
    off: float | None = None

    def admits(self, value: float) -> bool:
        if self.off is not None and value == self.off:
            return True
        return (
            (not isinstance(value, float) or math.isfinite(value))
            and (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )

    def bounds(self) -> str:
        """The range in words: ``> 0 seconds``, ``>= 0.5 and < 1``, ``between 0 and 1``."""
        unit = f" {self.unit}" if self.unit else ""
        if self.ge is not None and self.le is not None and self.off is None:
            return f"between {self.ge:g} and {self.le:g}{unit}"
        parts = [
            f"{sign} {limit:g}"
            for sign, limit in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
            if limit is not None
        ]
        text = " and ".join(parts) + unit if parts else f"finite{unit}"
        return text if self.off is None else f"{self.off:g} (off) or {text}"


def setting(default: Any, help: str, **doc: Any) -> Any:
    """A field with its :class:`Doc` (``unit``, ``ge``/``gt``/``le``/``lt``, ``flag``, ``cr``)."""
    return field(default=default, metadata={DOC: Doc(help, **doc)})


def section(kind: type[Any], help: str, *, flag: str, cr: str) -> Any:
    """A nested group of settings; ``flag`` prefixes its flat names, ``cr`` names its CR object."""
    return field(default_factory=kind, metadata={DOC: Doc(help, flag=flag, cr=cr)})


def check_bounds(settings: Any) -> None:
    """Refuse the first field outside the bounds its :class:`Doc` gives, naming it."""
    for f in dataclasses.fields(settings):
        doc: Doc | None = f.metadata.get(DOC)
        value = getattr(settings, f.name)
        if doc is None or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if not doc.admits(value):
            raise InvalidSettingError(f"{f.name} must be {doc.bounds()}, got {value}")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidSettingError(message)


@dataclass(frozen=True, slots=True)
class HealthCheckSettings:
    """Active health checking: a real traversal, with rise/fall hysteresis like HAProxy."""

    # Floors on every interval and timeout (like Envoy's): below them the core would schedule
    # thousands of probes or timers a second per host, and no fleet needs that.
    interval: float = setting(
        10.0, "Seconds between probes of a healthy host.", unit="seconds", ge=0.1
    )
    timeout: float = setting(
        5.0, "Seconds a probe may take before it fails.", unit="seconds", ge=0.05
    )
    rise: int = setting(
        1, "Passing probes in a row before a down host serves again.", ge=1, flag="rise"
    )
    fall: int = setting(
        2, "Failing probes in a row before a healthy host is taken out.", ge=1, flag="fall"
    )
    probe_healthy: bool = setting(
        True, "Probe healthy hosts too (finds a hung server without traffic).", flag="probe_healthy"
    )
    # None sends the bytecode of g.V().limit(1).count() (its answer is a plain number whatever
    # the provider's types); a string is sent as a script (op `eval`). Either way only the
    # answer's status is read, never its result.
    probe_script: str | None = setting(
        None,
        "A Gremlin script to probe with; when absent, g.V().limit(1).count() is sent as "
        "bytecode. Only the answer's status counts.",
        flag="probe_script",
        cr="probe",
    )
    # False: no probes at all. Hosts join healthy at once, ejected hosts return when their
    # ejection time is up, and a host taken down by a refused connection returns after
    # `unhealthy_interval` (passive recovery, like nginx's fail_timeout).
    enabled: bool = setting(
        True, "Probe at all (false: hosts serve unprobed and return passively)."
    )
    # Down, ejected and joining hosts are probed this often (Envoy's unhealthy_interval): a
    # server back from a restart serves within a second instead of a whole `interval`.
    unhealthy_interval: float = setting(
        1.0,
        "Seconds between probes of down, ejected and joining hosts.",
        unit="seconds",
        ge=0.1,
        flag="unhealthy_interval",
    )
    # ... and this often while no host at all is healthy: every request is waiting then.
    outage_interval: float = setting(
        0.25,
        "Seconds between probes of down hosts while no host is healthy (at most the "
        "unhealthy interval).",
        unit="seconds",
        ge=0.05,
    )

    # Amazon Neptune's instance status (the Java client's health filter): an instance can
    # answer a traversal while it says it is not fit to serve (e.g. "recovery" after a restart
    # with transactions to roll back). Off by default: plain Gremlin Servers have no /status.
    status_probe: bool = setting(
        False,
        "Also GET each host's status path (Amazon Neptune's /status) at every probe: the host "
        'passes only if it answers 200 with a JSON body whose status is "healthy" (over https '
        "for wss hosts, SigV4-signed when sigv4 is on).",
    )
    status_path: str = setting(
        "/status", "The path the status probe asks (an absolute path, no query)."
    )
    status_timeout: float = setting(
        2.0, "Seconds the status probe may take before it fails.", unit="seconds", ge=0.05
    )

    def __post_init__(self) -> None:
        check_bounds(self)
        _require(
            self.status_path.startswith("/")
            and not any(c in self.status_path for c in "?# \t\r\n"),
            f"status_path must be an absolute path without query or spaces, like /status; "
            f"got {self.status_path!r}",
        )
        _require(
            self.outage_interval <= self.unhealthy_interval,
            f"outage_interval must be <= unhealthy_interval "
            f"({self.unhealthy_interval}s), got {self.outage_interval}",
        )
        if self.probe_script is not None:
            _require(bool(self.probe_script.strip()), "probe_script must not be blank")


@dataclass(frozen=True, slots=True)
class BufferSettings:
    """The bounded wait room used while no backend is healthy (Tremor's in-memory WAL idea)."""

    max_elements: int = setting(1000, "Requests that may wait while no host is healthy.", ge=0)
    max_bytes: int = setting(
        1024 * 1024, "Total bytes of requests that may wait.", unit="bytes", ge=0
    )
    max_wait: float = setting(
        30.0,
        "Seconds a request may wait for a healthy host (0 disables the buffer).",
        unit="seconds",
        ge=0.01,
        off=0,
    )
    # When hosts come back, at most this many buffered requests per host are handed out and
    # not yet finished; more follow as those finish. 32 keeps a just-restarted server (cold
    # JIT, empty caches) from getting a thousand requests in one burst, yet drains a full
    # buffer in a few round trips.
    release_per_host: int = setting(
        32, "Waiting requests handed to one returning host before some of them finish.", ge=1
    )

    def __post_init__(self) -> None:
        check_bounds(self)

    @property
    def enabled(self) -> bool:
        return self.max_elements > 0 and self.max_bytes > 0 and self.max_wait > 0


@dataclass(frozen=True, slots=True)
class OutlierSettings:
    """When a host that still passes probes is taken out anyway (Envoy's outlier detection)."""

    # Connection losses or timeouts in a row. 5 is Envoy's default: with 2-5 hosts a false
    # ejection costs a third or half of the capacity, and one slow query (one timeout, never
    # retried) cannot reach it; a host whose connections keep breaking does within a second.
    consecutive_failures: int = setting(
        5,
        "Lost connections or timeouts in a row that eject a host.",
        ge=1,
        flag="consecutive_failures",
    )
    # Ejection time = base_ejection x times ejected (decaying after healthy stretches), capped.
    # 5 s: a paused JVM or a GC storm is usually over by then, and a third of the fleet should
    # not sit out for Envoy's 30 s on one bad moment; a repeat offender stays out longer.
    base_ejection: float = setting(
        5.0, "Seconds out, times the number of ejections.", unit="seconds", ge=0.1
    )
    max_ejection: float = setting(60.0, "Most seconds one ejection lasts.", unit="seconds", ge=0.1)
    # Never more than this share of the hosts ejected at once (at least one of 2+ hosts may
    # always be), and never the last healthy one: 1 of 2 or 3 hosts, 2 of 4 or 5.
    max_ejected_share: float = setting(
        0.5,
        "Largest share of the hosts ejected at once (1 would leave none to serve).",
        ge=0,
        lt=1,
    )
    # Stuck: requests in flight and nothing answered for max(stuck_floor, stuck_factor x the
    # peers' typical latency) while the peers answered. 1 s: a cold JVM hit by a burst was
    # measured answering nothing for 0.54 s; hedges answer the reads on a hung host sooner.
    stuck_factor: float = setting(
        10.0, "A host answering nothing for this many times its peers' latency is stuck.", ge=1
    )
    stuck_floor: float = setting(
        1.0, "... and for at least this many seconds.", unit="seconds", ge=0.05
    )
    # Slow: the host's typical latency is over slow_factor x its peers' and over slow_floor.
    # 10x: a server answering 150 ms late next to peers at a few ms is 30-50x; a cold JVM on a
    # busy machine was measured at 5x its warm peers and should not be ejected for it.
    # 100 ms floor: below it, least-loaded picking and hedging absorb the difference.
    slow_factor: float = setting(
        10.0, "A host this many times slower than its peers is slow.", gt=1
    )
    slow_floor: float = setting(0.1, "... and slower than this many seconds.", unit="seconds", ge=0)

    def __post_init__(self) -> None:
        check_bounds(self)
        _require(
            self.base_ejection <= self.max_ejection,
            f"base_ejection must be <= max_ejection; got base_ejection="
            f"{self.base_ejection}, max_ejection={self.max_ejection}",
        )


@dataclass(frozen=True, slots=True)
class HedgeSettings:
    """A read with no answer after the hedge delay also goes to a second host (adapters)."""

    enabled: bool = setting(True, "Send a slow read to a second host too.", flag="hedge")
    # The delay is this percentile of recent latencies: only the slowest 5% are hedged.
    percentile: float = setting(
        0.95, "Hedge after this percentile of recent latencies.", ge=0.5, lt=1
    )
    # Never hedge sooner than 10 ms: below that a second request mostly doubles the work.
    delay_floor: float = setting(0.01, "Never hedge sooner (seconds).", unit="seconds", ge=0.001)
    # ... nor later than 500 ms, so a read stuck on a hung host is answered within a second.
    max_delay: float = setting(0.5, "Never hedge later (seconds).", unit="seconds", ge=0.001)

    def __post_init__(self) -> None:
        check_bounds(self)
        _require(
            self.delay_floor <= self.max_delay,
            f"hedge delay_floor must be <= max_delay; got delay_floor="
            f"{self.delay_floor}, max_delay={self.max_delay}",
        )


@dataclass(frozen=True, slots=True)
class BudgetSettings:
    """How many extra requests (hedges, and retries that cost a server work) may be sent.

    Finagle's retry budget: within any `window`, extra requests <= ratio x requests +
    min_per_second x window. An overloaded fleet is not made worse by its own retries.
    """

    # 20% (Finagle's default): enough to hedge every read on one bad host of five.
    ratio: float = setting(
        0.2, "Extra requests (hedges, costly retries) allowed per request.", ge=0, le=1
    )
    # A quiet client may still retry or hedge a few requests a second.
    min_per_second: float = setting(10.0, "Extra requests a second allowed in any case.", ge=0)
    window: float = setting(10.0, "Seconds the budget is counted over.", unit="seconds", ge=1)

    def __post_init__(self) -> None:
        check_bounds(self)


@dataclass(frozen=True, slots=True)
class SigV4Settings:
    """AWS Signature V4 on each backend's WebSocket upgrade (Neptune's IAM auth).

    Only data: the signing itself (botocore's signer and credential chain) is gremlinlb.sigv4,
    called by the adapters for every new backend connection, so each is signed fresh.
    """

    enabled: bool = setting(False, "Sign every backend WebSocket upgrade with SigV4.")
    region: str | None = setting(
        None,
        "AWS region to sign for (none: the region of the AWS config, AWS_REGION or "
        "AWS_DEFAULT_REGION).",
    )
    service: str = setting("neptune-db", "Service name to sign for.")
    # The peer's "proxy host header": through a proxy or a tunnel the upgrade must still name
    # (and sign) the Neptune endpoint, not the address the socket goes to.
    host: str | None = setting(
        None,
        "The host:port to sign and send as Host instead of each backend's own address (when "
        "backends are reached through a proxy or a tunnel; none: the backend's address).",
    )


@dataclass(frozen=True, slots=True)
class BalancerSettings:
    """Everything the core needs; adapters add only their own I/O settings."""

    policy: Policy = setting(
        Policy.ROUND_ROBIN,
        "How the next host is chosen among the healthy ones: round_robin, least_in_flight "
        "(power of two choices) or peak_ewma (power of two choices by latency x in flight).",
    )
    health: HealthCheckSettings = section(
        HealthCheckSettings, "Active health checks.", flag="health", cr="healthCheck"
    )
    buffer: BufferSettings = section(
        BufferSettings,
        "The bounded wait room used while no host is healthy.",
        flag="buffer",
        cr="buffer",
    )
    outlier: OutlierSettings = section(
        OutlierSettings,
        "When a host that passes probes is taken out for a while anyway.",
        flag="outlier",
        cr="outlierDetection",
    )
    hedge: HedgeSettings = section(
        HedgeSettings, "Slow reads also sent to a second host.", flag="hedge", cr="hedging"
    )
    budget: BudgetSettings = section(
        BudgetSettings,
        "How many hedges and costly retries may be sent on top of the requests.",
        flag="extra_budget",
        cr="extraRequestBudget",
    )
    sigv4: SigV4Settings = section(
        SigV4Settings,
        "SigV4 signing of backend upgrades (Neptune IAM auth).",
        flag="sigv4",
        cr="sigv4",
    )
    # Tries per request, the first included. Retries go to other hosts (see Balancer.acquire).
    max_attempts: int = setting(3, "Tries per request, the first included.", ge=1)
    # A request with no answer after this long ends as a timeout (evidence against its host).
    request_timeout: float = setting(
        30.0,
        "Seconds without an answer before a request fails and counts against its host.",
        unit="seconds",
        ge=0.1,
    )
    connect_timeout: float = setting(
        5.0, "Seconds to open a backend connection.", unit="seconds", ge=0.1
    )
    # A host back from down, ejected or joining gets a share ramping from 10% to a full one
    # over this many seconds (0: at once). 5 s warms a restarted JVM without starving it.
    slow_start: float = setting(
        5.0,
        "Seconds over which a returning host ramps up to a full share (0: at once).",
        unit="seconds",
        ge=0.1,
        off=0,
    )
    # 30 s is under the idle limits that cut connections silently: AWS ALB 60 s, NLB 350 s,
    # Neptune 20-25 min, Cosmos DB 1 h. The sidecar closes (and replaces) a connection whose
    # pong does not come within half the interval.
    keepalive_interval: float = setting(
        30.0,
        "Seconds without traffic before a backend connection is sent a WebSocket ping (0: never).",
        unit="seconds",
        ge=1,
        off=0,
    )
    # Off by default: keepalive already covers idle limits, and each replacement costs a
    # handshake. Set it below a hard connection lifetime (Neptune ends IAM-authenticated
    # connections after 10 days). Session and transaction connections are never recycled.
    max_connection_age: float = setting(
        0.0,
        "Seconds after which a pooled backend connection takes no new request and is replaced, "
        "its requests in flight finishing (0: never; sessions are never recycled).",
        unit="seconds",
        ge=1,
        off=0,
    )
    read_routing: ReadRouting = setting(
        ReadRouting.PREFER_READERS,
        "Where reads go when hosts have roles: prefer_readers (writers only while no reader "
        "is healthy), readers_only, or any.",
    )
    # Takes effect only when the client's own zone is known (the sidecar's --zone, the
    # client's zone=) and hosts carry zones.
    zone_aware: bool = setting(
        True,
        "Prefer hosts in the client's own zone, spilling over to keep the load per host even "
        "across zones (Envoy's zone-aware routing).",
    )
    # Envoy's min_cluster_size, whose default is 6: below 6 healthy hosts Envoy routes with no
    # zone preference. Here 1 (any size): gremlinlb is built for fleets of 2 to 5 servers,
    # where Envoy's default would never prefer a zone, and the split still keeps the load per
    # host even (the plan spills whatever a zone cannot carry). Raise it to give up the zone
    # preference for small kinds, e.g. one reader per zone.
    zone_min_cluster_size: int = setting(
        1,
        "Healthy hosts of a kind (writers, readers) needed for zone-aware routing; below it "
        "requests go to any zone (Envoy's min_cluster_size).",
        ge=1,
    )

    def __post_init__(self) -> None:
        check_bounds(self)
