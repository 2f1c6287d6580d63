"""The GremlinCluster spec, read once into typed values and mapped onto the core's settings.

The CRD (see :mod:`gremlinlb.operator.crd`) is generated from the same tables, and its
defaults come from the core's dataclasses: there is one source of truth for every default.
A spec the apiserver accepted can still be refused here (an object stored before a schema
change, or a combination the schema cannot express); :class:`SpecError` then names the field.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gremlinlb import __version__
from gremlinlb.core import (
    BalancerSettings,
    InvalidSettingError,
    Policy,
)

GROUP = "gremlinlb.io"
VERSION = "v1alpha1"
KIND = "GremlinCluster"
PLURAL = "gremlinclusters"

#: Pods with this label get the sidecar injected; its value names the GremlinCluster.
INJECT_LABEL = f"{GROUP}/inject"
#: Name of the injected (or hand-written) sidecar container and of its admin port.
SIDECAR_CONTAINER = "gremlinlb-sidecar"
ADMIN_PORT_NAME = "gremlinlb-admin"
TOKEN_KEY = "token"

DEFAULT_IMAGE = f"gremlinlb:{__version__}"
DEFAULT_PATH = "/gremlin"
DEFAULT_SERVICE_PORT = 8182
DEFAULT_GREMLIN_PORT = 8182
DEFAULT_ADMIN_PORT = 9901


class SpecError(ValueError):
    """A spec that cannot work; the message starts with the field path (``spec.x.y: ...``)."""


@dataclass(frozen=True, slots=True)
class SettingField:
    """One CR field that maps onto one core setting."""

    cr_name: str  # camelCase name in the CR
    core_name: str  # attribute of the core dataclass
    description: str
    minimum: float | None = None
    exclusive_minimum: bool = False


#: CR field -> core field, per section. The CRD schema and the mapping both come from these.
HEALTH_FIELDS: tuple[SettingField, ...] = (
    SettingField("interval", "interval", "Seconds between health probe rounds.", 0, True),
    SettingField("timeout", "timeout", "Seconds a probe may take before it fails.", 0, True),
    SettingField("rise", "rise", "Consecutive passing probes before a down host serves.", 1),
    SettingField("fall", "fall", "Consecutive failing probes before a host is taken out.", 1),
    SettingField("probeHealthy", "probe_healthy", "Probe healthy hosts too (finds a hung server)."),
    SettingField(
        "probe",
        "probe_script",
        "A Gremlin script to probe with; when absent, g.V().limit(1) is sent as bytecode.",
    ),
    SettingField(
        "enabled", "enabled", "Probe at all (false: hosts serve unprobed, return passively)."
    ),
    SettingField(
        "unhealthyInterval",
        "unhealthy_interval",
        "Seconds between probes of down, ejected and joining hosts.",
        0,
        True,
    ),
    SettingField(
        "outageInterval",
        "outage_interval",
        "Seconds between probes of down hosts while no host is healthy.",
        0,
        True,
    ),
)
BUFFER_FIELDS: tuple[SettingField, ...] = (
    SettingField("maxElements", "max_elements", "Requests that may wait while no host is up.", 0),
    SettingField("maxBytes", "max_bytes", "Total bytes of requests that may wait.", 0),
    SettingField("maxWait", "max_wait", "Seconds a request may wait (0 disables the buffer).", 0),
    SettingField(
        "releasePerHost",
        "release_per_host",
        "Waiting requests handed to one returning host before some of them finish.",
        1,
    ),
)
OUTLIER_FIELDS: tuple[SettingField, ...] = (
    SettingField(
        "consecutiveFailures",
        "consecutive_failures",
        "Lost connections or timeouts in a row that eject a host.",
        1,
    ),
    SettingField(
        "baseEjection", "base_ejection", "Seconds out, times the ejection count.", 0, True
    ),
    SettingField("maxEjection", "max_ejection", "Most seconds one ejection lasts.", 0, True),
    SettingField(
        "maxEjectedShare", "max_ejected_share", "Largest share of hosts ejected at once.", 0
    ),
    SettingField(
        "stuckFactor",
        "stuck_factor",
        "A host answering nothing for this many times its peers' latency is stuck.",
        1,
    ),
    SettingField("stuckFloor", "stuck_floor", "... and for at least this many seconds.", 0, True),
    SettingField(
        "slowFactor",
        "slow_factor",
        "A host this many times slower than its peers is slow.",
        1,
        True,
    ),
    SettingField("slowFloor", "slow_floor", "... and slower than this many seconds.", 0),
)
HEDGE_FIELDS: tuple[SettingField, ...] = (
    SettingField("enabled", "enabled", "Send a slow read to a second host too."),
    SettingField(
        "percentile", "percentile", "Hedge after this percentile of recent latencies.", 0.5
    ),
    SettingField("delayFloor", "delay_floor", "Never hedge sooner (seconds).", 0, True),
    SettingField("maxDelay", "max_delay", "Never hedge later (seconds).", 0, True),
)
BUDGET_FIELDS: tuple[SettingField, ...] = (
    SettingField("ratio", "ratio", "Extra requests (hedges, costly retries) per request.", 0),
    SettingField(
        "minPerSecond", "min_per_second", "Extra requests a second allowed in any case.", 0
    ),
    SettingField("window", "window", "Seconds the budget is counted over.", 0, True),
)
#: CR section -> core section: (CR name, core attribute, fields, description).
SECTIONS: tuple[tuple[str, str, tuple[SettingField, ...], str], ...] = (
    ("healthCheck", "health", HEALTH_FIELDS, "Active health checks run by every sidecar."),
    ("buffer", "buffer", BUFFER_FIELDS, "The bounded wait room used while no server is up."),
    (
        "outlierDetection",
        "outlier",
        OUTLIER_FIELDS,
        "When a server that passes probes is taken out for a while anyway.",
    ),
    ("hedging", "hedge", HEDGE_FIELDS, "Slow reads also sent to a second server."),
    (
        "extraRequestBudget",
        "budget",
        BUDGET_FIELDS,
        "How many hedges and costly retries may be sent on top of the requests.",
    ),
)
BALANCER_FIELDS: tuple[SettingField, ...] = (
    SettingField("maxAttempts", "max_attempts", "Tries per request, the first included.", 1),
    SettingField(
        "slowStart",
        "slow_start",
        "Seconds over which a returning server ramps up to a full share.",
        0,
    ),
    SettingField(
        "requestTimeout",
        "request_timeout",
        "Seconds without an answer before a request counts as lost.",
        0,
        True,
    ),
    SettingField(
        "connectTimeout", "connect_timeout", "Seconds to open a backend connection.", 0, True
    ),
    SettingField(
        "readRouting",
        "read_routing",
        "Where reads go when servers have roles: prefer_readers (writers only while no reader "
        "is healthy), readers_only, or any.",
    ),
    SettingField(
        "zoneAware",
        "zone_aware",
        "Prefer servers in the sidecar's own zone, spilling over to keep the load per server "
        "even (Envoy's zone-aware routing).",
    ),
)


@dataclass(frozen=True, slots=True)
class ServiceRef:
    name: str
    port: int = DEFAULT_SERVICE_PORT
    port_name: str | None = None


@dataclass(frozen=True, slots=True)
class SecretKeyRef:
    name: str
    key: str


@dataclass(frozen=True, slots=True)
class Credentials:
    secret: str
    username_key: str = "username"
    password_key: str = "password"


@dataclass(frozen=True, slots=True)
class SidecarSpec:
    image: str = DEFAULT_IMAGE
    image_pull_policy: str = "IfNotPresent"
    gremlin_port: int = DEFAULT_GREMLIN_PORT
    admin_port: int = DEFAULT_ADMIN_PORT
    resources: Mapping[str, Any] = field(default_factory=dict)
    log_format: str = "json"
    # The sidecar's memory bounds (None: its defaults); see sidecar/memory.py.
    memory_budget_bytes: int | None = None
    client_pause_bytes: int | None = None
    client_max_queued_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    service: ServiceRef
    path: str = DEFAULT_PATH
    traversal_source: str = "g"
    tls: bool = False
    ca: SecretKeyRef | None = None
    credentials: Credentials | None = None
    settings: BalancerSettings = field(default_factory=BalancerSettings)
    #: A Kubernetes label selector ({matchLabels, matchExpressions}) for the client pods.
    clients: Mapping[str, Any] = field(default_factory=dict)
    sidecar: SidecarSpec = field(default_factory=SidecarSpec)

    def host_address(self, ip: str, port: int) -> str:
        """What the sidecar is told for one endpoint: ``ip:port`` or a full ws(s):// URL."""
        host = f"[{ip}]" if ":" in ip else ip
        if not self.tls and self.path == DEFAULT_PATH:
            return f"{host}:{port}"
        scheme = "wss" if self.tls else "ws"
        return f"{scheme}://{host}:{port}{self.path}"


