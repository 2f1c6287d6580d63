"""The GremlinCluster spec, read once into typed values and mapped onto the core's settings.

The settings' fields, and their part of the CRD (see :mod:`gremlinlb.operator.crd`), come from
the core's dataclasses through :mod:`gremlinlb.schema`: one source of truth for every default.
A spec the apiserver accepted can still be refused here (an object stored before a schema
change, or a combination the schema cannot express); :class:`SpecError` then names the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from gremlinlb.sidecar.options import TUNABLES

from gremlinlb import __version__
from gremlinlb.core import BalancerSettings, GremlinLBError
from gremlinlb.neptune import NeptuneSource
from gremlinlb.schema import Setting, SettingsError, convert, from_document, to_document

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
#: spec.neptune.refreshSeconds: the Java peer's interval, and a floor that spares the API.
NEPTUNE_REFRESH = 60.0
NEPTUNE_REFRESH_FLOOR = 1.0

#: The apiserver's messages (CEL rules of the CRD) and the operator's, when a spec names both
#: or neither source of its host list.
BOTH_SOURCES = (
    "spec.service and spec.neptune are both set: a GremlinCluster follows either a Service's "
    "endpoints or a Neptune cluster's instances; remove one of them"
)
NO_SOURCE = (
    "spec.service or spec.neptune is required: name the Service in front of the Gremlin "
    "Servers (service.name), or the Neptune cluster to follow (neptune.clusterIdentifier and "
    "neptune.region)"
)
ROLES_WITH_NEPTUNE = (
    "spec.roles does not apply with spec.neptune: Neptune's API says which instance is the "
    "writer; remove spec.roles"
)


class SpecError(GremlinLBError, ValueError):
    """A spec that cannot work; the message starts with the field path (``spec.x.y: ...``)."""


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
    # The sidecar's memory bounds (None: its defaults); see sidecar/memory.py. One field per
    # entry of SIDECAR_MEMORY, named as the sidecar's option.
    memory_budget_bytes: int | None = None
    client_pause_bytes: int | None = None
    client_max_queued_bytes: int | None = None
    #: Push (bearer token included) to client pods whose sidecar serves its admin API over
    #: plain HTTP (no admin-TLS annotation). Off: such pods get no push; see docs/kubernetes.md.
    allow_plain_http_push: bool = False


#: The sidecar options a GremlinCluster sets under spec.sidecar (their CRD schema, names and
#: checks come from the sidecar's own option table).
SIDECAR_MEMORY: tuple[Setting, ...] = tuple(
    option
    for option in TUNABLES
    if option.flat in ("memory_budget_bytes", "client_pause_bytes", "client_max_queued_bytes")
)


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    #: Where the host list comes from: a Service's EndpointSlices, or (None) spec.neptune.
    service: ServiceRef | None
    path: str = DEFAULT_PATH
    traversal_source: str = "g"
    traversal_sources: tuple[str, ...] = ()
    tls: bool = False
    ca: SecretKeyRef | None = None
    credentials: Credentials | None = None
    settings: BalancerSettings = field(default_factory=BalancerSettings)
    #: A Kubernetes label selector ({matchLabels, matchExpressions}) for the client pods.
    clients: Mapping[str, Any] = field(default_factory=dict)
    sidecar: SidecarSpec = field(default_factory=SidecarSpec)
    #: A second Service selecting the writers among the servers (None: every server does both).
    writer_service: str | None = None
    #: The Neptune cluster whose writer and readers are the host list (instead of a Service).
    neptune: NeptuneSource | None = None

    def host_address(
        self, ip: str, port: int, role: str | None = None, zone: str | None = None
    ) -> str:
        """What the sidecar is told for one endpoint: ``ip:port`` or a full ws(s):// URL, with
        ``?role=...&zone=...`` when it has a role or a zone."""
        host = f"[{ip}]" if ":" in ip else ip
        if not self.tls and self.path == DEFAULT_PATH:
            address = f"{host}:{port}"
        else:
            scheme = "wss" if self.tls else "ws"
            address = f"{scheme}://{host}:{port}{self.path}"
        query = {k: v for k, v in (("role", role), ("zone", zone)) if v}
        return f"{address}?{urlencode(query)}" if query else address


def default_client_selector(cluster_name: str) -> dict[str, Any]:
    return {"matchLabels": {INJECT_LABEL: cluster_name}}


def parse_spec(cluster_name: str, spec: Mapping[str, Any]) -> ClusterSpec:
    """Read a GremlinCluster ``spec``; raise :class:`SpecError` naming the bad field."""
    service = _mapping(spec, "service")
    neptune = neptune_from_spec(_mapping(spec, "neptune"))
    if service and neptune is not None:
        raise SpecError(BOTH_SOURCES)
    if not service and neptune is None:
        raise SpecError(NO_SOURCE)
    roles = _mapping(spec, "roles")
    if roles and neptune is not None:
        raise SpecError(ROLES_WITH_NEPTUNE)
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
        service=_service(service) if neptune is None else None,
        neptune=neptune,
        path=path,
        traversal_source=_text(spec, "traversalSource", "spec", default="g"),
        traversal_sources=_names(spec, "traversalSources", "spec"),
        tls=bool(tls.get("enabled", False)),
        ca=ca,
        credentials=credentials,
        settings=settings_from_spec(spec),
        clients=dict(selector),
        writer_service=_text(roles, "writerService", "spec.roles") or None,
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
            allow_plain_http_push=_flag(sidecar, "allowPlainHttpPush", "spec.sidecar"),
            **{option.flat: _optional_tunable(sidecar, option) for option in SIDECAR_MEMORY},
        ),
    )


def _service(service: Mapping[str, Any]) -> ServiceRef:
    return ServiceRef(
        _text(service, "name", "spec.service", required=True),
        _integer(service, "port", "spec.service", DEFAULT_SERVICE_PORT, 1, 65535),
        _text(service, "portName", "spec.service", default="") or None,
    )


def neptune_from_spec(neptune: Mapping[str, Any]) -> NeptuneSource | None:
    """spec.neptune as gremlinlb.neptune reads it (None: not set)."""
    if not neptune:
        return None
    where = "spec.neptune"
    refresh = neptune.get("refreshSeconds", NEPTUNE_REFRESH)
    if (
        not isinstance(refresh, int | float)
        or isinstance(refresh, bool)
        or refresh < NEPTUNE_REFRESH_FLOOR
    ):
        raise SpecError(
            f"{where}.refreshSeconds: must be a number of seconds >= {NEPTUNE_REFRESH_FLOOR:g}, "
            f"got {refresh!r}"
        )
    scheme = _text(neptune, "scheme", where, default="wss")
    if scheme not in ("ws", "wss"):
        raise SpecError(f"{where}.scheme: must be wss (Neptune) or ws (a stand-in), got {scheme!r}")
    addresses = _mapping(neptune, "addresses", where)
    for instance, address in addresses.items():
        if not isinstance(address, str) or ":" not in address:
            raise SpecError(
                f"{where}.addresses.{instance}: must be host:port, the address that instance "
                f"is reached at, got {address!r}"
            )
    tags = _mapping(neptune, "tags", where)
    if not all(isinstance(value, str) for value in tags.values()):
        raise SpecError(f"{where}.tags: each tag's value must be a string, got {dict(tags)!r}")
    return NeptuneSource(
        cluster=_text(neptune, "clusterIdentifier", where, required=True),
        region=_text(neptune, "region", where, required=True),
        endpoint_url=_text(neptune, "endpointUrl", where) or None,
        refresh=float(refresh),
        addresses=dict(addresses),
        scheme=scheme,
        roles=_choices(neptune, "roles", where, ("writer", "reader")),
        zones=_choices(neptune, "zones", where),
        tags=dict(tags),
    )


def _choices(
    data: Mapping[str, Any], key: str, where: str, allowed: tuple[str, ...] = ()
) -> frozenset[str]:
    """A selector's list of strings (of `allowed`, when given); empty: select any."""
    values = _names(data, key, where)
    unknown = sorted(set(values) - set(allowed)) if allowed else []
    if unknown:
        raise SpecError(f"{where}.{key}: {', '.join(unknown)} not one of {', '.join(allowed)}")
    return frozenset(values)


