"""The admin API answers only requests addressed to it by a name it knows (DNS rebinding).

A web page can make a browser send requests to the sidecar's admin port through a name of
the attacker's that first resolves to the attacker and then to 127.0.0.1: the browser sends
them with that name in ``Host``. So a request is served only when its ``Host`` (the port is
not compared: port forwarding changes it, and rebinding cannot) is

* the address the connection arrived at, in any spelling (the operator and the kubelet dial
  the pod's IP; ``curl 127.0.0.1:9901`` sends it);
* a loopback name (``localhost``, ``*.localhost``, ``ip6-localhost``) on a loopback connection;
* this machine's host name (a pod's name);
* a name, address, glob or CIDR given with ``--admin-allowed-host`` (``*``: any Host).

Anything else is refused with 421 and a JSON body saying which names are served and how to
add one.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web
from gremlinlb.sidecar.addresses import (
    IP,
    address_of,
    canonical_name,
    is_loopback_name,
)
from gremlinlb.sidecar.trust import HostPolicy

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def split_host_header(value: str) -> str | None:
    """The host part of a Host header (``[::1]:9901`` -> ``::1``, ``a:1`` -> ``a``), or None
    when it is not one."""
    text = value.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        return host or None
    host, colon, port = text.rpartition(":")
    if not colon:
        host = text
    elif ":" in host or not port.isdigit():
        return None  # an IPv6 address must be in brackets
    return host or None


class HostCheck:
    """Which Host headers the admin API serves (see the module's docstring)."""

    def __init__(self, allowed: Sequence[str] = (), hostname: str | None = None) -> None:
        self.allowed = tuple(allowed)
        self._policy = HostPolicy(allowed=self.allowed)
        self._hostname = canonical_name(socket.gethostname() if hostname is None else hostname)

    def allows(self, header: str | None, arrived_at: IP | None) -> bool:
        if "*" in self.allowed:
            return True
        host = None if header is None else split_host_header(header)
        if host is None:
            return False
        address = address_of(host)
        if address is not None and address == arrived_at:
            return True
        if address is None and is_loopback_name(host):
            return arrived_at is not None and arrived_at.is_loopback
        if address is None and self._hostname and canonical_name(host) == self._hostname:
            return True
        return self._policy.allows(host)

    def refusal(self, header: str | None, arrived_at: IP | None) -> str:
        """Why a request with this Host is refused, and what to do about it."""
        served = [str(arrived_at)] if arrived_at is not None else []
        if arrived_at is not None and arrived_at.is_loopback:
            served.append("localhost")
        if self._hostname:
            served.append(self._hostname)
        served.extend(self.allowed)
        given = "no Host header" if header is None else f"Host {header!r}"
        host = None if header is None else split_host_header(header)
        hint = (
            f"if {canonical_name(host)!r} is a name of this sidecar, start it with "
            f"--admin-allowed-host {canonical_name(host)}"
            if host is not None
            else "send the address or a name of this sidecar in Host"
        )
        return (
            f"{given} is not an address or name this admin API serves "
            f"({', '.join(served) or 'none'}): it refuses other names so that a web page cannot "
            f"reach it through a DNS name rebound to this address; {hint}"
        )

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        arrived_at = arrived_address(request)
        header = request.headers.get("Host")
        if not self.allows(header, arrived_at):
            return web.json_response(
                {"error": self.refusal(header, arrived_at), "host": header}, status=421
            )
        return await handler(request)


def arrived_address(request: web.Request) -> IP | None:
    """The local address of the request's connection (the address its client dialed)."""
    transport = request.transport
    sockname = None if transport is None else transport.get_extra_info("sockname")
    if not sockname:
        return None
    return address_of(str(sockname[0]))