def default_client_selector(cluster_name: str) -> dict[str, Any]:
    return {"matchLabels": {INJECT_LABEL: cluster_name}}


def parse_spec(cluster_name: str, spec: Mapping[str, Any]) -> ClusterSpec:
    """Read a GremlinCluster ``spec``; raise :class:`SpecError` naming the bad field."""
    service = _mapping(spec, "service", required=True)
    service_name = _text(service, "name", "spec.service", required=True)
    port = _integer(service, "port", "spec.service", DEFAULT_SERVICE_PORT, 1, 65535)
    path = _text(spec, "path", "spec", default=DEFAULT_PATH)
    if not path.startswith("/"):
        raise SpecError(f"spec.path: must start with '/', got {path!r}")
    tls = _mapping(spec, "tls")
    ca_ref = _mapping(tls, "caSecretRef", "spec.tls")
    ca = (
        SecretKeyRef(
            _text(ca_ref, "name", "spec.tls.caSecretRef", required=True),
            _text(ca_ref, "key", "spec.tls.caSecretRef", default="ca.crt"),
        )
        if ca_ref
        else None
    )
    creds = _mapping(spec, "credentialsSecretRef")
    credentials = (
        Credentials(
            _text(creds, "name", "spec.credentialsSecretRef", required=True),
            _text(creds, "usernameKey", "spec.credentialsSecretRef", default="username"),
            _text(creds, "passwordKey", "spec.credentialsSecretRef", default="password"),
        )
        if creds
        else None
    )
    clients = _mapping(spec, "clients")
    selector = clients.get("selector")
    if selector is not None and not isinstance(selector, Mapping):
        raise SpecError("spec.clients.selector: must be a label selector object")
    if not selector:
        selector = default_client_selector(cluster_name)
    sidecar = _mapping(spec, "sidecar")
    resources = sidecar.get("resources") or {}
    if not isinstance(resources, Mapping):
        raise SpecError("spec.sidecar.resources: must be an object (requests/limits)")
    defaults = SidecarSpec()
    return ClusterSpec(
        service=ServiceRef(
            service_name, port, _text(service, "portName", "spec.service", default="") or None
        ),
        path=path,
        traversal_source=_text(spec, "traversalSource", "spec", default="g"),
        tls=bool(tls.get("enabled", False)),
        ca=ca,
        credentials=credentials,
        settings=settings_from_spec(spec),
        clients=dict(selector),
        sidecar=SidecarSpec(
            image=_text(sidecar, "image", "spec.sidecar", default=defaults.image),
            image_pull_policy=_text(
                sidecar, "imagePullPolicy", "spec.sidecar", default=defaults.image_pull_policy
            ),
            gremlin_port=_integer(
                sidecar, "gremlinPort", "spec.sidecar", defaults.gremlin_port, 1, 65535
            ),
            admin_port=_integer(
                sidecar, "adminPort", "spec.sidecar", defaults.admin_port, 1, 65535
            ),
            resources=dict(resources),
            log_format=_text(sidecar, "logFormat", "spec.sidecar", default=defaults.log_format),
            **{
                name: _optional_bytes(sidecar, key)
                for name, key in (
                    ("memory_budget_bytes", "memoryBudgetBytes"),
                    ("client_pause_bytes", "clientPauseBytes"),
                    ("client_max_queued_bytes", "clientMaxQueuedBytes"),
                )
            },
        ),
    )


