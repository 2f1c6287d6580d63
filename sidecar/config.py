"""Sidecar configuration from flags, environment variables and a JSON file, in that order.

Every flag `--some-name` also reads `GREMLINLB_SOME_NAME` (for a pod spec) and the key
`some_name` of the `--config` file. Values are checked once, here, with messages that name the
flag and where its value came from, so a typo fails at start-up rather than at the first request.
The core's settings and the sidecar's own numbers (:class:`Tunables`) are declared as dataclass
fields and converted by :mod:`gremlinlb.schema`; only addresses, lists and files are read here.

The layering stays argparse plus :class:`_Values` (a dozen lines): click's ``auto_envvar_prefix``
would name a sub-command's variables ``GREMLINLB_SIDECAR_*`` (breaking every pod spec), so each
option would need its variable spelled out anyway, and click has no config-file layer.
"""

from __future__ import annotations

import argparse
import enum
import json
import re
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from gremlinlb.sidecar.backend import BackendOptions
from gremlinlb.sidecar.hostlist import DEFAULT_MAX_HOSTS
from gremlinlb.sidecar.memory import MemoryLimits
from gremlinlb.sidecar.proxy import ProxyOptions
from gremlinlb.sidecar.trust import HostPolicy, parse_allowed_hosts

from gremlinlb.core import BalancerSettings, Endpoint, InvalidEndpointError, parse_endpoint
from gremlinlb.core.settings import setting
from gremlinlb.schema import (
    SETTINGS,
    Setting,
    SettingsError,
    env_of,
    flag_of,
    from_flat,
    settings_of,
)

