"""The host list the admin API replaces: validation, generations, and the state file.

Validation is all-or-nothing and happens before anything changes, so a bad body leaves the
sidecar exactly as it was. Generations make concurrent writers safe: an operator that lost a
race (or replays an old list) gets 409 and the current generation instead of undoing newer work.

A list may carry `client_zones`, how many clients of these hosts run in each zone (the
operator counts the sidecars per zone): zone-aware routing spills what an overloaded zone
cannot carry by it (see gremlinlb.core.topology). It is replaced with the list, like the hosts.

Whoever holds the token decides where traffic goes, so a host must be a plain DNS name or IP
address with a clean path: no NUL bytes, quotes or dot segments (they end up in logs, metrics
and the state file), and never the sidecar's own ports on a local address (a loop, or the
admin API answering Gremlin requests). The list is bounded (`HostRules.max_hosts`) so one PUT
cannot hold the sidecar busy for long.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gremlinlb.sidecar.addresses import IP, address_of, identity, is_local, is_loopback_name
from gremlinlb.sidecar.options import DEFAULT_MAX_HOSTS

from gremlinlb.core import BalancerSettings, Endpoint, InvalidEndpointError, parse_endpoint
from gremlinlb.core.errors import GremlinLBError
from gremlinlb.core.topology import client_zones
from gremlinlb.schema import SettingsError, from_document, to_document

STATE_FILE = "hosts.json"
#: At most this many zones in `client_zones` (clouds have a few per region).
MAX_CLIENT_ZONES = 256
#: The longest zone name taken (a Kubernetes label value is at most 63 characters).
MAX_ZONE_NAME = 253
FIELDS = ("generation", "hosts", "settings", "client_zones")

_DNS_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
_PATH = re.compile(r"(/[A-Za-z0-9._~-]+)*/?")


class BadUpdateError(GremlinLBError, ValueError):
    """A PUT /v1/hosts body that cannot be applied; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class HostList:
    generation: int
    hosts: tuple[Endpoint, ...]
    settings: BalancerSettings
    #: Clients per zone (zones with none left out), or None: not given.
    client_zones: Mapping[str, int] | None = None

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "generation": self.generation,
            "hosts": [e.text for e in self.hosts],
            "settings": to_document(self.settings),
        }
        if self.client_zones:
            document["client_zones"] = dict(self.client_zones)
        return document


@dataclass(frozen=True, slots=True)
class HostRules:
    """What a host list may hold: how many hosts, and which ports on a local address are the
    sidecar's own (its Gremlin endpoint and its admin API). Local: loopback, unspecified, or
    one of ``own_addresses`` (the addresses it listens on, the one a PUT arrived at)."""

    max_hosts: int = DEFAULT_MAX_HOSTS
    own_ports: Collection[int] = ()
    own_addresses: Collection[IP] = ()

    def is_own(self, address: IP, port: int) -> bool:
        """Whether ``address:port`` reaches this sidecar itself."""
        return port in self.own_ports and (is_local(address) or address in self.own_addresses)


def parse_body(text: str | bytes) -> Any:
    """The JSON of a request body, or BadUpdateError (also for JSON nested too deeply to read,
    and for bytes that are not UTF-8: json.loads would guess UTF-16 or UTF-32 from them)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as error:
            raise BadUpdateError(
                f"the body is not UTF-8 ({error.reason} at byte {error.start}); send the JSON "
                "encoded as UTF-8"
            ) from None
    try:
        return json.loads(text)
    except RecursionError:
        raise BadUpdateError(
            "the body is JSON nested too deeply to read; send {generation, hosts, settings?}"
        ) from None
    except ValueError as error:
        raise BadUpdateError(f"the body is not JSON: {error}") from None


def check_endpoint(endpoint: Endpoint, rules: HostRules) -> None:
    """Refuse a host name or path that is not plain, and the sidecar's own ports."""
    host = endpoint.host
    literal = address_of(host)
    if literal is None:
        bad = sorted(
            {repr(ch) for ch in host if not (ch.isascii() and (ch.isalnum() or ch in "-._"))}
        )
        if bad:
            raise BadUpdateError(
                f"host name {host!r} contains {', '.join(bad)}, which cannot be part of a host "
                "name; give a DNS name (letters, digits, '-', '.') or an IP address"
            )
        labels = host.rstrip(".").split(".")
        if len(host) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
            raise BadUpdateError(
                f"host name {host!r} is not a valid DNS name (labels of 1-63 letters, digits or "
                "'-', not starting or ending with '-')"
            )
    segments = endpoint.path.split("/")
    if not _PATH.fullmatch(endpoint.path) or "." in segments or ".." in segments:
        raise BadUpdateError(
            f"path {endpoint.path!r} of {endpoint.address} is not a plain path (letters, digits, "
            "'-', '_', '.', '~' between slashes, no '.' or '..' segments); Gremlin Server "
            "listens on /gremlin"
        )
    if literal is None and is_loopback_name(host) and endpoint.port in rules.own_ports:
        raise own_port_error(endpoint, "a loopback name")
    if literal is not None and rules.is_own(literal, endpoint.port):
        raise own_port_error(endpoint, literal)