def settings_from_spec(spec: Mapping[str, Any]) -> BalancerSettings:
    """The core settings a GremlinCluster asks for; absent fields keep the core's defaults."""
    base = BalancerSettings()
    try:
        sections = {
            core: _section(getattr(base, core), _mapping(spec, cr), fields, cr)
            for cr, core, fields, _ in SECTIONS
        }
        policy_text = spec.get("policy", base.policy.value)
        try:
            policy = Policy(policy_text)
        except ValueError:
            choices = ", ".join(p.value for p in Policy)
            raise SpecError(f"spec.policy: must be one of {choices}, got {policy_text!r}") from None
        top = _changes(spec, BALANCER_FIELDS, base, "spec")
        return dataclasses.replace(base, policy=policy, **sections, **top)
    except InvalidSettingError as error:
        raise SpecError(f"spec: {error}") from None


def settings_to_spec(settings: BalancerSettings) -> dict[str, Any]:
    """The CR fields for ``settings`` (the inverse of :func:`settings_from_spec`)."""
    out: dict[str, Any] = {"policy": settings.policy.value}
    for key, core, fields, _ in SECTIONS:
        section = getattr(settings, core)
        values = {f.cr_name: getattr(section, f.core_name) for f in fields}
        out[key] = {k: v for k, v in values.items() if v is not None}
    for f in BALANCER_FIELDS:
        value = getattr(settings, f.core_name)
        out[f.cr_name] = value.value if isinstance(value, enum.Enum) else value
    return out


