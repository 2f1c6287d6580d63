"""Prometheus metrics of one sidecar: counters updated as requests end, gauges read at scrape.

The per-request ones (attempts by host and outcome, both latencies) are tallied in plain ints
and folded into their series when the registry is collected (tallies.py).

Host states, in-flight counts and the buffer depth are read from the core when scraped rather
than mirrored on every change, so they can never drift from what the balancer believes.
Each sidecar has its own registry (tests run several in one process). A host that leaves the
list takes its series with it, so pod-IP churn does not grow memory or scrapes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping

from gremlinlb.sidecar.tallies import CounterTally, Folder, HistogramTally
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from gremlinlb.core import (
    Balancer,
    Endpoint,
    EventKind,
    HostEvent,
    HostState,
    Outcome,
    UnknownEndpointError,
)
from gremlinlb.core.instancestatus import STATUS_PROBE

#: Why a request is tried again: the outcomes that allow it (core.outcomes.may_retry) and
#: Neptune's two rules (sidecar/neptune_retry.py).
NEPTUNE_CONFLICT = "neptune_conflict"
NEPTUNE_READ_ONLY = "neptune_read_only"
RETRY_REASONS = (
    Outcome.NOT_SENT.value,
    Outcome.OVERLOADED.value,
    Outcome.CONNECTION_LOST.value,
    NEPTUNE_CONFLICT,
    NEPTUNE_READ_ONLY,
)

_EJECTION_REASONS = ("consecutive_failures", "stuck", "slow")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# How late the event loop's own timer fires: above a second, every request waits that long.
LOOP_LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# From a fast local read (sub-millisecond) to the default 30 s request timeout.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class SidecarMetrics:
    def __init__(
        self,
        balancer: Balancer,
        backend_connections: Callable[[], dict[Endpoint, int]],
    ) -> None:
        self.registry = CollectorRegistry()
        self._folder = Folder()  # first: collecting the registry folds the tallies first
        self.registry.register(self._folder)
        self.requests = Counter(
            "gremlinlb_sidecar_backend_requests",
            "Attempts sent to a backend, by host and how they ended",
            ["host", "outcome"],
            registry=self.registry,
        )
        self.retries = Counter(
            "gremlinlb_sidecar_retries",
            "Requests tried again on another host, by the outcome that caused it",
            ["reason"],
            registry=self.registry,
        )
        for reason in RETRY_REASONS:  # 0 from the start: a dashboard shows 0, not "no data"
            self.retries.labels(reason)
        self.latency = Histogram(
            "gremlinlb_sidecar_request_duration_seconds",
            "From a client request's arrival to its final response frame, retries included",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.attempt_latency = Histogram(
            "gremlinlb_sidecar_backend_attempt_duration_seconds",
            "One attempt on a backend, from sending it to its end, by host (attempts that were "
            "sent; sessions not counted): the per-backend latency percentiles",
            ["host"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.redispatched = Counter(
            "gremlinlb_sidecar_redispatched",
            "Reads moved to another host at once because theirs was ejected or went down",
            registry=self.registry,
        )
        self.local_errors = Counter(
            "gremlinlb_sidecar_local_errors",
            "Final error responses written by the sidecar itself, by status code",
            ["code"],
            registry=self.registry,
        )
        self.malformed = Counter(
            "gremlinlb_sidecar_malformed_frames",
            "Client frames that could not be routed",
            registry=self.registry,
        )
        self.client_connections = Gauge(
            "gremlinlb_sidecar_client_connections",
            "Open client WebSocket connections",
            registry=self.registry,
        )
        self.withdrawn = Counter(
            "gremlinlb_sidecar_requests_withdrawn",
            "Requests never sent (or not re-sent) because their client left first: taken out "
            "of the buffer or of a wait for a connection",
            registry=self.registry,
        )
        self.clients_cut_off = Counter(
            "gremlinlb_sidecar_clients_cut_off",
            "Client connections closed because they did not read their answers",
            registry=self.registry,
        )
        self.clients_refused = Counter(
            "gremlinlb_sidecar_clients_refused",
            "Client connections closed (1013) because their unfinished frames would have taken "
            "the sidecar past its memory budget",
            registry=self.registry,
        )
        self.probe_failures = Counter(
            "gremlinlb_sidecar_probe_failures",
            "Failed probes, by the check that failed them: traversal (the probe's traversal, "
            "its connection or ping) or status (health.status_probe's GET /status)",
            ["check"],
            registry=self.registry,
        )
        self.held_bytes = Gauge(
            "gremlinlb_sidecar_held_bytes",
            "Bytes held for clients: answers not yet written and requests in flight",
            registry=self.registry,
        )
        self.paused_clients = Gauge(
            "gremlinlb_sidecar_paused_clients",
            "Client connections not read until they read their answers (backpressure)",
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "gremlinlb_sidecar_event_loop_lag_seconds",
            "How late a periodic timer of the event loop fired (the loop was busy)",
            buckets=LOOP_LAG_BUCKETS,
            registry=self.registry,
        )
        self._balancer = balancer
        self.registry.register(_CoreCollector(balancer, backend_connections))
        # Per request: plain ints, folded into the series above on collection.
        self._request_tally = CounterTally(lambda key: self.requests.labels(key[0], key[1].value))
        self._attempt_tally = HistogramTally(self.attempt_latency.labels, LATENCY_BUCKETS)
        self._latency_tally = HistogramTally(lambda _: self.latency, LATENCY_BUCKETS)
        self._folder.tallies += [self._request_tally, self._attempt_tally, self._latency_tally]
        self._known: set[str] = set()  # hosts whose series exist (the rest left the list)

    def observe_latency(self, seconds: float) -> None:
        """A client request's latency, arrival to final frame (request_duration_seconds)."""
        self._latency_tally.observe(None, seconds)

    def count_request(
        self, endpoint: Endpoint, outcome: Outcome, seconds: float | None = None
    ) -> None:
        """One attempt on `endpoint` ended with `outcome`, `seconds` after it was sent (None:
        not a latency sample).

        Not counted for a host that left the list: its series were dropped when it left (see
        `on_host_event`), and an attempt to it that ends later (an orphan, a drained host's
        last request) must not bring them back for good."""
        address = endpoint.address
        if address not in self._known:
            try:  # the first of its kind: a rare path
                self._balancer.state_of(endpoint)
            except UnknownEndpointError:
                return
            self._known.add(address)
        self._request_tally.add((address, outcome))
        if seconds is not None:
            self._attempt_tally.observe(address, seconds)

    def probe_failed(self, error: str) -> None:
        """Count a failed probe under the check its error names (core.instancestatus)."""
        check = "status" if error.startswith(STATUS_PROBE) else "traversal"
        self.probe_failures.labels(check).inc()

    def on_host_event(self, event: HostEvent) -> None:
        """Subscribe this to the core: a removed host's series are dropped."""
        if event.kind is not EventKind.REMOVED:
            return
        address = event.endpoint.address
        self._known.discard(address)
        self._attempt_tally.forget(address)
        with contextlib.suppress(KeyError):
            self.attempt_latency.remove(address)
        for outcome in Outcome:
            self._request_tally.forget((address, outcome))
            with contextlib.suppress(KeyError):
                self.requests.remove(address, outcome.value)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _CoreCollector(Collector):
    def __init__(
        self, balancer: Balancer, backend_connections: Callable[[], dict[Endpoint, int]]
    ) -> None:
        self._balancer = balancer
        self._connections = backend_connections

    def collect(self) -> Iterator[Metric]:
        hosts = self._balancer.hosts()
        in_flight = GaugeMetricFamily(
            "gremlinlb_sidecar_in_flight", "Requests in flight per host", labels=["host"]
        )
        states = GaugeMetricFamily(
            "gremlinlb_sidecar_host_state",
            "1 for the state each host is in (healthy, down, draining, ejected, joining)",
            labels=["host", "state"],
        )
        ewma = GaugeMetricFamily(
            "gremlinlb_sidecar_host_ewma_latency_seconds",
            "Peak-EWMA latency per host, as latency-aware picking sees it (no series before a "
            "host's first answer)",
            labels=["host"],
        )
        for host in hosts:
            address = host.endpoint.address
            in_flight.add_metric([address], host.in_flight)
            for state in HostState:
                states.add_metric([address, state.value], 1.0 if host.state is state else 0.0)
            if host.ewma_latency is not None:
                ewma.add_metric([address], host.ewma_latency)
        yield in_flight
        yield states
        yield ewma
        stats = self._balancer.stats()
        ejections = CounterMetricFamily(
            "gremlinlb_sidecar_ejections",
            "Hosts ejected as outliers, by reason (consecutive_failures, stuck, slow)",
            labels=["reason"],
        )
        for reason in _EJECTION_REASONS:
            ejections.add_metric([reason], stats.ejections.get(reason, 0))
        for reason, count in sorted(stats.ejections.items()):
            if reason not in _EJECTION_REASONS:
                ejections.add_metric([reason], count)
        yield ejections
        yield CounterMetricFamily(
            "gremlinlb_sidecar_hedges_sent",
            "Reads sent to a second host because the first gave no answer in the hedge delay",
            value=stats.hedges_sent,
        )
        yield CounterMetricFamily(
            "gremlinlb_sidecar_hedges_won",
            "Hedged reads whose second attempt answered first",
            value=stats.hedges_won,
        )
        yield CounterMetricFamily(
            "gremlinlb_sidecar_extra_budget_exhausted",
            "Hedges and costly retries refused because the extra-request budget was spent",
            value=stats.budget_exhausted,
        )
        by_role = CounterMetricFamily(
            "gremlinlb_sidecar_backend_attempts_by_role",
            "Attempts sent to backends, by the role of the host (writer, reader, any)",
            labels=["role"],
        )
        for role, count in sorted(stats.attempts_by_role.items()):
            by_role.add_metric([role], count)
        yield by_role
        zones = CounterMetricFamily(
            "gremlinlb_sidecar_backend_attempts_by_zone",
            "Attempts sent to a host in this sidecar's zone (same) or another (cross); "
            "counted when --zone is set and the host has a zone",
            labels=["locality"],
        )
        zones.add_metric(["same"], stats.same_zone)
        zones.add_metric(["cross"], stats.cross_zone)
        yield zones
        planned = GaugeMetricFamily(
            "gremlinlb_sidecar_zone_planned_local_share",
            "Share of requests zone-aware routing keeps in this sidecar's zone, per candidate "
            "kind (all, writers, readers); below 1 the zone spills the rest (too few healthy "
            "hosts, or more clients than its share of the hosts)",
            labels=["kind"],
        )
        for kind, plan in self._balancer.zone_plans().items():
            planned.add_metric([kind], plan.local)
        yield planned
        clients = GaugeMetricFamily(
            "gremlinlb_sidecar_zone_clients",
            "Clients per zone as last pushed (client_zones), which the spill is computed from",
            labels=["zone"],
        )
        for zone, count in (self._balancer.client_zones or {}).items():
            clients.add_metric([zone], count)
        yield clients
        yield GaugeMetricFamily(
            "gremlinlb_sidecar_buffer_depth",
            "Requests waiting for a healthy host",
            value=self._balancer.buffered,
        )
        yield GaugeMetricFamily(
            "gremlinlb_sidecar_buffer_bytes",
            "Bytes of requests waiting for a healthy host",
            value=self._balancer.buffered_bytes,
        )
        connections = GaugeMetricFamily(
            "gremlinlb_sidecar_backend_connections",
            "Open WebSocket connections per backend host",
            labels=["host"],
        )
        for endpoint, count in sorted(self._connections().items(), key=lambda e: e[0].address):
            connections.add_metric([endpoint.address], count)
        yield connections


class NeptuneReadsCollector(Collector):
    """The Neptune management API's reads by result (ok, throttled, failed): a throttled or
    failing API is seen before the host list goes stale."""

    def __init__(self, reads: Callable[[], Mapping[str, int]]) -> None:
        self._reads = reads

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "gremlinlb_sidecar_neptune_reads",
            "Reads of the Neptune cluster's topology, by result (ok, throttled, failed)",
            labels=["result"],
        )
        counts = self._reads()
        for result in ("ok", "throttled", "failed"):
            family.add_metric([result], counts.get(result, 0))
        yield family
