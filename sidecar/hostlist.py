"""The host list the admin API replaces: validation, generations, and the state file.

Validation is all-or-nothing and happens before anything changes, so a bad body leaves the
sidecar exactly as it was. Generations make concurrent writers safe: an operator that lost a
race (or replays an old list) gets 409 and the current generation instead of undoing newer work.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gremlinlb.sidecar.settings_json import SettingsError, settings_from_json, settings_to_json

from gremlinlb.core import BalancerSettings, Endpoint, InvalidEndpointError, parse_endpoint

STATE_FILE = "hosts.json"


class BadUpdateError(ValueError):
    """A PUT /v1/hosts body that cannot be applied; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class HostList:
    generation: int
    hosts: tuple[Endpoint, ...]
    settings: BalancerSettings

    def to_json(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "hosts": [e.url for e in self.hosts],
            "settings": settings_to_json(self.settings),
        }


def parse_update(body: Any, current: BalancerSettings) -> HostList:
    """Validate `{generation, hosts, settings?}` fully; raise BadUpdateError naming the field."""
    if not isinstance(body, dict):
        raise BadUpdateError("the body must be a JSON object {generation, hosts, settings?}")
    unknown = sorted(set(body) - {"generation", "hosts", "settings"})
    if unknown:
        raise BadUpdateError(
            f"unknown field(s) {', '.join(unknown)}; expected generation, hosts and settings"
        )
    generation = body.get("generation")
    if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
        raise BadUpdateError(f"generation must be an integer >= 0, got {generation!r}")
    hosts = body.get("hosts")
    if not isinstance(hosts, list):
        raise BadUpdateError(f"hosts must be a list of 'host:port' strings, got {hosts!r}")
    endpoints: list[Endpoint] = []
    for index, text in enumerate(hosts):
        try:
            endpoint = parse_endpoint(text)
        except InvalidEndpointError as error:
            raise BadUpdateError(f"hosts[{index}]: {error}") from None
        if endpoint in endpoints:
            raise BadUpdateError(f"hosts[{index}]: {endpoint.address} is listed twice")
        endpoints.append(endpoint)
    settings = current
    if body.get("settings") is not None:
        try:
            settings = settings_from_json(body["settings"], current)
        except SettingsError as error:
            raise BadUpdateError(str(error)) from None
    return HostList(generation, tuple(endpoints), settings)


def load_state(state_dir: Path, defaults: BalancerSettings) -> HostList | None:
    """The last accepted host list, or None if none was saved yet."""
    path = state_dir / STATE_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        return parse_update(json.loads(text), defaults)
    except (ValueError, BadUpdateError) as error:
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
