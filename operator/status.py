"""The GremlinCluster status, computed from what the operator knows (pure, no I/O).

Conditions follow the Kubernetes conventions: ``lastTransitionTime`` changes only when the
condition's status does, and each carries the ``observedGeneration`` it was computed for.

* ``Ready``: at least one live endpoint (reasons ``EndpointsAvailable``, ``NoLiveEndpoints``,
  ``ServiceNotFound``, ``InvalidSpec``, ``Forbidden``, ``NeptuneReadFailed``).
* ``Degraded``: something needs attention (``NeptuneReadFailed``, ``SidecarsWithoutAdminTLS``,
  ``SidecarsWithoutHealthyBackend``,
  ``SidecarsOutOfSync``, ``EndpointsNotLive``, ``BackendsUnhealthy``, ``ServiceNotFound``,
  ``InvalidSpec``, ``Forbidden``; ``AsExpected`` when False).

``sidecars.byZone`` is how many ready client pods run in each zone, what the operator pushes
to the sidecars as ``client_zones``: zone-aware routing spills what a zone with more of the
clients than of the servers cannot carry.

``backends`` is the sidecars' own view of the Gremlin Servers (read from each sidecar's
``/readyz/backends``): an endpoint can be ready to Kubernetes and still be down, ejected or
unreachable for the clients, and that is what an operator on call needs to see.
"""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gremlinlb.operator.discovery import DiscoveredEndpoint, EndpointState
from gremlinlb.operator.push import TargetStatus

from gremlinlb.core import HostState

#: At most this many out-of-sync sidecars are listed by name (the count is always exact).
MAX_LISTED = 20

#: The backend states a sidecar reports, counted per backend.
BACKEND_STATES = tuple(state.value for state in HostState)


@dataclass(frozen=True, slots=True)
class Observed:
    generation: int | None  # metadata.generation of the GremlinCluster
    hosts_generation: int
    hosts: tuple[str, ...]
    endpoints: Sequence[DiscoveredEndpoint]
    sidecars: Sequence[TargetStatus]
    service_found: bool = True
    spec_error: str | None = None
    #: Ready client sidecars per zone, as pushed to the sidecars (``client_zones``).
    client_zones: Mapping[str, int] = field(default_factory=dict)
    #: The operator lacks a permission it needs in the cluster's namespace (what to grant).
    access_error: str | None = None
    #: Client pods that get no push: plain HTTP admin API, and the cluster does not allow it.
    plain_http_refused: Sequence[str] = ()
    #: status.neptune with spec.neptune (its ``lastError``: the latest read failed).
    neptune: Mapping[str, Any] | None = None


def now_text() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    kind: str,
    status: bool,
    reason: str,
    message: str,
    previous: Sequence[Mapping[str, Any]],
    generation: int | None,
    now: str,
) -> dict[str, Any]:
    text = "True" if status else "False"
    before = next((c for c in previous if c.get("type") == kind), None)
    since = (
        str(before["lastTransitionTime"])
        if before and before.get("status") == text and before.get("lastTransitionTime")
        else now
    )
    result: dict[str, Any] = {
        "type": kind,
        "status": text,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
    }
    if generation is not None:
        result["observedGeneration"] = generation
    return result


