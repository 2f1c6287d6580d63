"""Endpoint addresses and the states a backend can be in."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from urllib.parse import urlsplit

from gremlinlb.core.errors import InvalidEndpointError

DEFAULT_PATH = "/gremlin"
_SCHEMES = ("ws", "wss")


class HostState(enum.Enum):
    """Where a backend stands for new requests."""

    HEALTHY = "healthy"  # picked for new requests
    DOWN = "down"  # skipped; probed until it passes `rise` checks
    DRAINING = "draining"  # skipped; in-flight requests finish, then it is removed
    # Skipped for a while by outlier detection (failing, stuck or slow while its peers serve);
    # back once its ejection time is up and a probe passes.
    EJECTED = "ejected"
    JOINING = "joining"  # just added: skipped until its first probe passes


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One Gremlin Server WebSocket address, in canonical form (equal when the URL is equal)."""

    scheme: str
    host: str
    port: int
    path: str = DEFAULT_PATH

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path}"

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return self.url


def parse_endpoint(text: str) -> Endpoint:
    """Accept `host:port`, `[v6]:port`, or a full `ws://` / `wss://` URL; refuse anything else.

    Refusing early, with the reason, beats a connection error minutes later.
    """
    if not isinstance(text, str):
        raise InvalidEndpointError(
            f"endpoint {text!r} is a {type(text).__name__}; give a string such as "
            "'localhost:8182' or 'ws://gremlin-0.gremlin:8182/gremlin'"
        )
    raw = text.strip()
    if not raw:
        raise InvalidEndpointError("endpoint is empty; give host:port, e.g. 'localhost:8182'")
    if any(ch.isspace() for ch in raw):
        raise InvalidEndpointError(f"endpoint {text!r} contains white space")
    has_scheme = "://" in raw
    try:
        parts = urlsplit(raw if has_scheme else f"ws://{raw}")
    except ValueError as error:
        raise InvalidEndpointError(f"endpoint {text!r} is not a valid address: {error}") from None
    if parts.scheme not in _SCHEMES:
        raise InvalidEndpointError(
            f"endpoint {text!r} uses scheme {parts.scheme!r}; Gremlin Server 3.x speaks "
            "WebSockets, use ws:// or wss:// (or plain host:port for ws://)"
        )
    if parts.username is not None or parts.password is not None:
        raise InvalidEndpointError(
            f"endpoint {text!r} carries credentials; pass username/password options instead "
            "so they do not end up in logs"
        )
    if parts.query or parts.fragment:
        raise InvalidEndpointError(f"endpoint {text!r} has a query or fragment; remove it")
    host = parts.hostname
    if not host:
        raise InvalidEndpointError(f"endpoint {text!r} has no host; give host:port")
    try:
        port = parts.port
    except ValueError:
        raise InvalidEndpointError(
            f"endpoint {text!r} has an invalid port; use a number from 1 to 65535"
        ) from None
    if port is None:
        raise InvalidEndpointError(
            f"endpoint {text!r} has no port; write it as host:port, e.g. '{host}:8182'"
        )
    if port == 0:
        raise InvalidEndpointError(f"endpoint {text!r} has port 0; use a port from 1 to 65535")
    path = parts.path or DEFAULT_PATH
    return Endpoint(scheme=parts.scheme, host=host, port=port, path=path)
