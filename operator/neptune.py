"""A GremlinCluster with spec.neptune: its host list follows a Neptune cluster.

Instead of watching a Service's EndpointSlices, the cluster's controller runs one
:class:`GremlinClusterNeptune`: :class:`gremlinlb.neptune.NeptuneTopology` reads the cluster (on
its interval with jitter, backing off as it does, keeping the last good list when the API fails)
with botocore's credential chain (IRSA on EKS), and each list it applies becomes the cluster's
endpoints, which the controller pushes to every sidecar as it pushes a Service's. The status
part (writer, readers, last read, last error) is built here, without I/O.

A pushed sidecar cannot read the cluster itself, so it reports what suspects a failover in its
`GET /readyz/backends` answer, which the operator reads every health interval: writes refused
by a reader (`read_only_violations`, held while it waits for a new list) and roles with no host
in service (`roles_out`). Either makes the follower read the cluster at once
(`NeptuneTopology.refresh_now`: one read shared by every sidecar asking, spaced EAGER_SPACING
apart), so the new writer is pushed within about a health interval, not refreshSeconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from gremlinlb.operator.discovery import DiscoveredEndpoint, EndpointState
from gremlinlb.operator.push import BackendHealth
from gremlinlb.operator.status import now_text

from gremlinlb.core import Endpoint, Role
from gremlinlb.neptune import NeptuneSource, NeptuneTopology, TagCache, describe

Read = Callable[[NeptuneSource, TagCache], tuple[Endpoint, ...]]

log = logging.getLogger(__name__)


def refused_since(previous: BackendHealth | None, health: BackendHealth) -> int:
    """Writes refused by a reader (ReadOnlyViolationException) that a sidecar reports since its
    previous answer."""
    seen = 0 if previous is None else previous.read_only_violations
    return max(0, health.read_only_violations - seen)


def suspicion(previous: BackendHealth | None, health: BackendHealth) -> str | None:
    """Why a sidecar's health answer asks for a read at once (None: it does not): writes
    refused by a reader since its previous answer, or a role with no host in service."""
    reasons = []
    if refused_since(previous, health):
        reasons.append(f"writes refused by a reader: {health.read_only_violations}")
    if health.roles_out:
        reasons.append(f"no {' and no '.join(health.roles_out)} in service")
    return "; ".join(reasons) or None


def discovered(hosts: tuple[Endpoint, ...]) -> list[DiscoveredEndpoint]:
    """The instances as the status lists endpoints: live (only available ones are listed),
    with their role and zone."""
    return [
        DiscoveredEndpoint(e.host, e.port, EndpointState.LIVE, zone=e.zone, role=e.role.value)
        for e in hosts
    ]


def topology_status(
    source: NeptuneSource,
    hosts: tuple[Endpoint, ...] | None,
    last_read: str | None,
    error: str | None,
) -> dict[str, Any]:
    """status.neptune; None values delete their key (the status is merge-patched)."""

    def instance(endpoint: Endpoint) -> dict[str, Any]:
        return {"address": endpoint.address, "zone": endpoint.zone}

    found = hosts or ()
    writer = next((e for e in found if e.role is Role.WRITER), None)
    return {
        "cluster": source.cluster,
        "region": source.region,
        "writer": None if writer is None else instance(writer),
        "readers": [instance(e) for e in found if e.role is not Role.WRITER],
        "lastReadTime": last_read,
        "lastError": error,
    }


class GremlinClusterNeptune:
    """One GremlinCluster's Neptune cluster at run time, on the operator's loop; ``changed``
    after every read (the in-process client's one: `gremlinlb.client.neptune.NeptuneThread`)."""

    def __init__(self, source: NeptuneSource, changed: Callable[[], None], read: Read = describe):
        self.source = source
        self._changed = changed
        self._read = read
        #: The last good list (None: no read has succeeded yet).
        self.hosts: tuple[Endpoint, ...] | None = None
        self.last_read: str | None = None
        self.error: str | None = None
        self._tags = TagCache(source.refresh)  # instances' tags, for a tags selector
        self.topology = NeptuneTopology(source, self._apply, self._read_once)
        self._eager: asyncio.Future[bool] | None = None  # a read asked for by a sidecar

    def _read_once(self, source: NeptuneSource) -> tuple[Endpoint, ...]:
        """One read (on a worker thread), remembering when it worked or why it did not."""
        try:
            hosts = self._read(source, self._tags)
        except Exception as error:
            self.error = f"cannot read Neptune cluster {source.cluster}: {error}"
            raise
        self.error = None
        self.last_read = now_text()
        return hosts

    def _apply(self, hosts: tuple[Endpoint, ...]) -> None:
        self.hosts = hosts
        self._changed()

    def found(self) -> tuple[list[DiscoveredEndpoint], tuple[str, ...]] | None:
        """The endpoints and the host list to push (None until a read succeeded)."""
        if self.hosts is None:
            return None
        return discovered(self.hosts), tuple(e.text for e in self.hosts)

    def status(self) -> dict[str, Any]:
        return topology_status(self.source, self.hosts, self.last_read, self.error)

    def sidecar_health(
        self, key: str, previous: BackendHealth | None, health: BackendHealth
    ) -> None:
        """A sidecar's health answer: read the cluster at once if it suspects a failover (a
        read already on its way serves it)."""
        why = suspicion(previous, health)
        if why is None:
            return
        reading = self._eager is not None and not self._eager.done()
        if reading and not refused_since(previous, health):
            return  # a role still out, and a read on its way: nothing new
        log.info(
            "Neptune cluster %s: sidecar %s suspects a failover (%s); %s",
            self.source.cluster,
            key,
            why,
            "a read is on its way" if reading else "reading the cluster now",
        )
        if not reading:
            self._eager = asyncio.ensure_future(self.topology.refresh_now())

    async def run(self) -> None:
        """Follow the cluster until cancelled (the CR deleted, or changed)."""
        notify = asyncio.create_task(self._notify())
        try:
            await self.topology.run()
        finally:
            notify.cancel()
            if self._eager is not None:
                self._eager.cancel()

    async def _notify(self) -> None:
        while True:
            await self.topology.refreshed.wait()
            self.topology.refreshed.clear()
            self._changed()
