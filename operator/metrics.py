"""Prometheus metrics of the operator: push latency as pushes end, the rest read at scrape.

How many sidecars hold an old host list is read from the push groups when scraped, so the gauge
can never disagree with the GremlinCluster status the same groups feed. A cluster is labelled
``cluster_namespace`` and ``cluster``: a scrape's own ``namespace`` label (the operator's pod)
would otherwise rename the first to ``exported_namespace``. Served on its own port
(``--metrics-listen``), beside kopf's liveness endpoint, by a small aiohttp server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from aiohttp import web
from gremlinlb.operator.push import PushGroup, SendOutcome
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: From a loopback PUT (a millisecond) to the default 5 s push timeout and past it.
PUSH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class FollowedCluster(Protocol):
    """What the collector reads of a cluster's controller."""

    @property
    def key(self) -> tuple[str, str]: ...

    @property
    def group(self) -> PushGroup: ...


class OperatorMetrics:
    def __init__(
        self,
        clusters: Callable[[], Iterable[FollowedCluster]],
        leading: Callable[[], bool],
    ) -> None:
        self.registry = CollectorRegistry()
        self.push_duration = Histogram(
            "gremlinlb_operator_push_duration_seconds",
            "One PUT of a host list to a sidecar, from the request to its answer (or failure), "
            "by outcome (ok, error)",
            ["outcome"],
            buckets=PUSH_BUCKETS,
            registry=self.registry,
        )
        self._ok = self.push_duration.labels("ok")
        self._error = self.push_duration.labels("error")
        self.registry.register(_ClusterCollector(clusters, leading))

    def observe_push(self, seconds: float, outcome: SendOutcome) -> None:
        (self._ok if outcome.ok else self._error).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def serve(self, host: str, port: int) -> web.AppRunner:
        """``GET /metrics`` on ``host:port``; the caller cleans the runner up."""
        app = web.Application()
        app.router.add_get("/metrics", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        return runner

    async def _handle(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.render(), headers={"Content-Type": CONTENT_TYPE})


class _ClusterCollector(Collector):
    def __init__(
        self, clusters: Callable[[], Iterable[FollowedCluster]], leading: Callable[[], bool]
    ) -> None:
        self._clusters = clusters
        self._leading = leading

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "gremlinlb_operator_leader",
            "1 on the replica that holds the Lease and follows the GremlinClusters, 0 on a standby",
            value=1.0 if self._leading() else 0.0,
        )
        sidecars = GaugeMetricFamily(
            "gremlinlb_operator_sidecars",
            "Sidecars the operator pushes host lists to, per GremlinCluster",
            labels=["cluster_namespace", "cluster"],
        )
        out_of_sync = GaugeMetricFamily(
            "gremlinlb_operator_sidecars_out_of_sync",
            "Sidecars that do not hold the cluster's latest host list (a push failed, or is "
            "under way), per GremlinCluster",
            labels=["cluster_namespace", "cluster"],
        )
        for cluster in sorted(self._clusters(), key=lambda c: c.key):
            statuses = cluster.group.statuses()
            labels = list(cluster.key)
            sidecars.add_metric(labels, len(statuses))
            out_of_sync.add_metric(labels, sum(1 for s in statuses if not s.in_sync))
        yield sidecars
        yield out_of_sync
