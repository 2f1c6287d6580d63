"""The host list of a Neptune cluster, from the Neptune management API (for every adapter).

`--neptune-cluster ID --neptune-region R`: every `refresh` seconds (+-20% jitter, so a fleet of
sidecars does not call the API in step) the sidecar reads the cluster's members
(DescribeDBClusters: which instance is the writer) and its instances (DescribeDBInstances:
endpoint, availability zone, status) with botocore's `neptune` client and its credential chain,
and replaces its host list with them: the writer as `role=writer`, the others as
`role=reader`, each with `zone=<AZ>`, so the roles and zones routing does the rest. An instance
whose status is not `available` gets no traffic (it is left out; a host removed drains). When
the API fails, the last good list stays and the next refresh tries again. The list applied is
also what GET /v1/hosts shows, with a generation one higher each time it changes.

`addresses` maps an instance identifier to the host:port actually connected to, instead of the
instance's endpoint: for tunnels, and for the tests, whose instances (moto's) have names that
resolve nowhere and are served by local Gremlin Servers. With SigV4 on, a mapped instance's
upgrade is still signed (and sent with Host) for the instance's own endpoint name, as Neptune
requires (`gremlinlb.sigv4.sign_as`).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import botocore.session

from gremlinlb import sigv4
from gremlinlb.core import Endpoint, parse_endpoint

log = logging.getLogger(__name__)

AVAILABLE = "available"
JITTER = 0.2


@dataclass(frozen=True)
class NeptuneSource:
    """Which cluster to follow and how (sidecar flags `--neptune-*`)."""

    cluster: str
    region: str
    #: The management API's URL (tests: moto on loopback); None: AWS's regional endpoint.
    endpoint_url: str | None = None
    refresh: float = 60.0  # seconds between reads (the Java peer's default range)
    addresses: Mapping[str, str] = field(default_factory=dict)
    #: Neptune serves Gremlin over TLS only (wss); ws for local stand-ins (tests).
    scheme: str = "wss"


def hosts_of(
    cluster: Mapping[str, Any],
    instances: list[Mapping[str, Any]],
    addresses: Mapping[str, str],
    scheme: str = "ws",
) -> tuple[Endpoint, ...]:
    """The cluster's available instances as endpoints with role and zone, writer first."""
    members = {m["DBInstanceIdentifier"]: m for m in cluster.get("DBClusterMembers", [])}
    found: list[tuple[bool, str, Endpoint]] = []
    for instance in instances:
        name = instance["DBInstanceIdentifier"]
        member = members.get(name)
        if member is None or instance.get("DBInstanceStatus") != AVAILABLE:
            continue
        endpoint = instance.get("Endpoint") or {}
        address = addresses.get(name) or f"{endpoint.get('Address')}:{endpoint.get('Port')}"
        writer = bool(member.get("IsClusterWriter"))
        query = f"role={'writer' if writer else 'reader'}"
        if instance.get("AvailabilityZone"):
            query += f"&zone={instance['AvailabilityZone']}"
        found.append((not writer, name, parse_endpoint(f"{scheme}://{address}/gremlin?{query}")))
    return tuple(endpoint for _, _, endpoint in sorted(found, key=lambda f: (f[0], f[1])))


def describe(source: NeptuneSource) -> tuple[Endpoint, ...]:
    """One read of the cluster (blocking: run it off the event loop)."""
    client = botocore.session.Session().create_client(
        "neptune", region_name=source.region, endpoint_url=source.endpoint_url
    )
    try:
        clusters = client.describe_db_clusters(DBClusterIdentifier=source.cluster)["DBClusters"]
        if not clusters:
            raise LookupError(f"no Neptune cluster {source.cluster!r}")
        filters = [{"Name": "db-cluster-id", "Values": [source.cluster]}]
        instances = client.describe_db_instances(Filters=filters)["DBInstances"]
    finally:
        client.close()
    sigv4.sign_as(signed_names(instances, source.addresses))
    return hosts_of(clusters[0], instances, source.addresses, source.scheme)


def signed_names(
    instances: list[Mapping[str, Any]], addresses: Mapping[str, str]
) -> dict[str, str]:
    """Mapped address -> the instance's own endpoint: what SigV4 signs for a mapped instance."""
    names = {}
    for instance in instances:
        mapped, endpoint = addresses.get(instance["DBInstanceIdentifier"]), instance.get("Endpoint")
        if mapped and endpoint:
            names[mapped] = f"{endpoint['Address']}:{endpoint['Port']}"
    return names


def _key(hosts: tuple[Endpoint, ...]) -> list[tuple[str, str, str | None]]:
    return [(e.url, e.role.value, e.zone) for e in hosts]


class NeptuneTopology:
    """Follows one cluster and applies each new host list (`apply`, on the event loop)."""

    def __init__(
        self,
        source: NeptuneSource,
        apply: Callable[[tuple[Endpoint, ...]], Any],
        read: Callable[[NeptuneSource], tuple[Endpoint, ...]] = describe,
    ) -> None:
        self.source = source
        self._apply = apply
        self._read = read
        self.last: tuple[Endpoint, ...] | None = None  # the last good list
        self.failures = 0  # reads that failed in a row
        self.refreshed = asyncio.Event()  # set after every read, good or not (tests wait on it)
        self._now: asyncio.Future[bool] | None = None  # the read `refresh_now` callers share

    async def refresh_now(self) -> bool:
        """Read at once (a failover is suspected), sharing a read already asked for: a burst of
        refused writes costs one API call, not one each."""
        if self._now is None or self._now.done():
            self._now = asyncio.ensure_future(self.refresh())
        return await asyncio.shield(self._now)

    async def refresh(self) -> bool:
        """Read once; apply the list if it changed. False when the read failed (kept)."""
        try:
            hosts = await asyncio.to_thread(self._read, self.source)
        except Exception as error:
            self.failures += 1
            log.warning(
                "cannot read Neptune cluster %s (%s); keeping its last host list",
                self.source.cluster,
                error,
            )
            return False
        finally:
            self.refreshed.set()
        self.failures = 0
        if self.last is None or _key(hosts) != _key(self.last):
            log.info(
                "Neptune cluster %s: %s",
                self.source.cluster,
                ", ".join(f"{e.address} ({e.role.value}, {e.zone})" for e in hosts) or "none",
            )
            result = self._apply(hosts)
            if asyncio.iscoroutine(result):
                await result
        self.last = hosts
        return True

    async def run(self) -> None:
        while True:
            await self.refresh()
            spread = 1 + random.uniform(-JITTER, JITTER)
            await asyncio.sleep(self.source.refresh * spread)