def build_status(
    observed: Observed, previous_conditions: Sequence[Mapping[str, Any]], now: str
) -> dict[str, Any]:
    endpoints = list(observed.endpoints)
    live = sum(1 for e in endpoints if e.state is EndpointState.LIVE)
    draining = sum(1 for e in endpoints if e.state is EndpointState.DRAINING)
    out_of_sync = [s for s in observed.sidecars if not s.in_sync]
    neptune_error = (observed.neptune or {}).get("lastError")

    if observed.spec_error is not None:
        ready = (False, "InvalidSpec", observed.spec_error)
    elif observed.access_error is not None:
        ready = (False, "Forbidden", observed.access_error)
    elif neptune_error and live == 0:
        ready = (False, "NeptuneReadFailed", neptune_error)
    elif not observed.service_found:
        ready = (False, "ServiceNotFound", "the Service named in spec.service does not exist")
    elif live == 0:
        ready = (False, "NoLiveEndpoints", f"none of {len(endpoints)} endpoints is ready")
    else:
        ready = (True, "EndpointsAvailable", f"{live} of {len(endpoints)} endpoints live")

    view = BackendView.of(observed.sidecars)
    if (
        observed.spec_error is not None
        or observed.access_error is not None
        or not observed.service_found
    ):
        degraded = (True, ready[1], ready[2])
    elif neptune_error:
        degraded = (
            True,
            "NeptuneReadFailed",
            f"{neptune_error}; the sidecars keep the last host list read",
        )
    elif observed.plain_http_refused:
        degraded = (
            True,
            "SidecarsWithoutAdminTLS",
            plain_http_message(observed.plain_http_refused),
        )
    elif view.without_healthy:
        degraded = (
            True,
            "SidecarsWithoutHealthyBackend",
            f"{len(view.without_healthy)} of {view.reporting} sidecars see no healthy backend "
            f"(their requests wait in the buffer, then fail): "
            f"{_names(view.without_healthy)}",
        )
    elif out_of_sync:
        degraded = (
            True,
            "SidecarsOutOfSync",
            f"{len(out_of_sync)} of {len(observed.sidecars)} sidecars do not hold host list "
            f"generation {observed.hosts_generation} yet: {_names(out_of_sync)}",
        )
    elif live < len(endpoints):
        degraded = (
            True,
            "EndpointsNotLive",
            f"{draining} draining and {len(endpoints) - live - draining} out of "
            f"{len(endpoints)} endpoints",
        )
    elif view.not_healthy:
        degraded = (True, "BackendsUnhealthy", view.not_healthy_message())
    else:
        degraded = (
            False,
            "AsExpected",
            "every endpoint is live, every sidecar in sync and seeing its backends healthy",
        )

    generation = observed.generation
    status: dict[str, Any] = {
        "hostsGeneration": observed.hosts_generation,
        "hosts": list(observed.hosts),
        "readyEndpoints": live,
        "totalEndpoints": len(endpoints),
        "endpoints": [
            {
                "address": e.address,
                "state": e.state.value,
                **{k: v for k, v in (("pod", e.pod), ("zone", e.zone), ("role", e.role)) if v},
            }
            for e in endpoints
        ],
        "sidecars": {
            "total": len(observed.sidecars),
            "inSync": len(observed.sidecars) - len(out_of_sync),
            # Sidecars that watch the operator (the rest are pushed to).
            "watching": sum(1 for s in observed.sidecars if s.watching),
            "outOfSync": [
                {
                    "pod": _pod(s),
                    "address": s.url.split("://", 1)[-1],
                    **({"generation": s.acked_generation} if s.acked_generation else {}),
                    "error": s.error or "push in progress",
                }
                for s in out_of_sync[:MAX_LISTED]
            ],
            "plainHttpRefused": list(observed.plain_http_refused[:MAX_LISTED]),
            # A list, not a map: the status is merge-patched, which would keep a zone gone.
            "byZone": [{"zone": z, "ready": n} for z, n in observed.client_zones.items()],
        },
        "backends": view.to_status(),
        "conditions": [
            condition("Ready", *ready, previous_conditions, generation, now),
            condition("Degraded", *degraded, previous_conditions, generation, now),
        ],
    }
    if any(e.role is not None for e in endpoints):
        for role in ("writer", "reader"):
            status[f"{role}s"] = sum(
                1 for e in endpoints if e.role == role and e.state is EndpointState.LIVE
            )
    if observed.neptune is not None:
        status["neptune"] = dict(observed.neptune)
    if generation is not None:
        status["observedGeneration"] = generation
    return status


