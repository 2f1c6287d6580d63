"""The sidecar's options: what the operator needs to write a sidecar's flags and env, apart
from the runtime that uses them.

Pure (no I/O, no aiohttp): the operator imports this module and no other of the sidecar, so
loading its webhook loads no proxy (issue 23; docs/architecture.md). config.py, backend.py,
proxy.py, memory.py, hostlist.py and trust.py re-export what they used to define here.
"""

from __future__ import annotations

import base64
import enum
import ipaddress
import ssl
from dataclasses import dataclass, field

from gremlinlb.core.settings import setting
from gremlinlb.schema import SETTINGS, Setting, env_of, flag_of, settings_of

MiB = 1024 * 1024
DEFAULT_MAX_MESSAGE_BYTES = 10 * 1024 * 1024  # Gremlin Server's maxContentLength
DEFAULT_MAX_HOSTS = 1000
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class MemoryLimits:
    """The bounds above; the defaults fit the injected 256 MiB limit with room to spare."""

    budget_bytes: int = 96 * MiB
    client_pause_bytes: int = 4 * MiB
    client_max_queued_bytes: int = 32 * MiB
    max_requests_per_client: int = 1024

    def __post_init__(self) -> None:
        if self.client_pause_bytes < 1:
            raise ValueError(f"client_pause_bytes must be >= 1, got {self.client_pause_bytes}")
        if self.client_max_queued_bytes < self.client_pause_bytes:
            raise ValueError(
                f"client_max_queued_bytes ({self.client_max_queued_bytes}) must be >= "
                f"client_pause_bytes ({self.client_pause_bytes})"
            )
        if self.budget_bytes < self.client_max_queued_bytes:
            raise ValueError(
                f"memory_budget_bytes ({self.budget_bytes}) must be >= "
                f"client_max_queued_bytes ({self.client_max_queued_bytes})"
            )
        if self.max_requests_per_client < 1:
            raise ValueError(
                f"max_requests_per_client must be >= 1, got {self.max_requests_per_client}"
            )


@dataclass(frozen=True, slots=True)
class BackendOptions:
    """How the sidecar reaches every backend (timeouts come from the core's settings)."""

    username: str = ""
    password: str = ""
    ssl_context: ssl.SSLContext | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    connections_per_host: int = 2
    max_in_flight_per_connection: int = 128
    #: Seconds without a request after which a pool for a mime other than the default is
    #: closed (idle_pools.py); the next request on that mime opens it again.
    mime_pool_idle: float = 60.0

    def __post_init__(self) -> None:
        if self.max_message_bytes < 1024:
            raise ValueError(f"max_message_bytes must be >= 1024, got {self.max_message_bytes}")
        if self.connections_per_host < 1:
            raise ValueError(f"connections_per_host must be >= 1, got {self.connections_per_host}")
        if self.mime_pool_idle <= 0:
            raise ValueError(f"mime_pool_idle must be > 0, got {self.mime_pool_idle}")
        if self.max_in_flight_per_connection < 1:
            raise ValueError(
                "max_in_flight_per_connection must be >= 1, got "
                f"{self.max_in_flight_per_connection}"
            )
        if bool(self.username) != bool(self.password):
            raise ValueError("give both a backend username and a password, or neither")

    @property
    def hard_answer_bytes(self) -> int:
        """Answer frames up to this size are read off and discarded when over the limit (that
        request alone fails); a larger one closes its connection, as nothing else can be read
        past it. The gap is what keeps one oversized answer from failing everything else on a
        multiplexed connection."""
        return max(4 * self.max_message_bytes, self.max_message_bytes + 16 * 1024 * 1024)

    @property
    def credentials(self) -> bool:
        return bool(self.username)

    def sasl_plain(self) -> str:
        token = b"\0" + self.username.encode("utf-8") + b"\0" + self.password.encode("utf-8")
        return base64.b64encode(token).decode("ascii")

    def __repr__(self) -> str:  # never print the password
        return (
            f"BackendOptions(username={self.username!r}, tls={self.ssl_context is not None}, "
            f"max_message_bytes={self.max_message_bytes}, "
            f"connections_per_host={self.connections_per_host}, "
            f"max_in_flight_per_connection={self.max_in_flight_per_connection})"
        )


@dataclass(frozen=True, slots=True)
class ProxyOptions:
    """Client-side limits."""

    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    memory: MemoryLimits = field(default_factory=MemoryLimits)
    # Seconds a new connection may take to complete its WebSocket upgrade.
    handshake_timeout: float = 10.0

    @property
    def hard_message_bytes(self) -> int:
        """Frames up to this size are read and answered with an error; larger ones close."""
        return max(2 * self.max_message_bytes, self.max_message_bytes + 1024 * 1024)


