"""The GremlinCluster status, computed from what the operator knows (pure, no I/O).

Conditions follow the Kubernetes conventions: ``lastTransitionTime`` changes only when the
condition's status does, and each carries the ``observedGeneration`` it was computed for.

* ``Ready``: at least one live endpoint (reasons ``EndpointsAvailable``, ``NoLiveEndpoints``,
  ``ServiceNotFound``, ``InvalidSpec``, ``Forbidden``).
* ``Degraded``: something needs attention (``SidecarsOutOfSync``, ``EndpointsNotLive``,
  ``ServiceNotFound``, ``InvalidSpec``, ``Forbidden``; ``AsExpected`` when False).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gremlinlb.operator.discovery import DiscoveredEndpoint, EndpointState
from gremlinlb.operator.push import TargetStatus

#: At most this many out-of-sync sidecars are listed by name (the count is always exact).
MAX_LISTED = 20


@dataclass(frozen=True, slots=True)
class Observed:
    generation: int | None  # metadata.generation of the GremlinCluster
    hosts_generation: int
    hosts: tuple[str, ...]
    endpoints: Sequence[DiscoveredEndpoint]
    sidecars: Sequence[TargetStatus]
    service_found: bool = True
    spec_error: str | None = None
    #: The operator lacks a permission it needs in the cluster's namespace (what to grant).
    access_error: str | None = None


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

    if observed.spec_error is not None:
        ready = (False, "InvalidSpec", observed.spec_error)
    elif observed.access_error is not None:
        ready = (False, "Forbidden", observed.access_error)
    elif not observed.service_found:
        ready = (False, "ServiceNotFound", "the Service named in spec.service does not exist")
    elif live == 0:
        ready = (False, "NoLiveEndpoints", f"none of {len(endpoints)} endpoints is ready")
    else:
        ready = (True, "EndpointsAvailable", f"{live} of {len(endpoints)} endpoints live")

    if (
        observed.spec_error is not None
        or observed.access_error is not None
        or not observed.service_found
    ):
        degraded = (True, ready[1], ready[2])
    elif out_of_sync:
        names = ", ".join(s.key.rsplit("/", 1)[-1] for s in out_of_sync[:5])
        more = f" and {len(out_of_sync) - 5} more" if len(out_of_sync) > 5 else ""
        degraded = (
            True,
            "SidecarsOutOfSync",
            f"{len(out_of_sync)} of {len(observed.sidecars)} sidecars do not hold host list "
            f"generation {observed.hosts_generation} yet: {names}{more}",
        )
    elif live < len(endpoints):
        degraded = (
            True,
            "EndpointsNotLive",
            f"{draining} draining and {len(endpoints) - live - draining} out of "
            f"{len(endpoints)} endpoints",
        )
    else:
        degraded = (False, "AsExpected", "every endpoint is live and every sidecar in sync")

    generation = observed.generation
    status: dict[str, Any] = {
        "hostsGeneration": observed.hosts_generation,
        "hosts": list(observed.hosts),
        "readyEndpoints": live,
        "totalEndpoints": len(endpoints),
        "endpoints": [
            {"address": e.address, "state": e.state.value, **({"pod": e.pod} if e.pod else {})}
            for e in endpoints
        ],
        "sidecars": {
            "total": len(observed.sidecars),
            "inSync": len(observed.sidecars) - len(out_of_sync),
            "outOfSync": [
                {
                    "pod": s.key.rsplit("/", 1)[-1],
                    "address": s.url.split("://", 1)[-1],
                    **({"generation": s.acked_generation} if s.acked_generation else {}),
                    "error": s.error or "push in progress",
                }
                for s in out_of_sync[:MAX_LISTED]
            ],
        },
        "conditions": [
            condition("Ready", *ready, previous_conditions, generation, now),
            condition("Degraded", *degraded, previous_conditions, generation, now),
        ],
    }
    if generation is not None:
        status["observedGeneration"] = generation
    return status


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
