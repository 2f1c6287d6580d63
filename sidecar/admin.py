"""The admin API on its own port: host list, health endpoints, Prometheus metrics.

`PUT /v1/hosts` replaces the whole host list (what an operator or a script pushes); removed
hosts drain through the core (in-flight requests finish, new ones go elsewhere). With a token
configured the PUT needs `Authorization: Bearer <token>`, compared in constant time (the token
file is re-read when it changes); reads stay open so probes and scrapers need no secret. A list
naming hosts the sidecar may not use (see :class:`~gremlinlb.sidecar.trust.HostPolicy`) is
refused with 403. A list naming the sidecar itself, in any spelling of its addresses (names on
its own ports are looked up), is refused with 400. Every request must name the sidecar in its
``Host`` header (:mod:`~gremlinlb.sidecar.hostcheck`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import web
from gremlinlb.sidecar.addresses import address_of, is_loopback_name, resolve
from gremlinlb.sidecar.failover import PushedTopology
from gremlinlb.sidecar.hostcheck import HostCheck, arrived_address
from gremlinlb.sidecar.hostlist import (
    BadUpdateError,
    HostList,
    HostRules,
    own_port_error,
    parse_body,
    parse_update,
    save_state,
)
from gremlinlb.sidecar.metrics import CONTENT_TYPE, SidecarMetrics
from gremlinlb.sidecar.trust import HostPolicy

from gremlinlb.core import Balancer, Endpoint, HostState, HostStatus
from gremlinlb.core.bearer import bearer_matches
from gremlinlb.neptune import roles_out
from gremlinlb.schema import to_document

log = logging.getLogger(__name__)


class AdminApi:
    def __init__(
        self,
        balancer: Balancer,
        metrics: SidecarMetrics,
        initial: HostList,
        *,
        token: str | Callable[[], str] | None = None,
        state_dir: Path | None = None,
        accepting: Callable[[], bool] = lambda: True,
        host_policy: HostPolicy | None = None,
        rules: Callable[[], HostRules] = HostRules,
        host_check: HostCheck | None = None,
    ) -> None:
        self._balancer = balancer
        self._metrics = metrics
        self._token = (lambda: token) if isinstance(token, str) else token
        self._host_policy = host_policy or HostPolicy()
        self._state_dir = state_dir
        self._accepting = accepting
        self._rules = rules
        self._host_check = host_check or HostCheck()
        self._lock = asyncio.Lock()
        self.current = initial
        #: Told each list applied; reports writes waiting for one (a suspected failover).
        self.pushed = PushedTopology()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._host_check.middleware])
        app.router.add_get("/v1/hosts", self.get_hosts)
        app.router.add_put("/v1/hosts", self.put_hosts)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/readyz/backends", self.backends_ready)
        app.router.add_get("/metrics", self.metrics)
        return app

    # -- hosts ---------------------------------------------------------------------------

    async def get_hosts(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {
                "generation": self.current.generation,
                "hosts": [_host_json(h) for h in self._balancer.hosts()],
                "buffered": self._balancer.buffered,
                "settings": to_document(self._balancer.settings),
                "traversal_sources": self._balancer.sources.snapshot(),
                "client_zones": self._balancer.client_zones,
                "zone_plans": {
                    kind: {"local": plan.local, "spill": dict(plan.spill)}
                    for kind, plan in self._balancer.zone_plans().items()
                },
            }
        )

    async def put_hosts(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _error(
                401,
                "missing or wrong bearer token: send 'Authorization: Bearer <token>' with the "
                "token the sidecar was started with (--token-file)",
                headers={"WWW-Authenticate": 'Bearer realm="gremlinlb-sidecar"'},
            )
        body = await request.read()
        rules = self._rules()
        arrived_at = arrived_address(request)
        if arrived_at is not None:  # the address the pusher dialed is one of this sidecar's
            rules = replace(rules, own_addresses={*rules.own_addresses, arrived_at})
        status, answer = await self.apply(body, rules)
        return web.json_response(answer, status=status)

    def host_rules(self) -> HostRules:
        """What a host list may hold here (a watched list has no arrival address to add)."""
        return self._rules()

    async def apply(self, body: bytes, rules: HostRules) -> tuple[int, dict[str, Any]]:
        """Check and apply one host list body, pushed (PUT /v1/hosts) or watched (watch.py):
        one path, one set of checks. Returns the HTTP status and the answer's JSON."""
        if not self._accepting():
            return 503, {"error": "the sidecar is shutting down; nothing was changed"}
        async with self._lock:
            current = self.current
            try:
                # Reading and checking thousands of hosts runs off the event loop, so a big
                # list never holds up the Gremlin traffic this process carries.
                update = await asyncio.to_thread(_parse, body, current, rules)
                await _refuse_names_of_self(update, rules)
            except BadUpdateError as error:
                return 400, {"error": f"{error}; nothing was changed"}
            refusal = self._host_policy.refusal(update.hosts)
            if refusal is not None:
                return 403, {"error": f"{refusal}; nothing was changed"}
            if update.generation <= current.generation:
                # Compared as text: hosts are equal by address, but a role or zone change is news.
                if update.to_json() == current.to_json():
                    return 200, {"generation": current.generation, "added": [], "removed": []}
                return 409, {
                    "error": f"generation {update.generation} is not newer than the current "
                    f"generation {current.generation}; nothing was changed. Read GET /v1/hosts "
                    "and send a higher generation.",
                    "generation": current.generation,
                }
            if self._state_dir is not None:
                try:
                    await asyncio.to_thread(save_state, self._state_dir, update)
                except OSError as error:
                    return 500, {
                        "error": f"cannot save the host list in {self._state_dir}: {error}; "
                        "nothing was changed"
                    }
            added, removed = await asyncio.to_thread(self._balancer.replace, update.hosts)
            if update.settings != current.settings:
                self._balancer.update_settings(update.settings)
            self._balancer.set_client_zones(update.client_zones)
            self.current = update
            self.pushed.list_applied()
        log.info(
            "host list generation %d: %s (added %s, removed %s)",
            update.generation,
            _listing(update.hosts) or "empty",
            _listing(added) or "none",
            _listing(removed) or "none",
        )
        return 200, {
            "generation": update.generation,
            "added": [e.url for e in added],
            "removed": [e.url for e in removed],
        }

    async def follow(self, hosts: tuple[Endpoint, ...]) -> None:
        """Replace the host list with a topology source's (neptune.py): one generation up,
        the settings and client zones kept, shown by GET /v1/hosts like a pushed list."""
        async with self._lock:
            update = replace(self.current, generation=self.current.generation + 1, hosts=hosts)
            added, removed = await asyncio.to_thread(self._balancer.replace, hosts)
            self.current = update
            self.pushed.list_applied()
        log.info(
            "host list generation %d from the topology source: added %s, removed %s",
            update.generation,
            _listing(added) or "none",
            _listing(removed) or "none",
        )

    def _authorized(self, request: web.Request) -> bool:
        if self._token is None:
            return True
        return bearer_matches(request.headers.get("Authorization", ""), self._token())

    # -- probes and metrics --------------------------------------------------------------

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(self, _request: web.Request) -> web.Response:
        """Ready = this proxy can serve: it listens and holds a host list. Backend health is
        deliberately not part of it: a native sidecar's readiness counts toward the pod's, and a
        Gremlin outage must not take the application's other endpoints out of its Service.
        While no backend is healthy, requests wait in the buffer, then get a clear 596."""
        hosts = self._balancer.hosts()
        accepting = self._accepting()
        ready = accepting and bool(hosts)
        if not accepting:
            reason = "shutting down"
        elif not hosts:
            reason = "no host list yet: push one with PUT /v1/hosts or give --endpoints"
        else:
            reason = "serving"
        return web.json_response(
            {"ready": ready, "reason": reason, "accepting": accepting, "hosts": len(hosts)},
            status=200 if ready else 503,
        )

    async def backends_ready(self, _request: web.Request) -> web.Response:
        """200 while at least one backend is healthy: for dashboards and alerts, not for the
        pod's readiness probe. Also what the operator reads every health interval: a growing
        `read_only_violations` or a role in `roles_out` makes it read a Neptune cluster at once
        (failover.py)."""
        view = self.backends()
        return web.json_response(view, status=200 if view["ready"] else 503)

    def backends(self) -> dict[str, Any]:
        """The sidecar's view of its backends: served by /readyz/backends, and sent to the
        operator with every watch poll (watch.py)."""
        hosts = self._balancer.hosts()
        healthy = [h.endpoint.address for h in hosts if h.state is HostState.HEALTHY]
        return {
            "ready": bool(healthy),
            "generation": self.current.generation,
            "healthy": healthy,
            "hosts": {h.endpoint.address: h.state.value for h in hosts},
            "buffered": self._balancer.buffered,
            "read_only_violations": self.pushed.read_only_violations,
            "roles_out": [role.value for role in roles_out(hosts)],
        }

    async def metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=self._metrics.render(), headers={"Content-Type": CONTENT_TYPE})


