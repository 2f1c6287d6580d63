"""Endpoint addresses and the states a backend can be in."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit

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


class Role(enum.Enum):
    """What a host serves: a writer takes requests that may write, sessions and transactions;
    a reader takes read-only requests (a read replica); `any` (the default) takes both."""

    WRITER = "writer"
    READER = "reader"
    ANY = "any"

    @property
    def writes(self) -> bool:
        return self is not Role.READER

    @property
    def reads(self) -> bool:
        return self is not Role.WRITER


_ROLES = ", ".join(r.value for r in Role)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One Gremlin Server WebSocket address, in canonical form (equal when the URL is equal).

    `role` and `zone` describe the host, not its identity: a host whose role or zone changes
    is the same host (it is updated in place, not drained and re-added). So does `sigv4_host`,
    the `name:port` its SigV4-signed upgrade names when it is reached at another address (a
    tunnel, a proxy: Neptune checks the signed host against its own endpoint name).
    """

    scheme: str
    host: str
    port: int
    path: str = DEFAULT_PATH
    role: Role = field(default=Role.ANY, compare=False)
    zone: str | None = field(default=None, compare=False)
    sigv4_host: str | None = field(default=None, compare=False)
    # Worked out once: every request hashes its endpoint (dict and set keys in the core and
    # the sidecar's metrics) and reads its address, which the generated methods rebuild each
    # time (a tuple of four fields to hash, an f-string).
    _address: str = field(init=False, repr=False, compare=False)
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        host = f"[{self.host}]" if ":" in self.host else self.host
        object.__setattr__(self, "_address", f"{host}:{self.port}")
        object.__setattr__(self, "_hash", hash((self.scheme, self.host, self.port, self.path)))

    def __hash__(self) -> int:
        return self._hash

    @property
    def url(self) -> str:
        """The address to connect to (no role or zone)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path}"

    @property
    def text(self) -> str:
        """The full text form, `url?role=...&zone=...&sigv4_host=...`: what parse_endpoint
        reads back, and what the state file, GET /v1/hosts and the operator's pushes carry."""
        query: list[tuple[str, str]] = []
        if self.role is not Role.ANY:
            query.append(("role", self.role.value))
        if self.zone is not None:
            query.append(("zone", self.zone))
        if self.sigv4_host is not None:
            query.append(("sigv4_host", self.sigv4_host))
        return f"{self.url}?{urlencode(query, safe=':[]')}" if query else self.url

    def same_topology(self, other: Endpoint) -> bool:
        return (
            self.role is other.role
            and self.zone == other.zone
            and self.sigv4_host == other.sigv4_host
        )

    @property
    def address(self) -> str:
        """`host:port` (`[v6]:port`)."""
        return self._address

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
    has_scheme = "://" in raw.partition("?")[0]  # a query value may hold one (sigv4_host)
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
    if parts.fragment:
        raise InvalidEndpointError(f"endpoint {text!r} has a fragment (#...); remove it")
    role, zone, sigv4_host = _topology(text, parts.query)
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
    return Endpoint(
        scheme=parts.scheme,
        host=host,
        port=port,
        path=path,
        role=role,
        zone=zone,
        sigv4_host=sigv4_host,
    )


_KEYS = ("role", "zone", "sigv4_host")
_KEYS_HELP = (
    f"role ({_ROLES}), zone and sigv4_host, e.g. '?role=reader&zone=us-east-1a' or "
    "'?sigv4_host=db-1.cluster-x.us-east-1.neptune.amazonaws.com:8182'"
)


def _topology(text: str, query: str) -> tuple[Role, str | None, str | None]:
    """The role, zone and signed host a query names (`?role=reader&zone=us-east-1a`)."""
    if not query:
        return Role.ANY, None, None
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise InvalidEndpointError(
            f"endpoint {text!r} has a query that is not key=value pairs; the only keys are "
            f"{_KEYS_HELP}"
        ) from None
    seen: dict[str, str] = {}
    for key, value in pairs:
        if key not in _KEYS:
            raise InvalidEndpointError(
                f"endpoint {text!r} has query key {key!r}; the only keys are {_KEYS_HELP}"
            )
        if key in seen:
            raise InvalidEndpointError(f"endpoint {text!r} gives {key} twice; give it once")
        seen[key] = value
    role = Role.ANY
    if "role" in seen:
        try:
            role = Role(seen["role"].lower())
        except ValueError:
            raise InvalidEndpointError(
                f"endpoint {text!r} has role {seen['role']!r}; use one of {_ROLES}"
            ) from None
    zone = seen.get("zone")
    if zone is not None and not zone.strip():
        raise InvalidEndpointError(
            f"endpoint {text!r} has an empty zone; name it (e.g. zone=us-east-1a) or leave it out"
        )
    sigv4_host = seen.get("sigv4_host")
    if sigv4_host is not None:
        _check_signed_host(text, sigv4_host)
    return role, zone, sigv4_host


def _check_signed_host(text: str, value: str) -> None:
    """`name:port`, as Neptune's endpoint is written: the signed Host header carries it."""
    name, sep, port = value.rpartition(":")
    bad = not sep or not name.strip("[]") or any(c in name for c in "/@?#")
    if bad or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InvalidEndpointError(
            f"endpoint {text!r} has sigv4_host {value!r}; give the host:port the upgrade is "
            "signed for, e.g. sigv4_host=db-1.cluster-x.us-east-1.neptune.amazonaws.com:8182"
        )