@dataclass(frozen=True, slots=True)
class BackendView:
    """What the sidecars that answered a health read see, per backend."""

    reporting: int
    #: Backend address -> state -> how many sidecars see it so.
    counts: Mapping[str, Mapping[str, int]]
    without_healthy: Sequence[TargetStatus]

    @classmethod
    def of(cls, sidecars: Sequence[TargetStatus]) -> BackendView:
        # Counted as (address, state) pairs by Counter.update (in C), then regrouped: this
        # runs over every sidecar at every status write.
        pairs: Counter[tuple[str, str]] = Counter()
        without_healthy = []
        reporting = 0
        for sidecar in sidecars:
            if sidecar.health is None:
                continue
            reporting += 1
            states = sidecar.health.states
            pairs.update(states.items())
            if states and "healthy" not in states.values():
                without_healthy.append(sidecar)
        counts: dict[str, Counter[str]] = {}
        for (address, state), count in pairs.items():
            counts.setdefault(address, Counter())[state] = count
        return cls(reporting, counts, without_healthy)

    @property
    def not_healthy(self) -> list[tuple[str, int]]:
        """Backends some sidecar does not see healthy, with how many sidecars."""
        return [
            (address, self.reporting - states.get("healthy", 0))
            for address, states in sorted(self.counts.items())
            if states.get("healthy", 0) < self.reporting
        ]

    def not_healthy_message(self) -> str:
        parts = []
        for address, _count in self.not_healthy[:5]:
            states = self.counts[address]
            seen = [f"{states[s]} {s}" for s in BACKEND_STATES if s != "healthy" and states.get(s)]
            unlisted = self.reporting - sum(states.values())
            if unlisted:
                seen.append(f"{unlisted} not listed")
            parts.append(f"{address}: {', '.join(seen)} of {self.reporting} sidecars")
        more = len(self.not_healthy) - 5
        tail = f" and {more} more" if more > 0 else ""
        return "backends not healthy in every sidecar: " + "; ".join(parts) + tail

    def to_status(self) -> dict[str, Any]:
        return {
            "sidecarsReporting": self.reporting,
            "sidecarsServing": self.reporting - len(self.without_healthy),
            "withoutHealthyBackend": [_pod(s) for s in self.without_healthy[:MAX_LISTED]],
            "hosts": [
                {"address": address, **{s: states.get(s, 0) for s in BACKEND_STATES}}
                for address, states in sorted(self.counts.items())
            ],
        }


def plain_http_message(pods: Sequence[str], shown: int = 5) -> str:
    """Why these pods get no host list, and the two ways out."""
    names = ", ".join(pods[:shown]) + (
        f" and {len(pods) - shown} more" if len(pods) > shown else ""
    )
    return (
        f"{len(pods)} client pod(s) get no host list: their sidecar serves its admin API over "
        f"plain HTTP (no gremlinlb.io/admin-tls annotation) and the admin token is never sent "
        f"in clear: {names}. Recreate them so that the webhook injects the sidecar with admin "
        f"TLS, or set spec.sidecar.allowPlainHttpPush: true if nobody else can read this "
        f"namespace's pod traffic"
    )


def _pod(sidecar: TargetStatus) -> str:
    return sidecar.key.rsplit("/", 1)[-1]


def _names(sidecars: Sequence[TargetStatus], shown: int = 5) -> str:
    names = ", ".join(_pod(s) for s in sidecars[:shown])
    more = f" and {len(sidecars) - shown} more" if len(sidecars) > shown else ""
    return names + more


def same_status(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Equal apart from timestamps (so an unchanged status is not written again)."""
    return bool(_strip(a) == _strip(b))


def _strip(status: Mapping[str, Any]) -> Any:
    copy = dict(status)
    copy["conditions"] = [
        {k: v for k, v in c.items() if k != "lastTransitionTime"}
        for c in status.get("conditions") or ()
    ]
    return copy