def _host_json(host: HostStatus) -> dict[str, Any]:
    return {
        "address": host.endpoint.address,
        "url": host.endpoint.url,
        # The text form PUT /v1/hosts takes back (the url with ?role=&zone= when set).
        "endpoint": host.endpoint.text,
        "role": host.endpoint.role.value,
        "zone": host.endpoint.zone,
        "state": host.state.value,
        "state_since": host.state_since,
        "in_flight": host.in_flight,
        "requests": host.requests,
        "outcomes": {outcome.value: count for outcome, count in host.outcomes.items()},
        "last_error": host.last_error,
        "ewma_latency": host.ewma_latency,
        "ejections": host.ejections,
        "ejected_until": host.ejected_until,
        "deprioritised": host.deprioritised,
    }


def _parse(body: bytes, current: HostList, rules: HostRules) -> HostList:
    return parse_update(parse_body(body), current.settings, rules)


async def _refuse_names_of_self(update: HostList, rules: HostRules) -> None:
    """BadUpdateError when a host name on one of the sidecar's own ports resolves to one of
    its addresses (``localhost.localdomain``, the machine's own name). Only names on its own
    ports are looked up, so a list of IPs (what the operator pushes) costs no lookup."""
    suspects = {
        index: endpoint
        for index, endpoint in enumerate(update.hosts)
        if endpoint.port in rules.own_ports
        and address_of(endpoint.host) is None
        and not is_loopback_name(endpoint.host)
    }
    if not suspects:
        return
    found = await resolve(e.host for e in suspects.values())
    for index, endpoint in suspects.items():
        for address in sorted(found.get(endpoint.host, ()), key=str):
            if rules.is_own(address, endpoint.port):
                raise BadUpdateError(f"hosts[{index}]: {own_port_error(endpoint, address)}")


def _listing(endpoints: Sequence[Endpoint], shown: int = 10) -> str:
    """A log-sized list: the first few addresses and how many more."""
    text = ", ".join(e.address for e in endpoints[:shown])
    more = len(endpoints) - shown
    return f"{text} and {more} more" if more > 0 else text


def _error(
    status: int, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status, headers=headers)