def host_network(pattern: str) -> Network | None:
    """The network a CIDR pattern names; None for a host name glob."""
    try:
        return ipaddress.ip_network(pattern, strict=False)
    except ValueError:
        return None


def parse_allowed_hosts(text: str) -> tuple[str, ...]:
    """``10.0.0.0/8,*.svc.cluster.local`` -> its patterns; ValueError naming a bad one."""
    patterns = tuple(p.strip() for p in text.split(",") if p.strip())
    for pattern in patterns:
        if host_network(pattern) is not None:
            continue
        if "/" in pattern or ":" in pattern or not all(c.isalnum() or c in "-.*?" for c in pattern):
            raise ValueError(
                f"{pattern!r} is neither a CIDR (10.0.0.0/8, fd00::/8) nor a host name glob "
                "(*.gremlin.svc.cluster.local)"
            )
    return patterns


#: The backend password, when it is not in a file (a pod's env from a Secret).
PASSWORD_ENV = env_of("backend_password")
_BACKEND, _PROXY, _MEMORY = BackendOptions(), ProxyOptions(), MemoryLimits()


class LogFormat(enum.Enum):
    TEXT = "text"
    JSON = "json"


class EventLoop(enum.Enum):
    #: uvloop when installed, else asyncio.
    AUTO = "auto"
    UVLOOP = "uvloop"
    ASYNCIO = "asyncio"


@dataclass(frozen=True, slots=True)
class Tunables:
    """The sidecar's own numbers and choices: converted and bounded like the core's settings."""

    max_message_bytes: int = setting(
        _BACKEND.max_message_bytes, "largest frame accepted either way", unit="bytes", ge=1024
    )
    connections_per_host: int = setting(
        _BACKEND.connections_per_host, "multiplexed connections per backend", ge=1
    )
    max_in_flight_per_connection: int = setting(
        _BACKEND.max_in_flight_per_connection, "requests at once on one connection", ge=1
    )
    mime_pool_idle: float = setting(
        _BACKEND.mime_pool_idle,
        "seconds without a request after which a backend pool of a mime other than "
        "GraphBinary is closed",
        unit="seconds",
        gt=0,
    )
    backend_tls: bool | None = setting(
        None, "backends only over wss://: refuse ws:// hosts (default: true with --backend-ca-file)"
    )
    allow_plain_http_watch: bool = setting(
        False,
        "watch the operator over plain http://, the cluster's token included in clear (off: an "
        "http:// --operator-url is refused at start); only where nobody else can read this "
        "pod's traffic",
    )
    grace_period: float = setting(
        15.0, "seconds open connections keep being served after SIGTERM", unit="seconds", ge=0
    )
    max_hosts: int = setting(DEFAULT_MAX_HOSTS, "most hosts a host list may hold", ge=1)
    memory_budget_bytes: int = setting(
        _MEMORY.budget_bytes,
        "bytes held for all clients (queued answers, requests in flight)",
        unit="bytes",
        ge=1,
    )
    client_pause_bytes: int = setting(
        _MEMORY.client_pause_bytes,
        "bytes held for one client above which its requests are not read",
        unit="bytes",
        ge=1,
    )
    client_max_queued_bytes: int = setting(
        _MEMORY.client_max_queued_bytes,
        "unread answer bytes after which a client is cut off",
        unit="bytes",
        ge=1,
    )
    max_requests_per_client: int = setting(
        _MEMORY.max_requests_per_client, "requests in flight per connection", ge=1
    )
    handshake_timeout: float = setting(
        _PROXY.handshake_timeout,
        "seconds a new connection may take to finish its WebSocket upgrade",
        unit="seconds",
        ge=0.1,
    )
    log_format: LogFormat = setting(LogFormat.TEXT, "log lines as text or json")
    event_loop: EventLoop = setting(
        EventLoop.AUTO, "auto (uvloop when installed), uvloop or asyncio"
    )


TUNABLES: tuple[Setting, ...] = settings_of(Tunables)
_TUNED = Tunables()


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def loopback(self) -> bool:
        return self.host in ("localhost", "::1") or self.host.startswith("127.")


DEFAULT_LISTEN = Address("127.0.0.1", 8182)
DEFAULT_ADMIN = Address("127.0.0.1", 9901)
DEFAULT_TRAVERSAL_SOURCE = "g"


@dataclass(frozen=True, slots=True)
class Option:
    """One flag, with its environment variable and config-file key (``name``)."""

    name: str  # flag without dashes, underscores: "health_interval"
    help: str
    metavar: str = "VALUE"
    #: What an unset option amounts to, as shown by --help (None: nothing shown).
    default: object = None
    #: The flag may be given more than once (each value may also be comma-separated).
    repeatable: bool = False

    @property
    def flag(self) -> str:
        return flag_of(self.name)

    @property
    def env(self) -> str:
        return env_of(self.name)


