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

Selectors, like the Java peer's EndpointsSelector: `roles` (writer, reader), `zones` (AZs) and
`tags` (instance tags, all of them must match; read with ListTagsForResource, cached per
instance ARN and re-read once per refresh interval) keep only the instances they name.

Throttling (Throttling, ThrottlingException, RequestLimitExceeded, TooManyRequestsException,
after botocore's own "standard" retries) backs the reads off: the next read comes after a delay
drawn uniformly between the interval and min(THROTTLED_CAP, interval * 2^throttles in a row)
("full jitter"); the first good read resets it. Reads are counted by result (`reads`).

`addresses` maps an instance identifier to the host:port actually connected to, instead of the
instance's endpoint: for tunnels, and for the tests, whose instances (moto's) have names that
resolve nowhere and are served by local Gremlin Servers. A mapped instance's endpoint carries
`sigv4_host=<its own endpoint>`: with SigV4 on, its upgrade is still signed (and sent with
Host) for the instance's own name, as Neptune requires.

`refresh_now` reads at once (a failover is suspected), at most once per `EAGER_SPACING`
seconds and never while a throttling backoff runs; `watch` asks for it while every host of a
role (all writers, or all readers) is out of service, so a dead writer is replaced as soon as
the API names the new one instead of at the next interval.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import urlencode

from gremlinlb.core import (
    Balancer,
    Endpoint,
    HostEvent,
    HostState,
    HostStatus,
    Role,
    parse_endpoint,
)

log = logging.getLogger(__name__)

AVAILABLE = "available"
JITTER = 0.2
#: The longest wait between reads while the API throttles them (seconds).
THROTTLED_CAP = 300.0
#: Eager reads (`refresh_now`) come at most this often, however many hosts fail (seconds).
EAGER_SPACING = 5.0
#: The error codes AWS answers a throttled call with (query and JSON protocols).
THROTTLING = frozenset(
    {"Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException"}
)
#: botocore's own retries first ("standard": exponential, jittered, throttling included).
_RETRIES = {"mode": "standard", "total_max_attempts": 3}


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
    #: Selectors (empty: any): the roles (writer, reader) and AZs kept, and the instance tags
    #: an instance must carry, every one of them.
    roles: frozenset[str] = frozenset()
    zones: frozenset[str] = frozenset()
    tags: Mapping[str, str] = field(default_factory=dict)


def hosts_of(
    cluster: Mapping[str, Any],
    instances: Sequence[Mapping[str, Any]],
    addresses: Mapping[str, str],
    scheme: str = "ws",
    *,
    roles: Collection[str] = (),
    zones: Collection[str] = (),
    tags: Mapping[str, str] | None = None,
    tags_of: Mapping[str, Mapping[str, str]] | None = None,
) -> tuple[Endpoint, ...]:
    """The cluster's available instances as endpoints with role and zone, writer first; only
    those of the `roles` and `zones` given (none: any) whose tags (`tags_of`, by instance
    identifier) include every one of `tags`."""
    members = {m["DBInstanceIdentifier"]: m for m in cluster.get("DBClusterMembers", [])}
    found: list[tuple[bool, str, Endpoint]] = []
    for instance in instances:
        name = instance["DBInstanceIdentifier"]
        member = members.get(name)
        if member is None or instance.get("DBInstanceStatus") != AVAILABLE:
            continue
        writer = bool(member.get("IsClusterWriter"))
        role = "writer" if writer else "reader"
        zone = instance.get("AvailabilityZone")
        held = (tags_of or {}).get(name, {})
        if (roles and role not in roles) or (zones and zone not in zones):
            continue
        if any(held.get(key) != value for key, value in (tags or {}).items()):
            continue
        endpoint = instance.get("Endpoint") or {}
        own = f"{endpoint.get('Address')}:{endpoint.get('Port')}"
        query = [("role", role)]
        if zone:
            query.append(("zone", zone))
        if name in addresses:
            query.append(("sigv4_host", own))  # signed for its own name where it is reached
        address = addresses.get(name) or own
        text = f"{scheme}://{address}/gremlin?{urlencode(query, safe=':')}"
        found.append((not writer, name, parse_endpoint(text)))
    return tuple(endpoint for _, _, endpoint in sorted(found, key=lambda f: (f[0], f[1])))