def own_port_error(endpoint: Endpoint, address: IP | str) -> BadUpdateError:
    """The refusal of a host that is this sidecar itself, naming the address it is."""
    spelled = "" if endpoint.host == str(address) else f" (that is {address})"
    return BadUpdateError(
        f"{endpoint.address}{spelled} is this sidecar's own port; a backend must be a Gremlin "
        "Server, and this list would send requests back into the sidecar"
    )


def parse_update(body: Any, current: BalancerSettings, rules: HostRules | None = None) -> HostList:
    """Validate `{generation, hosts, settings?, client_zones?}` fully; raise BadUpdateError
    naming the field."""
    rules = rules or HostRules()
    if not isinstance(body, dict):
        raise BadUpdateError(
            "the body must be a JSON object {generation, hosts, settings?, client_zones?}"
        )
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise BadUpdateError(
            f"unknown field(s) {', '.join(unknown)}; expected generation, hosts, settings and "
            "client_zones"
        )
    generation = body.get("generation")
    if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
        raise BadUpdateError(f"generation must be an integer >= 0, got {generation!r}")
    hosts = body.get("hosts")
    if not isinstance(hosts, list):
        raise BadUpdateError(f"hosts must be a list of 'host:port' strings, got {hosts!r}")
    if len(hosts) > rules.max_hosts:
        raise BadUpdateError(
            f"hosts has {len(hosts)} entries, more than the limit of {rules.max_hosts}; split "
            "the fleet over several GremlinClusters or raise --max-hosts"
        )
    endpoints: list[Endpoint] = []
    seen: dict[tuple[object, ...], int] = {}
    for index, text in enumerate(hosts):
        try:
            endpoint = parse_endpoint(text)
            check_endpoint(endpoint, rules)
        except (InvalidEndpointError, BadUpdateError) as error:
            raise BadUpdateError(f"hosts[{index}]: {error}") from None
        # Two spellings of one address (10.0.0.1 and [::ffff:10.0.0.1]) are one server.
        key = (endpoint.scheme, identity(endpoint.host), endpoint.port, endpoint.path)
        if key in seen:
            first = endpoints[seen[key]]
            again = "" if first.address == endpoint.address else f" (as {first.address})"
            raise BadUpdateError(f"hosts[{index}]: {endpoint.address} is listed twice{again}")
        seen[key] = index
        endpoints.append(endpoint)
    settings = current
    if body.get("settings") is not None:
        try:
            settings = from_document(body["settings"], current)
        except SettingsError as error:
            raise BadUpdateError(str(error)) from None
    return HostList(generation, tuple(endpoints), settings, parse_client_zones(body))


def parse_client_zones(body: Mapping[str, Any]) -> dict[str, int] | None:
    """`client_zones`: an object of zone name -> number of clients there (None when absent)."""
    value = body.get("client_zones")
    if value is None:
        return None
    example = 'e.g. {"us-east-1a": 3, "us-east-1b": 1}'
    if not isinstance(value, dict):
        raise BadUpdateError(
            f"client_zones must be an object of zone name -> number of clients, {example}; "
            f"got {value!r}"
        )
    if len(value) > MAX_CLIENT_ZONES:
        raise BadUpdateError(
            f"client_zones names {len(value)} zones, more than the limit of {MAX_CLIENT_ZONES}"
        )
    for zone in value:
        if len(zone) > MAX_ZONE_NAME or not zone.isprintable():
            raise BadUpdateError(
                f"client_zones: zone name {zone!r} must be 1 to {MAX_ZONE_NAME} printable "
                f"characters, {example}"
            )
    try:
        return client_zones(value)
    except ValueError as error:  # a blank name, a count that is not an integer >= 0
        raise BadUpdateError(f"client_zones: {error}, {example}") from None


def load_state(
    state_dir: Path, defaults: BalancerSettings, rules: HostRules | None = None
) -> HostList | None:
    """The last accepted host list, or None if none was saved yet."""
    path = state_dir / STATE_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        return parse_update(parse_body(text), defaults, rules)
    except BadUpdateError as error:
        raise BadUpdateError(
            f"the saved host list {path} cannot be read ({error}); fix or delete it"
        ) from None


def save_state(state_dir: Path, hosts: HostList) -> None:
    """Write atomically (temp file, fsync, rename, fsync the directory): a crash leaves either
    the old list or the new one, never half of one."""
    state_dir.mkdir(parents=True, exist_ok=True)
    data = json.dumps(hosts.to_json(), indent=2, sort_keys=True).encode("utf-8")
    handle, temp = tempfile.mkstemp(prefix=".hosts-", suffix=".tmp", dir=state_dir)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, state_dir / STATE_FILE)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    directory = os.open(state_dir, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
