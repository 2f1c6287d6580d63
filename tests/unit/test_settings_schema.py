"""Every core setting reaches the core unchanged through every surface generated from its schema.

The surfaces: the sidecar's flags, its environment variables and its config file; the admin
API's JSON (``PUT /v1/hosts`` settings, the state file); a GremlinCluster spec and the
environment the webhook gives an injected sidecar; the CRD's schema.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from gremlinlb.operator.crd import build_crd
from gremlinlb.operator.spec import (
    SIDECAR_MEMORY,
    SpecError,
    parse_spec,
    settings_from_spec,
    settings_to_spec,
)
from gremlinlb.operator.webhook import injection
from gremlinlb.sidecar.config import ConfigError, add_arguments, load_config

from gremlinlb.core import BalancerSettings
from gremlinlb.schema import SETTINGS, Setting, SettingsError, from_document, to_document

DEFAULTS = BalancerSettings()


def other_value(setting: Setting) -> Any:
    """A valid value that is not the default (and keeps the checks across fields satisfied)."""
    kind, default, doc = setting.kind, setting.default, setting.doc
    if issubclass(kind, enum.Enum):
        return next(member for member in kind if member is not default)
    if kind is bool:
        return not default
    if kind is str:  # a path setting (health.status_path) takes another path
        return "/other/status" if str(default).startswith("/") else "g.inject(1)"
    value = default + 1 if kind is int else default * 1.5
    if not doc.admits(value):
        upper = doc.le if doc.le is not None else doc.lt
        assert upper is not None, setting.name
        value = (default + upper) / 2
    assert doc.admits(value), setting.name
    return value


def with_value(settings: Any, path: tuple[str, ...], value: Any) -> Any:
    name, *rest = path
    inner = with_value(getattr(settings, name), tuple(rest), value) if rest else value
    return dataclasses.replace(settings, **{name: inner})


def nested(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    document: Any = value
    for name in reversed(path):
        document = {name: document}
    return dict(document)


def json_value(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def through_flag(setting: Setting, value: Any, _: Path) -> BalancerSettings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = vars(parser.parse_args([setting.flag, setting.text(value)]))
    return load_config({k: v for k, v in args.items() if k != "config"}, {}).settings


def through_env(setting: Setting, value: Any, _: Path) -> BalancerSettings:
    return load_config({}, {setting.env: setting.text(value)}).settings


def through_config_file(setting: Setting, value: Any, tmp_path: Path) -> BalancerSettings:
    file = tmp_path / "sidecar.json"
    file.write_text(json.dumps({setting.flat: json_value(value)}))
    return load_config({}, {}, str(file)).settings


def through_admin_json(setting: Setting, value: Any, _: Path) -> BalancerSettings:
    body = json.loads(json.dumps(nested(setting.path, json_value(value))))
    return from_document(body, DEFAULTS)


def through_cluster_spec(setting: Setting, value: Any, _: Path) -> BalancerSettings:
    return settings_from_spec(nested(setting.cr_path, json_value(value)))


def through_webhook_env(setting: Setting, value: Any, _: Path) -> BalancerSettings:
    spec = {"service": {"name": "gremlin"}, **nested(setting.cr_path, json_value(value))}
    pod = {"metadata": {"name": "web"}, "spec": {"containers": [{"name": "web"}]}}
    changes = injection(pod, "graph", parse_spec("graph", spec), [])
    assert changes is not None
    env = {
        e["name"]: e["value"] for e in changes["spec"]["initContainers"][0]["env"] if "value" in e
    }
    # Only the settings: the rest names files that exist inside the pod.
    return load_config({}, {s.env: env[s.env] for s in SETTINGS if s.env in env}).settings


SURFACES: dict[str, Callable[[Setting, Any, Path], BalancerSettings]] = {
    "flag": through_flag,
    "env": through_env,
    "config_file": through_config_file,
    "admin_json": through_admin_json,
    "cluster_spec": through_cluster_spec,
    "webhook_env": through_webhook_env,
}


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
@pytest.mark.parametrize("surface", SURFACES)
def test_every_setting_round_trips_through_every_surface(
    surface: str, setting: Setting, tmp_path: Path
) -> None:
    value = other_value(setting)
    expected = with_value(DEFAULTS, setting.path, value)
    if setting.path == ("health", "unhealthy_interval"):
        expected = with_value(expected, ("health", "outage_interval"), min(value, 0.25))
    assert SURFACES[surface](setting, value, tmp_path) == expected


def crd_property_at(cr_path: tuple[str, ...]) -> dict[str, Any]:
    spec = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    node: dict[str, Any] = spec
    for name in cr_path:
        node = node["properties"][name]
    return node


def crd_property(setting: Setting) -> dict[str, Any]:
    return crd_property_at(setting.cr_path)


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_the_crd_gives_every_setting_its_type_default_and_bounds(setting: Setting) -> None:
    schema = crd_property(setting)
    types = {bool: "boolean", int: "integer", float: "number", str: "string"}
    assert schema["type"] == types.get(setting.kind, "string")
    assert schema.get("default") == json_value(setting.default)
    assert schema["description"] == setting.doc.help
    value = json_value(other_value(setting))
    if "enum" in schema:
        assert value in schema["enum"]
    if "minimum" in schema:
        assert (
            value > schema["minimum"]
            if schema.get("exclusiveMinimum")
            else value >= schema["minimum"]
        )
    if "maximum" in schema:
        assert (
            value < schema["maximum"]
            if schema.get("exclusiveMaximum")
            else value <= schema["maximum"]
        )


def test_every_setting_has_its_own_flag_env_and_cr_field() -> None:
    assert len({s.flat for s in SETTINGS}) == len(SETTINGS)
    assert len({s.cr_path for s in SETTINGS}) == len(SETTINGS)
    assert {s.path for s in SETTINGS} == {
        (section, f.name)
        for section in ("health", "buffer", "outlier", "hedge", "budget", "sigv4")
        for f in dataclasses.fields(getattr(DEFAULTS, section))
    } | {
        (f.name,)
        for f in dataclasses.fields(DEFAULTS)
        if not dataclasses.is_dataclass(getattr(DEFAULTS, f.name))
    }


def test_the_flag_names_users_already_set_are_kept() -> None:
    flags = {s.path: s.flag for s in SETTINGS}
    assert flags["health", "rise"] == "--rise"
    assert flags["health", "interval"] == "--health-interval"
    assert flags["health", "unhealthy_interval"] == "--unhealthy-interval"
    assert flags["outlier", "consecutive_failures"] == "--consecutive-failures"
    assert flags["hedge", "enabled"] == "--hedge"
    assert flags["hedge", "max_delay"] == "--hedge-max-delay"
    assert flags["budget", "ratio"] == "--extra-budget-ratio"
    assert flags["buffer", "max_wait"] == "--buffer-max-wait"
    assert flags["max_attempts",] == "--max-attempts"


def test_the_admin_json_names_the_field_path_the_bound_and_the_value() -> None:
    with pytest.raises(SettingsError) as refused:
        from_document({"outlier": {"slow_factor": "x"}}, DEFAULTS)
    assert str(refused.value) == (
        "settings.outlier.slow_factor: must be a number > 1, got the string 'x'"
    )


def test_a_value_out_of_bounds_is_refused_where_it_was_given() -> None:
    with pytest.raises(SettingsError, match=r"settings\.buffer\.max_elements: .* >= 0, got .*-1"):
        from_document({"buffer": {"max_elements": -1}}, DEFAULTS)
    with pytest.raises(ConfigError, match=r"GREMLINLB_HEDGE_PERCENTILE: must be a number >= 0\.5"):
        load_config({}, {"GREMLINLB_HEDGE_PERCENTILE": "0.2"})


def test_an_unknown_admin_setting_lists_the_known_ones() -> None:
    with pytest.raises(SettingsError, match=r"settings\.health\.intervall: unknown setting; known"):
        from_document({"health": {"intervall": 3}}, DEFAULTS)


def test_json_is_strict_where_flags_accept_text() -> None:
    with pytest.raises(SettingsError, match=r"settings\.max_attempts: must be an integer"):
        from_document({"max_attempts": "4"}, DEFAULTS)
    with pytest.raises(SettingsError, match=r"settings\.hedge\.enabled: must be true or false"):
        from_document({"hedge": {"enabled": 1}}, DEFAULTS)
    assert load_config({"max_attempts": "4", "hedge": "no"}, {}).settings == BalancerSettings(
        max_attempts=4, hedge=dataclasses.replace(DEFAULTS.hedge, enabled=False)
    )


def test_a_lower_unhealthy_interval_brings_the_outage_interval_down_with_it() -> None:
    health = load_config({"unhealthy_interval": "0.1"}, {}).settings.health
    assert (health.unhealthy_interval, health.outage_interval) == (0.1, 0.1)


def test_every_setting_survives_the_admin_json_and_the_cluster_spec_at_once() -> None:
    changed = DEFAULTS
    for setting in SETTINGS:
        changed = with_value(changed, setting.path, other_value(setting))
    assert from_document(json.loads(json.dumps(to_document(changed))), DEFAULTS) == changed
    assert settings_from_spec(settings_to_spec(changed)) == changed


@pytest.mark.parametrize("option", SIDECAR_MEMORY, ids=lambda s: s.name)
def test_a_sidecar_option_set_in_the_cluster_reaches_the_injected_sidecar(option: Setting) -> None:
    key = option.cr_path[-1]
    value = option.default * 2
    spec = {"service": {"name": "gremlin"}, "sidecar": {key: value}}
    pod = {"metadata": {"name": "web"}, "spec": {"containers": [{"name": "web"}]}}
    changes = injection(pod, "graph", parse_spec("graph", spec), [])
    assert changes is not None
    env = {e["name"]: e.get("value") for e in changes["spec"]["initContainers"][0]["env"]}
    assert env[option.env] == str(value)
    schema = crd_property_at(("sidecar", key))
    assert (schema["type"], schema["minimum"]) == ("integer", option.doc.ge)
    with pytest.raises(SpecError, match=rf"spec.sidecar.{key}: must be an integer >= 1"):
        parse_spec("graph", {**spec, "sidecar": {key: 0}})


SECONDS = [s for s in SETTINGS if s.doc.unit == "seconds" and s.name != "outlier.slow_floor"]


@pytest.mark.parametrize("setting", SECONDS, ids=lambda s: s.name)
def test_every_interval_and_timeout_refuses_a_microsecond(setting: Setting) -> None:
    floor = setting.doc.ge if setting.doc.ge is not None else setting.doc.gt
    assert floor is not None
    assert floor >= 0.001
    with pytest.raises(
        SettingsError, match=f"must be .*>= {floor:g} seconds, got the number 1e-06"
    ):
        from_document(dict_at(setting.path, 1e-6), DEFAULTS)


def dict_at(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    *sections, leaf = path
    document: dict[str, Any] = {leaf: value}
    for section in reversed(sections):
        document = {section: document}
    return document


def test_a_health_interval_below_its_floor_is_refused_on_every_surface() -> None:
    message = r"must be a number >= 0\.1 seconds, got"
    with pytest.raises(ConfigError, match=rf"--health-interval: {message}"):
        load_config({"health_interval": "1e-6"}, {})
    with pytest.raises(ConfigError, match=rf"GREMLINLB_HEALTH_INTERVAL: {message}"):
        load_config({}, {"GREMLINLB_HEALTH_INTERVAL": "0.01"})
    with pytest.raises(SettingsError, match=rf"settings\.health\.interval: {message}"):
        from_document({"health": {"interval": 1e-6}}, DEFAULTS)
    with pytest.raises(SettingsError, match=rf"spec\.healthCheck\.interval: {message}"):
        from_document({"healthCheck": {"interval": 1e-6}}, DEFAULTS, "spec", cr=True)
    assert crd_property_at(("healthCheck", "interval"))["minimum"] == 0.1


def test_keepalive_is_off_at_zero_or_at_least_a_second() -> None:
    message = r"settings\.keepalive_interval: must be a number 0 \(off\) or >= 1 seconds"
    for bad in (1e-9, 0.5, -1):
        with pytest.raises(SettingsError, match=message):
            from_document({"keepalive_interval": bad}, DEFAULTS)
    for good in (0, 1, 20.5):
        assert from_document({"keepalive_interval": good}, DEFAULTS).keepalive_interval == good
    schema = crd_property_at(("keepaliveInterval",))
    assert schema["minimum"] == 0
    assert schema["x-kubernetes-validations"] == [
        {"rule": "self == 0.0 || self >= 1.0", "message": "must be 0 (off) or >= 1 seconds"}
    ]
