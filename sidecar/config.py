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
import json
import re
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from gremlinlb.sidecar.options import (
    _BY_NAME,
    _TUNED,
    DEFAULT_ADMIN,
    DEFAULT_LISTEN,
    DEFAULT_TRAVERSAL_SOURCE,
    TUNABLES,
    BackendOptions,
    MemoryLimits,
    ProxyOptions,
    parse_allowed_hosts,
)

# The option tables moved to options.py (the operator reads them without the runtime);
# re-exported here for the sidecar's own users.
from gremlinlb.sidecar.options import OPTIONS as OPTIONS
from gremlinlb.sidecar.options import PASSWORD_ENV as PASSWORD_ENV
from gremlinlb.sidecar.options import TEXT_OPTIONS as TEXT_OPTIONS
from gremlinlb.sidecar.options import Address as Address
from gremlinlb.sidecar.options import EventLoop as EventLoop
from gremlinlb.sidecar.options import LogFormat as LogFormat
from gremlinlb.sidecar.options import Option as Option
from gremlinlb.sidecar.options import Tunables as Tunables
from gremlinlb.sidecar.options import env_name as env_name
from gremlinlb.sidecar.trust import HostPolicy

from gremlinlb.core import (
    BalancerSettings,
    Endpoint,
    GremlinLBError,
    InvalidEndpointError,
    parse_endpoint,
)
from gremlinlb.neptune import NeptuneSource
from gremlinlb.schema import (
    SETTINGS,
    Setting,
    SettingsError,
    env_of,
    from_flat,
)

_T = TypeVar("_T")


class ConfigError(GremlinLBError, ValueError):
    """A configuration value that cannot work; the message names the flag and the source."""


@dataclass(frozen=True, slots=True)
class OperatorWatch:
    """Where the operator serves this sidecar's cluster, and who this sidecar is."""

    url: str
    namespace: str
    cluster: str
    pod: str
    ca_file: Path | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.url.rstrip('/')}/v1/watch/{self.namespace}/{self.cluster}"


@dataclass(frozen=True)
class SidecarConfig:
    listen: Address = DEFAULT_LISTEN
    endpoints: tuple[Endpoint, ...] = ()
    admin: Address = DEFAULT_ADMIN
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
    traversal_source: str = DEFAULT_TRAVERSAL_SOURCE
    # more traversal sources to probe on every host (others are learned from requests)
    traversal_sources: tuple[str, ...] = ()
    event_loop: str = _TUNED.event_loop.value
    max_hosts: int = _TUNED.max_hosts
    #: This sidecar's own zone (its node's), which zone-aware routing prefers; None: unknown.
    zone: str | None = None
    #: Follow a Neptune cluster's instances instead of --endpoints (neptune.py).
    neptune: NeptuneSource | None = None
    #: Watch the operator for host lists (watch.py) instead of waiting for pushes.
    operator: OperatorWatch | None = None


_DEFAULT = SidecarConfig()


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
            mime_pool_idle=tuned.mime_pool_idle,
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
        neptune=_neptune(values),
        operator=_operator(values, tuned),
    )


def _operator(values: _Values, tuned: Tunables) -> OperatorWatch | None:
    url = (values.optional_text("operator_url") or "").strip()
    if not url:
        return None
    if not url.startswith(("https://", "http://")):
        raise ConfigError(
            f"{values.source('operator_url')}: expected the operator's https:// URL, got {url!r}"
        )
    if url.startswith("http://") and not tuned.allow_plain_http_watch:
        raise ConfigError(
            f"{values.source('operator_url')}: {url} is plain HTTP, so every poll would send "
            "the cluster's token in clear. Give the operator's https:// URL (and "
            "--operator-ca-file, the token Secret's ca.crt), or set --allow-plain-http-watch "
            "true if nobody else can read this pod's traffic"
        )
    cluster = (values.optional_text("operator_cluster") or "").strip()
    namespace, sep, name = cluster.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise ConfigError(
            f"{values.source('operator_cluster')}: with --operator-url give the GremlinCluster "
            f"as namespace/name, got {cluster!r}"
        )
    pod = (values.optional_text("pod_name") or "").strip()
    if not pod:
        raise ConfigError(
            f"{values.source('pod_name')}: with --operator-url give this pod's name (the "
            "downward API's metadata.name), so the operator can tell the sidecars apart"
        )
    if values.optional_text("token_file") is None:
        raise ConfigError(
            f"{values.source('operator_url')}: watching the operator needs the cluster's token: "
            "give --token-file"
        )
    ca_file = values.optional_text("operator_ca_file")
    if ca_file and not Path(ca_file).is_file():
        raise ConfigError(f"{values.source('operator_ca_file')}: no such file {ca_file}")
    return OperatorWatch(url, namespace, name, pod, Path(ca_file) if ca_file else None)


def _neptune(values: _Values) -> NeptuneSource | None:
    cluster = (values.optional_text("neptune_cluster") or "").strip()
    if not cluster:
        return None
    region = (values.optional_text("neptune_region") or "").strip()
    if not region:
        raise ConfigError(f"{values.source('neptune_cluster')}: give --neptune-region too")
    refresh_text = values.text("neptune_refresh", "60")
    try:
        refresh = float(refresh_text)
    except ValueError:
        refresh = 0.0
    if not refresh > 0:
        raise ConfigError(f"{values.source('neptune_refresh')}: must be > 0, got {refresh_text!r}")
    addresses: dict[str, str] = {}
    for item, source in _listed(values, "neptune_addresses", "neptune_addresses"):
        name, sep, address = item.partition("=")
        if not sep or not name.strip() or ":" not in address:
            raise ConfigError(f"{source}: expected instance=host:port, got {item!r}")
        addresses[name.strip()] = address.strip()
    scheme = values.text("neptune_scheme", "wss").strip()
    if scheme not in ("ws", "wss"):
        raise ConfigError(f"{values.source('neptune_scheme')}: must be ws or wss, got {scheme!r}")
    roles = frozenset(item for item, _ in _listed(values, "neptune_roles", "roles"))
    if not roles <= {"writer", "reader"}:
        wrong = ", ".join(sorted(roles - {"writer", "reader"}))
        raise ConfigError(
            f"{values.source('neptune_roles')}: roles are writer and reader, got {wrong}"
        )
    tags: dict[str, str] = {}
    for item, source in _listed(values, "neptune_tags", "neptune_tags"):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{source}: expected key=value (an instance tag), got {item!r}")
        tags[key.strip()] = value.strip()
    return NeptuneSource(
        cluster=cluster,
        scheme=scheme,
        region=region,
        endpoint_url=(values.optional_text("neptune_endpoint_url") or "").strip() or None,
        refresh=refresh,
        addresses=addresses,
        roles=roles,
        zones=frozenset(item for item, _ in _listed(values, "neptune_zones", "zones")),
        tags=tags,
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
