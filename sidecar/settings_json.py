"""The core's settings as JSON, and back with errors that name the exact field.

Used by the admin API (`PUT /v1/hosts {"settings": ...}`), the state file and `--config`:
a partial object is merged over the current settings, so a caller changes only what it names.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from gremlinlb.core import (
    BalancerSettings,
    BudgetSettings,
    BufferSettings,
    HealthCheckSettings,
    HedgeSettings,
    InvalidSettingError,
    OutlierSettings,
    Policy,
    ReadRouting,
)

_NESTED: dict[str, type[Any]] = {
    "HealthCheckSettings": HealthCheckSettings,
    "BufferSettings": BufferSettings,
    "OutlierSettings": OutlierSettings,
    "HedgeSettings": HedgeSettings,
    "BudgetSettings": BudgetSettings,
}


class SettingsError(ValueError):
    """A settings document that cannot be applied; the message names the field."""


def settings_to_json(settings: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if dataclasses.is_dataclass(value):
            out[field.name] = settings_to_json(value)
        elif isinstance(value, enum.Enum):
            out[field.name] = value.value
        else:
            out[field.name] = value
    return out


def settings_from_json(
    data: Any, base: BalancerSettings, path: str = "settings"
) -> BalancerSettings:
    """`base` with the fields named in `data` replaced; raise SettingsError naming the field."""
    merged = _merge(data, base, path)
    assert isinstance(merged, BalancerSettings)
    return merged


def _merge(data: Any, base: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: must be a JSON object, got {_kind(data)}")
    fields = {f.name: f for f in dataclasses.fields(base)}
    changes: dict[str, Any] = {}
    for key, value in data.items():
        field = fields.get(key)
        where = f"{path}.{key}"
        if field is None:
            raise SettingsError(f"{where}: unknown setting; known: {', '.join(sorted(fields))}")
        changes[key] = _convert(value, str(field.type), getattr(base, key), where)
    try:
        return dataclasses.replace(base, **changes)
    except InvalidSettingError as error:
        raise SettingsError(f"{path}: {error}") from None


def _convert(value: Any, kind: str, current: Any, where: str) -> Any:
    if kind in _NESTED:
        return _merge(value, current, where)
    if kind in ("Policy", "ReadRouting"):
        choice = Policy if kind == "Policy" else ReadRouting
        try:
            return choice(value)
        except ValueError:
            choices = ", ".join(p.value for p in choice)
            raise SettingsError(f"{where}: must be one of {choices}, got {value!r}") from None
    if kind == "bool":
        if not isinstance(value, bool):
            raise SettingsError(f"{where}: must be true or false, got {_kind(value)}")
        return value
    if kind == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise SettingsError(f"{where}: must be an integer, got {_kind(value)}")
        return value
    if kind == "float":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise SettingsError(f"{where}: must be a number, got {_kind(value)}")
        return float(value)
    if kind == "str | None":
        if value is not None and not isinstance(value, str):
            raise SettingsError(f"{where}: must be a string or null, got {_kind(value)}")
        return value
    raise SettingsError(f"{where}: cannot be set here")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