#: The sidecar's own options read as text (addresses, lists, files, names).
TEXT_OPTIONS: tuple[Option, ...] = (
    Option("listen", "host:port of the Gremlin endpoint", "HOST:PORT", DEFAULT_LISTEN),
    Option("endpoints", "comma-separated Gremlin Servers, host:port or ws(s):// URLs", "LIST"),
    Option("admin", "host:port of the admin API", "HOST:PORT", DEFAULT_ADMIN),
    Option("token_file", "file holding the bearer token PUT /v1/hosts requires", "FILE"),
    Option(
        "generate_token_file",
        "without --token-file, the sidecar generates a token and writes it here, owner-only",
        "FILE",
        "<runtime dir>/gremlinlb/sidecar-<admin port>.token",
    ),
    Option(
        "admin_allowed_host",
        "a Host the admin API also answers (besides the address it was reached at, localhost "
        "and this machine's name): a name, address, glob or CIDR; repeatable or "
        "comma-separated; '*' answers any Host",
        "NAME",
        repeatable=True,
    ),
    Option("state_dir", "directory where the last accepted host list is kept", "DIR"),
    Option("backend_username", "SASL PLAIN user for the backends", "USER"),
    Option(
        "backend_password_file",
        f"file holding the backend password (or set {PASSWORD_ENV})",
        "FILE",
    ),
    Option("backend_ca_file", "CA bundle (PEM) to verify wss:// backends with", "FILE"),
    Option(
        "admin_tls_cert_file",
        "serve the admin API over HTTPS with this certificate (PEM; re-read when it changes)",
        "FILE",
    ),
    Option("admin_tls_key_file", "the private key of --admin-tls-cert-file (PEM)", "FILE"),
    Option(
        "allowed_hosts",
        "comma-separated CIDRs and host name globs the host list may name (default: any)",
        "LIST",
    ),
    Option(
        "zone",
        "this sidecar's zone (its node's): hosts listed with ?zone= in it are preferred",
        "ZONE",
    ),
    Option(
        "operator_url",
        "watch the operator here for host lists (its https:// distribution URL) instead of "
        "waiting for pushes",
        "URL",
    ),
    Option("operator_ca_file", "CA (PEM) to verify the operator's certificate with", "FILE"),
    Option("operator_cluster", "the GremlinCluster to watch, as namespace/name", "NS/NAME"),
    Option("pod_name", "this pod's name, told to the operator with each watch poll", "NAME"),
    Option(
        "neptune_cluster",
        "follow this Neptune cluster's writer and readers (DescribeDBClusters and "
        "DescribeDBInstances) instead of --endpoints",
        "ID",
    ),
    Option("neptune_region", "the Neptune cluster's AWS region", "REGION"),
    Option(
        "neptune_endpoint_url",
        "the Neptune management API's URL (default: AWS's regional endpoint)",
        "URL",
    ),
    Option(
        "neptune_refresh",
        "seconds between reads of the cluster (each jittered by up to a fifth)",
        "SEC",
        "60",
    ),
    Option("neptune_scheme", "wss (Neptune) or ws (a local stand-in)", "SCHEME", "wss"),
    Option(
        "neptune_addresses",
        "comma-separated instance=host:port: connect to that address instead of the "
        "instance's endpoint (tunnels, tests)",
        "LIST",
    ),
    Option(
        "neptune_roles",
        "comma-separated roles to keep, writer and/or reader (default: both)",
        "LIST",
    ),
    Option(
        "neptune_zones",
        "comma-separated availability zones to keep (default: every zone)",
        "LIST",
    ),
    Option(
        "neptune_tags",
        "comma-separated key=value instance tags an instance must all carry to be kept "
        "(ListTagsForResource; default: no tag needed)",
        "LIST",
    ),
    Option(
        "traversal_source",
        "traversal source the health probe uses",
        "NAME",
        DEFAULT_TRAVERSAL_SOURCE,
    ),
    Option(
        "traversal_sources",
        "more traversal sources to probe on every host, comma-separated, e.g. g2,g3 "
        "(others are learned from requests)",
        "LIST",
    ),
)
#: Every option: the text ones, the sidecar's tunables, then the core's settings.
OPTIONS: tuple[Option, ...] = TEXT_OPTIONS + tuple(
    Option(s.flat, s.doc.help, s.metavar, None if s.default is None else s.text(s.default))
    for s in TUNABLES + SETTINGS
)
_BY_NAME = {option.name: option for option in OPTIONS}
assert len(_BY_NAME) == len(OPTIONS), "two options share a name"


def env_name(name: str) -> str:
    """The environment variable of option ``name`` (KeyError for an unknown one)."""
    return _BY_NAME[name].env