class TagCache:
    """Instance tags by ARN, each re-read once it is older than `max_age` seconds (the
    refresh interval): eager reads after a failure reuse them instead of calling
    ListTagsForResource once per instance again. Instances no longer listed are forgotten."""

    def __init__(self, max_age: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age = max_age
        self._clock = clock
        self._tags: dict[str, tuple[float, dict[str, str]]] = {}

    def tags(self, client: Any, arns: Collection[str]) -> dict[str, dict[str, str]]:
        now = self._clock()
        for gone in set(self._tags) - set(arns):
            del self._tags[gone]
        for arn in arns:
            cached = self._tags.get(arn)
            if cached is None or now - cached[0] >= self.max_age:
                listed = client.list_tags_for_resource(ResourceName=arn)["TagList"]
                self._tags[arn] = (now, {t["Key"]: t["Value"] for t in listed})
        return {arn: self._tags[arn][1] for arn in arns}


def describe(source: NeptuneSource, tags: TagCache | None = None) -> tuple[Endpoint, ...]:
    """One read of the cluster (blocking: run it off the event loop). botocore is imported
    here, at the first read: some 9 MiB that a sidecar not following Neptune never loads."""
    import botocore.session
    from botocore.config import Config

    client = botocore.session.Session().create_client(
        "neptune",
        region_name=source.region,
        endpoint_url=source.endpoint_url,
        config=Config(retries=_RETRIES),
    )
    try:
        clusters = client.describe_db_clusters(DBClusterIdentifier=source.cluster)["DBClusters"]
        if not clusters:
            raise LookupError(f"no Neptune cluster {source.cluster!r}")
        filters = [{"Name": "db-cluster-id", "Values": [source.cluster]}]
        instances = client.describe_db_instances(Filters=filters)["DBInstances"]
        tags_of: dict[str, dict[str, str]] = {}
        if source.tags:
            arns = {i["DBInstanceArn"]: i["DBInstanceIdentifier"] for i in instances}
            cache = tags or TagCache(0.0)
            tags_of = {arns[arn]: held for arn, held in cache.tags(client, arns).items()}
    finally:
        client.close()
    return hosts_of(
        clusters[0],
        instances,
        source.addresses,
        source.scheme,
        roles=source.roles,
        zones=source.zones,
        tags=source.tags,
        tags_of=tags_of,
    )


def throttled(error: BaseException) -> bool:
    """Whether the API refused the call for its rate (after botocore's own retries)."""
    from botocore.exceptions import ClientError  # loaded already by the read that failed

    return isinstance(error, ClientError) and error.response["Error"]["Code"] in THROTTLING


def throttled_delay(throttles: int, refresh: float, rng: random.Random | None = None) -> float:
    """The wait before the next read after `throttles` throttled reads in a row: full jitter
    between the interval and min(THROTTLED_CAP, interval * 2^throttles)."""
    ceiling = max(refresh, min(THROTTLED_CAP, refresh * 2.0**throttles))
    return (rng or random).uniform(refresh, ceiling)


def roles_out(hosts: Collection[HostStatus]) -> list[Role]:
    """The roles (writer, reader) that are listed and have no host in service."""
    out = []
    for role in (Role.WRITER, Role.READER):
        listed = [h for h in hosts if h.endpoint.role is role and h.state is not HostState.DRAINING]
        if listed and all(h.state is not HostState.HEALTHY for h in listed):
            out.append(role)
    return out


def _key(hosts: tuple[Endpoint, ...]) -> list[str]:
    return [e.text for e in hosts]


class NeptuneTopology:
    """Follows one cluster and applies each new host list (`apply`, on the event loop)."""

    def __init__(
        self,
        source: NeptuneSource,
        apply: Callable[[tuple[Endpoint, ...]], Any],
        read: Callable[[NeptuneSource], tuple[Endpoint, ...]] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self._apply = apply
        self._read = read or partial(describe, tags=TagCache(source.refresh))
        self._clock = clock
        self.last: tuple[Endpoint, ...] | None = None  # the last good list
        self.failures = 0  # reads that failed in a row
        self.throttles = 0  # reads throttled in a row
        self.reads: Counter[str] = Counter()  # by result: ok, throttled, failed
        self.refreshed = asyncio.Event()  # set after every read, good or not (tests wait on it)
        self._now: asyncio.Future[bool] | None = None  # the read `refresh_now` callers share
        self._not_before = -float("inf")  # no read before (clock): eager spacing, backoff
        self._chase: asyncio.Task[None] | None = None

    async def refresh_now(self) -> bool:
        """Read soon (a failover is suspected), sharing a read already asked for: a burst of
        refused writes costs one API call, not one each. Never sooner than EAGER_SPACING after
        the last read, nor while the API's throttling is waited out."""
        if self._now is None or self._now.done():
            self._now = asyncio.ensure_future(self._eager())
        return await asyncio.shield(self._now)

    async def _eager(self) -> bool:
        wait = self._not_before - self._clock()
        if wait > 0:
            await asyncio.sleep(wait)
        return await self.refresh()

    async def refresh(self) -> bool:
        """Read once; apply the list if it changed. False when the read failed (kept)."""
        self._not_before = self._clock() + EAGER_SPACING
        try:
            hosts = await asyncio.to_thread(self._read, self.source)
        except Exception as error:
            self.failures += 1
            if throttled(error):
                self.throttles += 1
                self.reads["throttled"] += 1
                delay = throttled_delay(self.throttles, self.source.refresh)
                self._not_before = self._clock() + delay
            else:
                self.reads["failed"] += 1
            log.warning(
                "cannot read Neptune cluster %s (%s); keeping its last host list",
                self.source.cluster,
                error,
            )
            return False
        finally:
            self.refreshed.set()
        self.failures = self.throttles = 0
        self.reads["ok"] += 1
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

    def next_delay(self) -> float:
        """The wait before the next periodic read: the interval, jittered, or the throttling
        backoff's (set by the last read)."""
        if self.throttles:
            return max(0.0, self._not_before - self._clock())
        return self.source.refresh * (1 + random.uniform(-JITTER, JITTER))

    def watch(self, balancer: Balancer, loop: asyncio.AbstractEventLoop) -> None:
        """Read at once whenever a host goes out of service and that leaves a role with none in
        service, and again (spaced) until one is back: the new writer is named by the API
        some time after the old one died. Host events may come from any thread."""

        def on_event(event: HostEvent) -> None:
            if event.state in (HostState.DOWN, HostState.EJECTED) and not loop.is_closed():
                loop.call_soon_threadsafe(self._start_chase, balancer)

        balancer.subscribe(on_event)

    def _start_chase(self, balancer: Balancer) -> None:
        if self._chase is None or self._chase.done():
            self._chase = asyncio.ensure_future(self._chase_roles(balancer))

    async def _chase_roles(self, balancer: Balancer) -> None:
        while not balancer.closed and (out := roles_out(balancer.hosts())):
            log.info(
                "Neptune cluster %s: no %s in service; reading the cluster now",
                self.source.cluster,
                " and no ".join(r.value for r in out),
            )
            await self.refresh_now()

    async def run(self, *, read_first: bool = True) -> None:
        """Read on the interval (first at once, unless the caller has just read: `last`)."""
        try:
            if not read_first:
                await asyncio.sleep(self.next_delay())
            while True:
                await self.refresh()
                await asyncio.sleep(self.next_delay())
        finally:
            for task in (self._chase, self._now):
                if task is not None:
                    task.cancel()
