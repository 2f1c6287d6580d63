"""Sidecar configuration from flags, environment variables and a JSON file, in that order.

Every flag `--some-name` also reads `GREMLINLB_SOME_NAME` (for a pod spec) and the key
`some_name` of the `--config` file. Values are checked once, here, with messages that name the
flag and where its value came from, so a typo fails at start-up rather than at the first request.
"""

from __future__ import annotations

import argparse
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gremlinlb.sidecar.backend import DEFAULT_MAX_MESSAGE_BYTES, BackendOptions
from gremlinlb.sidecar.hostlist import DEFAULT_MAX_HOSTS
from gremlinlb.sidecar.memory import MemoryLimits
from gremlinlb.sidecar.proxy import ProxyOptions
from gremlinlb.sidecar.trust import HostPolicy, parse_allowed_hosts

from gremlinlb.core import (
    BalancerSettings,
    BufferSettings,
    Endpoint,
    HealthCheckSettings,
    InvalidEndpointError,
    InvalidSettingError,
    Policy,
    ReadRouting,
    parse_endpoint,
)

ENV_PREFIX = "GREMLINLB_"


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the flag and the source."""


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
    host_policy: HostPolicy = field(default_factory=HostPolicy)
    #: (certificate, key): the admin API serves HTTPS.
    admin_tls: tuple[Path, Path] | None = None
    state_dir: Path | None = None
    settings: BalancerSettings = field(default_factory=BalancerSettings)
    backend: BackendOptions = field(default_factory=BackendOptions)
    proxy: ProxyOptions = field(default_factory=ProxyOptions)
    grace_period: float = 15.0
    log_format: str = "text"
    traversal_source: str = "g"
    event_loop: str = "auto"
    max_hosts: int = DEFAULT_MAX_HOSTS
    #: This sidecar's own zone (its node's), which zone-aware routing prefers; None: unknown.
    zone: str | None = None


@dataclass(frozen=True, slots=True)
class Option:
    name: str  # flag without dashes, underscores: "health_interval"
    help: str
    metavar: str = "VALUE"

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


OPTIONS: tuple[Option, ...] = (
    Option("listen", "host:port of the Gremlin endpoint (default 127.0.0.1:8182)", "HOST:PORT"),
    Option("endpoints", "comma-separated Gremlin Servers, host:port or ws(s):// URLs", "LIST"),
    Option("admin", "host:port of the admin API (default 127.0.0.1:9901)", "HOST:PORT"),
    Option("token_file", "file holding the bearer token PUT /v1/hosts requires", "FILE"),
    Option("state_dir", "directory where the last accepted host list is kept", "DIR"),
    Option("backend_username", "SASL PLAIN user for the backends", "USER"),
    Option(
        "backend_password_file",
        "file holding the backend password (or set GREMLINLB_BACKEND_PASSWORD)",
        "FILE",
    ),
    Option("backend_ca_file", "CA bundle (PEM) to verify wss:// backends with", "FILE"),
    Option(
        "backend_tls",
        "backends only over wss://: refuse ws:// hosts (default: true with --backend-ca-file)",
        "BOOL",
    ),
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
    Option("max_message_bytes", "largest frame accepted either way (default 10 MiB)", "BYTES"),
    Option("connections_per_host", "multiplexed connections per backend (default 2)", "N"),
    Option("max_in_flight_per_connection", "requests at once on one connection (default 128)", "N"),
    Option("policy", "round_robin (default), least_in_flight or peak_ewma", "NAME"),
    Option(
        "read_routing",
        "where reads go when hosts have roles: prefer_readers (default), readers_only or any",
        "NAME",
    ),
    Option("zone", "this sidecar's zone; hosts listed with ?zone= in it are preferred", "ZONE"),
    Option("zone_aware", "prefer hosts in --zone: true (default) or false", "BOOL"),
    Option("max_attempts", "tries per request, the first included (default 3)", "N"),
    Option("request_timeout", "seconds without an answer frame before a request fails", "SEC"),
    Option("connect_timeout", "seconds to open a backend connection (default 5)", "SEC"),
    Option("health_interval", "seconds between health probes (default 10)", "SEC"),
    Option("health_timeout", "seconds a probe may take (default 5)", "SEC"),
    Option("rise", "passing probes before a down host serves again (default 1)", "N"),
    Option("fall", "failing probes before a healthy host is taken out (default 2)", "N"),
    Option("probe_script", "a script to probe with instead of g.V().limit(1) bytecode", "TEXT"),
    Option("probe_healthy", "also probe healthy hosts: true (default) or false", "BOOL"),
    Option(
        "unhealthy_interval",
        "seconds between probes of down, ejected and joining hosts (default 1)",
        "SEC",
    ),
    Option(
        "consecutive_failures",
        "lost connections or timeouts in a row that eject a host (default 5)",
        "N",
    ),
    Option("slow_start", "seconds a returning host takes to reach a full share (default 5)", "SEC"),
    Option("hedge", "send slow reads to a second host too: true (default) or false", "BOOL"),
    Option("hedge_max_delay", "latest a slow read is hedged, in seconds (default 0.5)", "SEC"),
    Option(
        "extra_budget_ratio",
        "hedges and costly retries allowed per request, over 10 s (default 0.2)",
        "RATIO",
    ),
    Option("buffer_max_elements", "requests that may wait while no host is healthy", "N"),
    Option("buffer_max_bytes", "bytes of requests that may wait", "BYTES"),
    Option("buffer_max_wait", "seconds a request may wait for a healthy host", "SEC"),
    Option(
        "grace_period",
        "seconds open connections keep being served after SIGTERM (default 15)",
        "SEC",
    ),
    Option("max_hosts", "most hosts a host list may hold (default 1000)", "N"),
    Option(
        "memory_budget_bytes",
        "bytes held for all clients (queued answers, requests in flight) (default 96 MiB)",
        "BYTES",
    ),
    Option(
        "client_pause_bytes",
        "bytes held for one client above which its requests are not read (default 4 MiB)",
        "BYTES",
    ),
    Option(
        "client_max_queued_bytes",
        "unread answer bytes after which a client is cut off (default 32 MiB)",
        "BYTES",
    ),
    Option("max_requests_per_client", "requests in flight per connection (default 1024)", "N"),
    Option(
        "handshake_timeout",
        "seconds a new connection may take to finish its WebSocket upgrade (default 10)",
        "SEC",
    ),
    Option("log_format", "text (default) or json", "FORMAT"),
    Option("traversal_source", "traversal source the health probe uses (default g)", "NAME"),
    Option("event_loop", "auto (uvloop when installed, default), uvloop or asyncio", "NAME"),
)
_NAMES = {option.name for option in OPTIONS}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="JSON file with any of these settings")
    for option in OPTIONS:
        parser.add_argument(
            option.flag,
            dest=option.name,
            metavar=option.metavar,
            default=None,
            help=f"{option.help} [env {option.env}]",
        )


class _Values:
    """Looks a setting up in flags, then the environment, then the config file."""

    def __init__(
        self, flags: Mapping[str, Any], env: Mapping[str, str], file: Mapping[str, Any]
    ) -> None:
        self._flags = flags
        self._env = env
        self._file = file

    def raw(self, name: str) -> tuple[Any, str] | None:
        option = next(o for o in OPTIONS if o.name == name)
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

    def integer(self, name: str, default: int, minimum: int = 0) -> int:
        found = self.raw(name)
        if found is None:
            return default
        value, source = found
        try:
            number = value if isinstance(value, int) and not isinstance(value, bool) else int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: must be an integer, got {value!r}") from None
        if number < minimum:
            raise ConfigError(f"{source}: must be >= {minimum}, got {number}")
        return number

    def number(self, name: str, default: float) -> float:
        found = self.raw(name)
        if found is None:
            return default
        value, source = found
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: must be a number of seconds, got {value!r}") from None

    def boolean(self, name: str, default: bool) -> bool:
        found = self.raw(name)
        if found is None:
            return default
        value, source = found
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{source}: must be true or false, got {value!r}")

    def source(self, name: str) -> str:
        found = self.raw(name)
        return found[1] if found else name


def load_config(
    flags: Mapping[str, Any], env: Mapping[str, str], config_file: str | None = None
) -> SidecarConfig:
    """Build and check the whole configuration; raise ConfigError saying what is wrong."""
    file_data = _read_config_file(config_file or env.get(ENV_PREFIX + "CONFIG") or None)
    values = _Values(flags, env, file_data)
    listen = parse_address(values.text("listen", "127.0.0.1:8182"), values.source("listen"))
    admin = parse_address(values.text("admin", "127.0.0.1:9901"), values.source("admin"))
    endpoints = _endpoints(values)
    host_policy = _host_policy(values)
    refusal = host_policy.refusal(endpoints, "endpoints")
    if refusal is not None:
        raise ConfigError(f"{values.source('endpoints')}: {refusal}")
    settings = _settings(values)
    max_message_bytes = values.integer("max_message_bytes", DEFAULT_MAX_MESSAGE_BYTES, 1024)
    try:
        backend = BackendOptions(
            username=values.text("backend_username", ""),
            password=_password(values, env),
            ssl_context=_ssl_context(values),
            max_message_bytes=max_message_bytes,
            connections_per_host=values.integer("connections_per_host", 2, 1),
            max_in_flight_per_connection=values.integer("max_in_flight_per_connection", 128, 1),
        )
    except ValueError as error:
        raise ConfigError(str(error)) from None
    log_format = values.text("log_format", "text")
    if log_format not in ("text", "json"):
        raise ConfigError(
            f"{values.source('log_format')}: must be text or json, got {log_format!r}"
        )
    grace = values.number("grace_period", 15.0)
    if grace < 0:
        raise ConfigError(f"{values.source('grace_period')}: must be >= 0 seconds, got {grace}")
    event_loop = values.text("event_loop", "auto")
    if event_loop not in ("auto", "uvloop", "asyncio"):
        raise ConfigError(
            f"{values.source('event_loop')}: must be auto, uvloop or asyncio, got {event_loop!r}"
        )
    state_dir = values.optional_text("state_dir")
    token_file = values.optional_text("token_file")
    handshake_timeout = values.number("handshake_timeout", 10.0)
    if handshake_timeout <= 0:
        raise ConfigError(
            f"{values.source('handshake_timeout')}: must be > 0 seconds, got {handshake_timeout}"
        )
    return SidecarConfig(
        listen=listen,
        endpoints=endpoints,
        admin=admin,
        token=_read_secret(values, "token_file"),
        token_file=Path(token_file) if token_file else None,
        admin_tls=_admin_tls(values),
        host_policy=host_policy,
        state_dir=Path(state_dir) if state_dir else None,
        settings=settings,
        backend=backend,
        proxy=ProxyOptions(
            max_message_bytes=max_message_bytes,
            memory=_memory_limits(values),
            handshake_timeout=handshake_timeout,
        ),
        grace_period=grace,
        zone=(values.optional_text("zone") or "").strip() or None,
        log_format=log_format,
        traversal_source=values.text("traversal_source", "g"),
        event_loop=event_loop,
        max_hosts=values.integer("max_hosts", DEFAULT_MAX_HOSTS, 1),
    )


def _memory_limits(values: _Values) -> MemoryLimits:
    defaults = MemoryLimits()
    budget = values.integer("memory_budget_bytes", defaults.budget_bytes, 1)
    pause = values.integer("client_pause_bytes", defaults.client_pause_bytes, 1)
    cap = values.integer("client_max_queued_bytes", defaults.client_max_queued_bytes, 1)
    requests = values.integer("max_requests_per_client", defaults.max_requests_per_client, 1)
    try:
        return MemoryLimits(budget, pause, cap, requests)
    except ValueError as error:
        raise ConfigError(str(error)) from None


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
    unknown = sorted(set(normalized) - _NAMES)
    if unknown:
        raise ConfigError(
            f"--config {path}: unknown setting(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(_NAMES))}"
        )
    return normalized


def _endpoints(values: _Values) -> tuple[Endpoint, ...]:
    found = values.raw("endpoints")
    if found is None:
        return ()
    value, source = found
    items = value if isinstance(value, list) else str(value).split(",")
    endpoints: list[Endpoint] = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"{source}: endpoints must be strings, got {item!r}")
        if not item.strip():
            continue
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


def _host_policy(values: _Values) -> HostPolicy:
    allowed = values.text("allowed_hosts", "")
    try:
        patterns = parse_allowed_hosts(allowed)
    except ValueError as error:
        raise ConfigError(f"{values.source('allowed_hosts')}: {error}") from None
    tls = values.boolean("backend_tls", values.optional_text("backend_ca_file") is not None)
    return HostPolicy(require_tls=tls, allowed=patterns)


def _settings(values: _Values) -> BalancerSettings:
    defaults = BalancerSettings()
    policy_text = values.text("policy", defaults.policy.value)
    try:
        policy = Policy(policy_text)
    except ValueError:
        choices = ", ".join(p.value for p in Policy)
        raise ConfigError(
            f"{values.source('policy')}: must be one of {choices}, got {policy_text!r}"
        ) from None
    read_text = values.text("read_routing", defaults.read_routing.value)
    try:
        read_routing = ReadRouting(read_text)
    except ValueError:
        choices = ", ".join(r.value for r in ReadRouting)
        raise ConfigError(
            f"{values.source('read_routing')}: must be one of {choices}, got {read_text!r}"
        ) from None
    health = defaults.health
    buffer = defaults.buffer
    try:
        return BalancerSettings(
            policy=policy,
            read_routing=read_routing,
            zone_aware=values.boolean("zone_aware", defaults.zone_aware),
            health=HealthCheckSettings(
                interval=values.number("health_interval", health.interval),
                timeout=values.number("health_timeout", health.timeout),
                rise=values.integer("rise", health.rise),
                fall=values.integer("fall", health.fall),
                probe_healthy=values.boolean("probe_healthy", health.probe_healthy),
                probe_script=values.optional_text("probe_script"),
                unhealthy_interval=values.number("unhealthy_interval", health.unhealthy_interval),
                outage_interval=min(
                    health.outage_interval,
                    values.number("unhealthy_interval", health.unhealthy_interval),
                ),
            ),
            outlier=replace(
                defaults.outlier,
                consecutive_failures=values.integer(
                    "consecutive_failures", defaults.outlier.consecutive_failures, 1
                ),
            ),
            hedge=replace(
                defaults.hedge,
                enabled=values.boolean("hedge", defaults.hedge.enabled),
                max_delay=values.number("hedge_max_delay", defaults.hedge.max_delay),
            ),
            budget=replace(
                defaults.budget,
                ratio=values.number("extra_budget_ratio", defaults.budget.ratio),
            ),
            slow_start=values.number("slow_start", defaults.slow_start),
            buffer=BufferSettings(
                max_elements=values.integer("buffer_max_elements", buffer.max_elements),
                max_bytes=values.integer("buffer_max_bytes", buffer.max_bytes),
                max_wait=values.number("buffer_max_wait", buffer.max_wait),
            ),
            max_attempts=values.integer("max_attempts", defaults.max_attempts),
            request_timeout=values.number("request_timeout", defaults.request_timeout),
            connect_timeout=values.number("connect_timeout", defaults.connect_timeout),
        )
    except InvalidSettingError as error:
        raise ConfigError(str(error)) from None


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
    return env.get(ENV_PREFIX + "BACKEND_PASSWORD", "")


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