def _section(
    base: Any, data: Mapping[str, Any], fields: tuple[SettingField, ...], name: str
) -> Any:
    return dataclasses.replace(base, **_changes(data, fields, base, f"spec.{name}"))


def _changes(
    data: Mapping[str, Any], fields: tuple[SettingField, ...], base: Any, where: str
) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for f in fields:
        if f.cr_name not in data or data[f.cr_name] is None:
            continue
        value = data[f.cr_name]
        current = getattr(base, f.core_name)
        path = f"{where}.{f.cr_name}"
        if isinstance(current, enum.Enum):
            choices = [c.value for c in type(current)]
            if value not in choices:
                raise SpecError(f"{path}: must be one of {', '.join(choices)}, got {value!r}")
            value = type(current)(value)
        elif isinstance(current, bool):
            if not isinstance(value, bool):
                raise SpecError(f"{path}: must be true or false, got {value!r}")
        elif isinstance(current, int):
            if not isinstance(value, int) or isinstance(value, bool):
                raise SpecError(f"{path}: must be an integer, got {value!r}")
        elif isinstance(current, float):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise SpecError(f"{path}: must be a number of seconds, got {value!r}")
            value = float(value)
        elif not isinstance(value, str) or not value.strip():
            raise SpecError(f"{path}: must be a non-empty string, got {value!r}")
        changes[f.core_name] = value
    return changes


def _mapping(
    data: Mapping[str, Any], key: str, where: str = "spec", *, required: bool = False
) -> Mapping[str, Any]:
    value = data.get(key)
    if value is None:
        if required:
            raise SpecError(f"{where}.{key}: required")
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(f"{where}.{key}: must be an object, got {value!r}")
    return value


def _text(
    data: Mapping[str, Any], key: str, where: str, *, default: str = "", required: bool = False
) -> str:
    value = data.get(key)
    if value is None or value == "":
        if required:
            raise SpecError(f"{where}.{key}: required")
        return default
    if not isinstance(value, str):
        raise SpecError(f"{where}.{key}: must be a string, got {value!r}")
    return value


def _optional_bytes(data: Mapping[str, Any], key: str) -> int | None:
    if data.get(key) is None:
        return None
    return _integer(data, key, "spec.sidecar", 0, 1, 2**40)


def _integer(
    data: Mapping[str, Any], key: str, where: str, default: int, low: int, high: int
) -> int:
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise SpecError(f"{where}.{key}: must be an integer from {low} to {high}, got {value!r}")
    return value
