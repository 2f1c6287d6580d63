"""EndpointSlices -> Gremlin Server endpoints with a state each (pure, no I/O).

The rules follow the EndpointSlice conditions as kube-proxy reads them:

* ``ready`` (true, or absent, which the API defines as "unknown, assume ready") and not
  terminating: **live**, it receives new requests;
* ``serving`` and ``terminating``: **draining**, requests in flight finish there, new ones go
  elsewhere (the sidecars are simply not given it any more, which makes them drain it);
* anything else (not ready, or terminating and no longer serving): **out**.

An address listed in several slices (a slice being split or merged) keeps its best state.

Each endpoint also carries its zone: the zone its topology-aware-routing hint gives it when the
slice has exactly one (``hints.forZones``: the EndpointSlice controller allots endpoints to
zones so that each zone's share follows its capacity), else its own ``zone``. With a writer
Service (``spec.roles.writerService``) each endpoint also gets a role: writer when its address
is a ready endpoint of that Service, reader otherwise.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any


class EndpointState(enum.Enum):
    LIVE = "live"
    DRAINING = "draining"
    OUT = "out"


_RANK = {EndpointState.LIVE: 0, EndpointState.DRAINING: 1, EndpointState.OUT: 2}


@dataclass(frozen=True, slots=True, order=True)
class DiscoveredEndpoint:
    ip: str
    port: int
    state: EndpointState
    pod: str | None = None
    zone: str | None = None
    role: str | None = None  # "writer" or "reader" with a writer Service, else None (both)

    @property
    def address(self) -> str:
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"


@dataclass(frozen=True, slots=True)
class PortChoice:
    """Which port of the slices to use: the Service port's name (``""`` for an unnamed one)
    when known, else the only port, else the one numbered like the Service port."""

    name: str | None
    number: int | None = None


def endpoint_state(conditions: Mapping[str, Any] | None) -> EndpointState:
    conditions = conditions or {}
    ready = conditions.get("ready")
    serving = conditions.get("serving")
    terminating = bool(conditions.get("terminating"))
    if terminating:
        # `serving` absent on an old apiserver: fall back to `ready`, as kube-proxy does.
        still_serving = serving if serving is not None else ready
        return EndpointState.DRAINING if still_serving else EndpointState.OUT
    if ready is None or ready:
        return EndpointState.LIVE
    return EndpointState.OUT


def slice_port(ports: Iterable[Mapping[str, Any]] | None, choice: PortChoice) -> int | None:
    candidates = [p for p in ports or () if isinstance(p.get("port"), int)]
    if choice.name is not None:
        for port in candidates:
            if (port.get("name") or "") == choice.name:
                return int(port["port"])
        return None
    if len(candidates) == 1:
        return int(candidates[0]["port"])
    for port in candidates:
        if choice.number is not None and port.get("port") == choice.number:
            return int(port["port"])
    return None


def endpoints_from_slices(
    slices: Iterable[Mapping[str, Any]], choice: PortChoice
) -> list[DiscoveredEndpoint]:
    """Every endpoint of ``slices`` with its state, sorted by address, each address once."""
    best: dict[tuple[str, int], DiscoveredEndpoint] = {}
    for item in slices:
        if item.get("addressType") not in ("IPv4", "IPv6"):
            continue  # FQDN slices are not pod addresses
        port = slice_port(item.get("ports"), choice)
        if port is None:
            continue
        for endpoint in item.get("endpoints") or ():
            addresses = endpoint.get("addresses") or ()
            if not addresses:
                continue
            # Consumers use the first address: the others are, by the API's rules, the same pod.
            ip = str(addresses[0])
            target = endpoint.get("targetRef") or {}
            pod = target.get("name") if target.get("kind", "Pod") == "Pod" else None
            state = endpoint_state(endpoint.get("conditions"))
            found = DiscoveredEndpoint(ip, port, state, pod, endpoint_zone(endpoint))
            key = (ip, port)
            known = best.get(key)
            if known is None or _RANK[found.state] < _RANK[known.state]:
                best[key] = found
    return sorted(best.values(), key=_sort_key)


def endpoint_zone(endpoint: Mapping[str, Any]) -> str | None:
    """The zone to route by: a single ``hints.forZones`` entry, else the endpoint's ``zone``."""
    hints = (endpoint.get("hints") or {}).get("forZones") or ()
    names = [h.get("name") for h in hints if isinstance(h, Mapping) and h.get("name")]
    if len(names) == 1:
        return str(names[0])
    zone = endpoint.get("zone")
    return str(zone) if zone else None


def ready_addresses(slices: Iterable[Mapping[str, Any]]) -> set[str]:
    """The addresses of the live endpoints of ``slices``, any port (a writer Service's)."""
    found: set[str] = set()
    for item in slices:
        if item.get("addressType") not in ("IPv4", "IPv6"):
            continue
        for endpoint in item.get("endpoints") or ():
            addresses = endpoint.get("addresses") or ()
            if addresses and endpoint_state(endpoint.get("conditions")) is EndpointState.LIVE:
                found.add(str(addresses[0]))
    return found


def with_roles(
    endpoints: Iterable[DiscoveredEndpoint], writers: Collection[str] | None
) -> list[DiscoveredEndpoint]:
    """Each endpoint with its role: writer when its address is in ``writers``, else reader;
    unchanged (both) when there is no writer Service (``writers`` None)."""
    if writers is None:
        return list(endpoints)
    return [
        dataclasses.replace(e, role="writer" if e.ip in writers else "reader") for e in endpoints
    ]


def _sort_key(endpoint: DiscoveredEndpoint) -> tuple[int, int, str, int]:
    try:
        ip = ipaddress.ip_address(endpoint.ip)
        return (ip.version, int(ip), "", endpoint.port)
    except ValueError:
        return (9, 0, endpoint.ip, endpoint.port)


def live(endpoints: Iterable[DiscoveredEndpoint]) -> list[DiscoveredEndpoint]:
    return [e for e in endpoints if e.state is EndpointState.LIVE]