#: The backend password, when it is not in a file (a pod's env from a Secret).
PASSWORD_ENV = env_of("backend_password")
_BACKEND, _PROXY, _MEMORY = BackendOptions(), ProxyOptions(), MemoryLimits()
_T = TypeVar("_T")


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the flag and the source."""


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
    backend_tls: bool | None = setting(
        None, "backends only over wss://: refuse ws:// hosts (default: true with --backend-ca-file)"
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


@dataclass(frozen=True)
class SidecarConfig:
    listen: Address = Address("127.0.0.1", 8182)
    endpoints: tuple[Endpoint, ...] = ()
    admin: Address = Address("127.0.0.1", 9901)
    token: str | None = None
    #: Where the token came from: re-read when it changes (a mounted Secret updated in place).
    token_file: Path | None = None
    #: Without a token: where the generated one is written (None: the runtime directory).
    generate_token_file: Path | None = None
    #: More Host names the admin API answers (names, addresses, globs, CIDRs; "*": any).
    admin_allowed_hosts: tuple[str, ...] = ()
    host_policy: HostPolicy = field(default_factory=HostPolicy)
    #: (certificate, key): the admin API serves HTTPS.
    admin_tls: tuple[Path, Path] | None = None
    state_dir: Path | None = None
    settings: BalancerSettings = field(default_factory=BalancerSettings)
    backend: BackendOptions = field(default_factory=BackendOptions)
    proxy: ProxyOptions = field(default_factory=ProxyOptions)
    grace_period: float = _TUNED.grace_period
    log_format: str = _TUNED.log_format.value
    traversal_source: str = "g"
    # more traversal sources to probe on every host (others are learned from requests)
    traversal_sources: tuple[str, ...] = ()
    event_loop: str = _TUNED.event_loop.value
    max_hosts: int = _TUNED.max_hosts
    #: This sidecar's own zone (its node's), which zone-aware routing prefers; None: unknown.
    zone: str | None = None


_DEFAULT = SidecarConfig()


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
    Option("listen", "host:port of the Gremlin endpoint", "HOST:PORT", _DEFAULT.listen),
    Option("endpoints", "comma-separated Gremlin Servers, host:port or ws(s):// URLs", "LIST"),
    Option("admin", "host:port of the admin API", "HOST:PORT", _DEFAULT.admin),
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
        "traversal_source",
        "traversal source the health probe uses",
        "NAME",
        _DEFAULT.traversal_source,
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="JSON file with any of these settings")
    for option in OPTIONS:
        default = "" if option.default is None else f" (default {option.default})"
        parser.add_argument(
            option.flag,
            dest=option.name,
            metavar=option.metavar,
            default=None,
            action="append" if option.repeatable else "store",
            help=f"{option.help}{default} [env {option.env}]",
        )


class _Values:
    """Looks an option up in flags, then the environment, then the config file."""

    def __init__(
        self, flags: Mapping[str, Any], env: Mapping[str, str], file: Mapping[str, Any]
    ) -> None:
        self._flags = flags
        self._env = env
        self._file = file

    def raw(self, name: str) -> tuple[Any, str] | None:
        """(value, where it came from), or None when no source sets it."""
        option = _BY_NAME[name]
        if self._flags.get(name) is not None:
            return self._flags[name], option.flag
        if self._env.get(option.env) not in (None, ""):
            return self._env[option.env], option.env
        if name in self._file and self._file[name] is not None:
            return self._file[name], f"'{name}' in the config file"
        return None

    def text(self, name: str, default: str) -> str:
        found = self.raw(name)
        if found is None:
            return default
        value, source = found
        if not isinstance(value, str):
            raise ConfigError(f"{source}: must be a string, got {value!r}")
        return value

    def optional_text(self, name: str) -> str | None:
        found = self.raw(name)
        return None if found is None else self.text(name, "")

    def source(self, name: str) -> str:
        found = self.raw(name)
        return found[1] if found else name

    def converted(self, base: _T, settings: tuple[Setting, ...]) -> _T:
        """``base`` with every setting some source gives, checked by the one converter."""
        try:
            return from_flat(self.raw, base, settings)
        except SettingsError as error:
            raise ConfigError(str(error)) from None


def load_config(
    flags: Mapping[str, Any], env: Mapping[str, str], config_file: str | None = None
) -> SidecarConfig:
    """Build and check the whole configuration; raise ConfigError saying what is wrong."""
    file_data = _read_config_file(config_file or env.get(env_of("config")) or None)
    values = _Values(flags, env, file_data)
    listen = parse_address(values.text("listen", str(_DEFAULT.listen)), values.source("listen"))
    admin = parse_address(values.text("admin", str(_DEFAULT.admin)), values.source("admin"))
    endpoints = _endpoints(values)
    tuned = values.converted(_TUNED, TUNABLES)
    host_policy = _host_policy(values, tuned)
    refusal = host_policy.refusal(endpoints, "endpoints")
    if refusal is not None:
        raise ConfigError(f"{values.source('endpoints')}: {refusal}")
    settings = values.converted(BalancerSettings(), SETTINGS)
    try:
        backend = BackendOptions(
            username=values.text("backend_username", ""),
            password=_password(values, env),
            ssl_context=_ssl_context(values),
            max_message_bytes=tuned.max_message_bytes,
            connections_per_host=tuned.connections_per_host,
            max_in_flight_per_connection=tuned.max_in_flight_per_connection,
        )
        memory = MemoryLimits(
            tuned.memory_budget_bytes,
            tuned.client_pause_bytes,
            tuned.client_max_queued_bytes,
            tuned.max_requests_per_client,
        )
    except ValueError as error:
        raise ConfigError(str(error)) from None
    state_dir = values.optional_text("state_dir")
    token_file = values.optional_text("token_file")
    generate_token_file = values.optional_text("generate_token_file")
    return SidecarConfig(
        listen=listen,
        endpoints=endpoints,
        admin=admin,
        token=_read_secret(values, "token_file"),
        token_file=Path(token_file) if token_file else None,
        generate_token_file=Path(generate_token_file) if generate_token_file else None,
        admin_allowed_hosts=_admin_allowed_hosts(values),
        admin_tls=_admin_tls(values),
        host_policy=host_policy,
        state_dir=Path(state_dir) if state_dir else None,
        settings=settings,
        backend=backend,
        proxy=ProxyOptions(
            max_message_bytes=tuned.max_message_bytes,
            memory=memory,
            handshake_timeout=tuned.handshake_timeout,
        ),
        grace_period=tuned.grace_period,
        log_format=tuned.log_format.value,
        traversal_source=values.text("traversal_source", _DEFAULT.traversal_source),
        traversal_sources=_traversal_sources(values),
        event_loop=tuned.event_loop.value,
        max_hosts=tuned.max_hosts,
        zone=(values.optional_text("zone") or "").strip() or None,
    )


def parse_address(text: str, source: str) -> Address:
    """host:port or [v6]:port; port 0 picks a free port (tests)."""
    host, sep, port_text = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host:
        raise ConfigError(f"{source}: expected host:port such as 127.0.0.1:8182, got {text!r}")
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{source}: the port of {text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{source}: port {port} is outside 0-65535")
    return Address(host, port)


def _read_config_file(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"--config {path}: cannot read it: {error.strerror}") from None
    except ValueError as error:
        raise ConfigError(f"--config {path}: not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: must hold a JSON object of settings")
    normalized = {str(key).replace("-", "_"): value for key, value in data.items()}
    unknown = sorted(set(normalized) - set(_BY_NAME))
    if unknown:
        raise ConfigError(
            f"--config {path}: unknown setting(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(_BY_NAME))}"
        )
    return normalized


_SOURCE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,255}")


def _traversal_sources(values: _Values) -> tuple[str, ...]:
    names: list[str] = []
    for item, source in _listed(values, "traversal_sources", "traversal source names"):
        if not _SOURCE_NAME.fullmatch(item):
            raise ConfigError(
                f"{source}: {item!r} is not a traversal source name (letters, digits and _, "
                "not starting with a digit, as bound on the Gremlin Server, e.g. g2)"
            )
        names.append(item)
    return tuple(dict.fromkeys(names))


def _listed(values: _Values, name: str, what: str) -> Iterator[tuple[str, str]]:
    """The non-empty items of a comma-separated flag or env var (or a config-file list), each
    with where it came from."""
    found = values.raw(name)
    if found is None:
        return
    value, source = found
    for item in value if isinstance(value, list) else str(value).split(","):
        if not isinstance(item, str):
            raise ConfigError(f"{source}: {what} must be strings, got {item!r}")
        if item.strip():
            yield item.strip(), source


def _endpoints(values: _Values) -> tuple[Endpoint, ...]:
    endpoints: list[Endpoint] = []
    for item, source in _listed(values, "endpoints", "endpoints"):
        try:
            endpoint = parse_endpoint(item)
        except InvalidEndpointError as error:
            raise ConfigError(f"{source}: {error}") from None
        if endpoint not in endpoints:
            endpoints.append(endpoint)
    return tuple(endpoints)


def _admin_tls(values: _Values) -> tuple[Path, Path] | None:
    cert = values.optional_text("admin_tls_cert_file")
    key = values.optional_text("admin_tls_key_file")
    if not cert and not key:
        return None
    if not cert or not key:
        raise ConfigError(
            "--admin-tls-cert-file and --admin-tls-key-file go together: give both or neither"
        )
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(
            f"{values.source('admin_tls_cert_file')}: cannot load {cert} with {key}: {error}"
        ) from None
    return Path(cert), Path(key)


def _admin_allowed_hosts(values: _Values) -> tuple[str, ...]:
    patterns: list[str] = []
    for item, source in _listed(values, "admin_allowed_host", "admin allowed hosts"):
        try:
            patterns.extend(parse_allowed_hosts(item))
        except ValueError as error:
            raise ConfigError(f"{source}: {error}") from None
    return tuple(dict.fromkeys(patterns))


def _host_policy(values: _Values, tuned: Tunables) -> HostPolicy:
    allowed = values.text("allowed_hosts", "")
    try:
        patterns = parse_allowed_hosts(allowed)
    except ValueError as error:
        raise ConfigError(f"{values.source('allowed_hosts')}: {error}") from None
    tls = tuned.backend_tls
    if tls is None:
        tls = values.optional_text("backend_ca_file") is not None
    return HostPolicy(require_tls=tls, allowed=patterns)


def _read_secret(values: _Values, name: str) -> str | None:
    path = values.optional_text(name)
    if not path:
        return None
    source = values.source(name)
    try:
        secret = Path(path).read_text(encoding="utf-8").strip()
    except OSError as error:
        raise ConfigError(f"{source}: cannot read {path}: {error.strerror}") from None
    if not secret:
        raise ConfigError(f"{source}: {path} is empty")
    return secret


def _password(values: _Values, env: Mapping[str, str]) -> str:
    from_file = _read_secret(values, "backend_password_file")
    if from_file is not None:
        return from_file
    return env.get(PASSWORD_ENV, "")


def _ssl_context(values: _Values) -> ssl.SSLContext | None:
    path = values.optional_text("backend_ca_file")
    if not path:
        return None
    try:
        return ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(
            f"{values.source('backend_ca_file')}: cannot load CA bundle {path}: {error}"
        ) from None