def settings_from_spec(spec: Mapping[str, Any]) -> BalancerSettings:
    """The core settings a GremlinCluster asks for; absent fields keep the core's defaults."""
    try:
        return from_document(spec, BalancerSettings(), "spec", cr=True)
    except SettingsError as error:
        raise SpecError(str(error)) from None


def settings_to_spec(settings: BalancerSettings) -> dict[str, Any]:
    """The CR fields for ``settings`` (the inverse of :func:`settings_from_spec`)."""
    return to_document(settings, cr=True)


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


def _names(data: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SpecError(f"{where}.{key}: must be a list of names, got {value!r}")
    return tuple(value)


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


def _flag(data: Mapping[str, Any], key: str, where: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise SpecError(f"{where}.{key}: must be true or false, got {value!r}")
    return value


def _optional_tunable(data: Mapping[str, Any], option: Setting) -> Any:
    """A sidecar option the cluster sets (None: the sidecar's own default)."""
    key = option.cr_path[-1]
    if data.get(key) is None:
        return None
    try:
        return convert(option, data[key], f"spec.sidecar.{key}")
    except SettingsError as error:
        raise SpecError(str(error)) from None


def _integer(
    data: Mapping[str, Any], key: str, where: str, default: int, low: int, high: int
) -> int:
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise SpecError(f"{where}.{key}: must be an integer from {low} to {high}, got {value!r}")
    return value
