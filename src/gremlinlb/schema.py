"""One schema of the core's settings, for every surface that sets them.

The core's frozen dataclasses (:mod:`gremlinlb.core.settings`) are the source of truth: their
fields, types, defaults and :class:`~gremlinlb.core.settings.Doc` metadata (help, unit, bounds,
names) give each setting its

* flag, environment variable and config-file key (flat: ``--health-interval``,
  ``GREMLINLB_HEALTH_INTERVAL``, ``health_interval``), see :func:`from_flat`;
* place in the admin API's JSON (``PUT /v1/hosts {"settings": {"health": {"interval": ..}}}``,
  the state file), see :func:`from_document` and :func:`to_document`;
* place in a GremlinCluster spec and the CRD schema (``spec.healthCheck.interval``), see
  ``cr=True`` and :func:`crd_properties`;
* entry in an injected sidecar's environment, see :func:`to_env`.

:func:`convert` is the one converter: it checks a value against the setting's type and bounds
and names the field where it came from (``settings.outlier.slow_factor: must be a number > 1,
got the string 'x'``). Nothing here does I/O.

No conversion library is used: cattrs structures ``1.5`` into an int field as ``1`` and ``"5"``
into ``5`` unless a hook per type says otherwise, and pydantic would need its own annotations or
error translation for the bounds, the merge over current settings, the flat and CR names and a
CRD schema without ``$ref``; either would add code around the ~40 lines of :func:`convert`.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from gremlinlb.core import BalancerSettings, GremlinLBError, InvalidSettingError
from gremlinlb.core.settings import DOC, Doc

ENV_PREFIX = "GREMLINLB_"
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
_T = TypeVar("_T")


def flag_of(flat: str) -> str:
    """The command-line flag of a flat option name: ``health_interval`` -> ``--health-interval``."""
    return "--" + flat.replace("_", "-")


def env_of(flat: str) -> str:
    """Its environment variable: ``health_interval`` -> ``GREMLINLB_HEALTH_INTERVAL``."""
    return ENV_PREFIX + flat.upper()


class SettingsError(GremlinLBError, ValueError):
    """Settings that cannot be applied; the message starts with where the bad value came from."""


@dataclass(frozen=True, slots=True)
class Setting:
    """One leaf of a settings dataclass (:class:`BalancerSettings`, the sidecar's tunables)
    and its name on every surface."""

    path: tuple[str, ...]  # attributes from BalancerSettings: ("health", "interval")
    kind: type[Any]  # bool, int, float, str or an Enum
    optional: bool  # None is a value (probe_script: none means the bytecode probe)
    default: Any
    doc: Doc
    flat: str  # flag without dashes, env var without prefix, config-file key: "health_interval"
    cr_path: tuple[str, ...]  # ("healthCheck", "interval")

    @property
    def name(self) -> str:
        return ".".join(self.path)

    @property
    def flag(self) -> str:
        return flag_of(self.flat)

    @property
    def env(self) -> str:
        return env_of(self.flat)

    @property
    def metavar(self) -> str:
        if issubclass(self.kind, enum.Enum):
            return "NAME"
        units = {"seconds": "SEC", "bytes": "BYTES"}
        plain = {bool: "BOOL", int: "N", float: "NUMBER", str: "TEXT"}
        return units.get(self.doc.unit) or plain[self.kind]

    def get(self, settings: BalancerSettings) -> Any:
        value: Any = settings
        for attribute in self.path:
            value = getattr(value, attribute)
        return value

    def describe(self) -> str:
        """What a valid value is, in words: ``an integer >= 1``, ``true or false``."""
        if issubclass(self.kind, enum.Enum):
            return "one of " + ", ".join(str(member.value) for member in self.kind)
        if self.kind is bool:
            return "true or false"
        if self.kind is str:
            return "a non-empty string" + (" or null" if self.optional else "")
        noun = "an integer" if self.kind is int else "a number"
        return f"{noun} {self.doc.bounds()}"

    def text(self, value: Any) -> str:
        """The value as a flag or environment variable spells it."""
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value.value if isinstance(value, enum.Enum) else value)


def _walk(
    kind: type[Any], path: tuple[str, ...], flat: str, cr: tuple[str, ...]
) -> Iterator[Setting]:
    hints = typing.get_type_hints(kind)
    defaults = kind()
    for field in dataclasses.fields(kind):
        doc: Doc = field.metadata[DOC]
        hint = hints[field.name]
        if dataclasses.is_dataclass(hint):
            assert doc.flag is not None, field.name
            assert doc.cr is not None, field.name
            yield from _walk(
                typing.cast(type[Any], hint), (*path, field.name), doc.flag, (*cr, doc.cr)
            )
            continue
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        yield Setting(
            path=(*path, field.name),
            kind=members[0] if members else hint,
            optional=bool(members),
            default=getattr(defaults, field.name),
            doc=doc,
            flat=doc.flag or (f"{flat}_{field.name}" if flat else field.name),
            cr_path=(*cr, doc.cr or _camel(field.name)),
        )


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(word.title() for word in rest)


def settings_of(kind: type[Any]) -> tuple[Setting, ...]:
    """The leaves of a dataclass declared with :func:`gremlinlb.core.settings.setting`."""
    return tuple(_walk(kind, (), "", ()))


#: Every setting of the core, in the dataclasses' order.
SETTINGS: tuple[Setting, ...] = settings_of(BalancerSettings)
#: Nested names -> Setting, as the admin API's JSON or a GremlinCluster spec spells them.
_Tree = dict[str, "Setting | _Tree"]


def _tree(names: Callable[[Setting], tuple[str, ...]]) -> _Tree:
    root: _Tree = {}
    for setting in SETTINGS:
        *sections, leaf = names(setting)
        node = root
        for section in sections:
            child = node.setdefault(section, {})
            assert isinstance(child, dict)
            node = child
        node[leaf] = setting
    return root


_CORE_TREE = _tree(lambda s: s.path)
_CR_TREE = _tree(lambda s: s.cr_path)


def convert(setting: Setting, value: Any, where: str, *, text: bool = False) -> Any:
    """``value`` as ``setting`` holds it, or SettingsError naming ``where``. ``text`` also
    accepts the string forms of flags and environment variables ("5", "yes")."""
    if value is None and setting.optional:
        return None
    kind, found = setting.kind, value
    if text and isinstance(value, str) and kind is not str:
        found = _parse(value.strip(), kind)
    if issubclass(kind, enum.Enum):
        try:
            return kind(found)
        except (TypeError, ValueError):
            pass
    elif kind is bool:
        if isinstance(found, bool):
            return found
    elif kind is str:
        if isinstance(found, str) and found.strip():
            return found
    elif (
        isinstance(found, int if kind is int else (int, float))
        and not isinstance(found, bool)
        and setting.doc.admits(found)
    ):
        return kind(found)
    raise SettingsError(f"{where}: must be {setting.describe()}, got {_kind(value)}")


def _parse(value: str, kind: type[Any]) -> Any:
    if kind is bool:
        lower = value.lower()
        return True if lower in _TRUE else False if lower in _FALSE else value
    for parse in (int, float) if kind is int else (float,) if kind is float else ():
        try:
            return parse(value)
        except ValueError:
            continue
    return value


def from_document(
    data: Any, base: BalancerSettings, where: str = "settings", *, cr: bool = False
) -> BalancerSettings:
    """``base`` with the settings ``data`` names replaced: the admin API's JSON (core names;
    unknown keys refused) or, with ``cr``, a GremlinCluster spec (CR names; other spec fields
    and nulls ignored)."""
    changes: dict[Setting, Any] = {}
    _collect(data, _CR_TREE if cr else _CORE_TREE, where, changes, cr)
    sources = {
        setting: where + "." + ".".join(setting.cr_path if cr else setting.path)
        for setting in changes
    }
    return _apply(base, changes, sources)


def _collect(data: Any, tree: _Tree, where: str, changes: dict[Setting, Any], cr: bool) -> None:
    if not isinstance(data, Mapping):
        raise SettingsError(f"{where}: must be a JSON object, got {_kind(data)}")
    for key, value in data.items():
        node = tree.get(key)
        here = f"{where}.{key}"
        if node is None:
            if cr:
                continue  # the spec's own fields (service, tls, ...), read elsewhere
            raise SettingsError(f"{here}: unknown setting; known: {', '.join(sorted(tree))}")
        if cr and value is None:
            continue
        if isinstance(node, Setting):
            changes[node] = convert(node, value, here)
        else:
            _collect(value, node, here, changes, cr)


def from_flat(
    lookup: Callable[[str], tuple[Any, str] | None],
    base: _T,
    settings: tuple[Setting, ...] = SETTINGS,
) -> _T:
    """``base`` with every one of ``settings`` that ``lookup(flat_name)`` finds, as ``(value,
    source)`` (flags, then environment, then config file); errors name the source (``--fall``,
    ``GREMLINLB_FALL``)."""
    changes: dict[Setting, Any] = {}
    sources: dict[Setting, str] = {}
    for setting in settings:
        found = lookup(setting.flat)
        if found is not None:
            value, sources[setting] = found
            changes[setting] = convert(setting, value, sources[setting], text=True)
    return _apply(base, changes, sources)


def _apply(base: _T, changes: Mapping[Setting, Any], sources: Mapping[Setting, str]) -> _T:
    """Rebuild the dataclasses that have changes; a check across fields (``outage_interval``
    <= ``unhealthy_interval``, ...) that fails names the values given for that section."""
    values = {setting.path: value for setting, value in changes.items()}
    health = ("health", "unhealthy_interval")
    if (
        isinstance(base, BalancerSettings)
        and health in values
        and (("health", "outage_interval") not in values)
    ):
        # Only the slower interval was given: the outage interval follows it down.
        values["health", "outage_interval"] = min(base.health.outage_interval, values[health])

    def build(holder: Any, path: tuple[str, ...]) -> Any:
        updates: dict[str, Any] = {}
        for field in dataclasses.fields(holder):
            key = (*path, field.name)
            current = getattr(holder, field.name)
            if dataclasses.is_dataclass(current):
                rebuilt = build(current, key)
                if rebuilt is not current:
                    updates[field.name] = rebuilt
            elif key in values:
                updates[field.name] = values[key]
        if not updates:
            return holder
        try:
            return dataclasses.replace(holder, **updates)
        except InvalidSettingError as error:
            given = [where for s, where in sources.items() if s.path[: len(path)] == path]
            raise SettingsError(f"{', '.join(given) or 'settings'}: {error}") from None

    rebuilt: _T = build(base, ())
    return rebuilt


def to_document(settings: BalancerSettings, *, cr: bool = False) -> dict[str, Any]:
    """The admin API's JSON of ``settings`` (every field, nulls included) or, with ``cr``, the
    GremlinCluster spec fields (nulls left out); :func:`from_document` reads either back."""
    out: dict[str, Any] = {}
    for setting in SETTINGS:
        value = setting.get(settings)
        if cr and value is None:
            continue
        *sections, leaf = setting.cr_path if cr else setting.path
        node = out
        for section in sections:
            node = node.setdefault(section, {})
        node[leaf] = value.value if isinstance(value, enum.Enum) else value
    return out


def to_env(settings: BalancerSettings) -> list[dict[str, str]]:
    """The sidecar's environment variables for ``settings`` (what :func:`from_flat` reads)."""
    return [
        {"name": setting.env, "value": setting.text(value)}
        for setting in SETTINGS
        if (value := setting.get(settings)) is not None
    ]


def crd_properties() -> dict[str, Any]:
    """The OpenAPI schema of the settings in a GremlinCluster spec: types, bounds, defaults
    and descriptions from the dataclasses."""
    out: dict[str, Any] = {}
    sections: dict[tuple[str, ...], Doc] = {
        (doc.cr,): doc
        for field in dataclasses.fields(BalancerSettings)
        if (doc := field.metadata[DOC]).cr is not None
    }
    for setting in SETTINGS:
        *path, leaf = setting.cr_path
        node = out
        if path:
            doc = sections[tuple(path)]
            section = node.setdefault(
                path[0],
                {"type": "object", "description": doc.help, "default": {}, "properties": {}},
            )
            node = section["properties"]
        node[leaf] = leaf_schema(setting)
    return out


def leaf_schema(setting: Setting) -> dict[str, Any]:
    kind, doc = setting.kind, setting.doc
    schema: dict[str, Any]
    if issubclass(kind, enum.Enum):
        schema = {"type": "string", "enum": [str(member.value) for member in kind]}
    elif kind is bool:
        schema = {"type": "boolean"}
    elif kind is str:
        schema = {"type": "string", "minLength": 1}
    else:
        schema = {"type": "integer", "format": "int64"} if kind is int else {"type": "number"}
        for key, bound, exclusive in (
            ("minimum", doc.ge, False),
            ("minimum", doc.gt, True),
            ("maximum", doc.le, False),
            ("maximum", doc.lt, True),
        ):
            if bound is not None:
                schema[key] = bound
                if exclusive:
                    schema["exclusiveM" + key[1:]] = True
        if doc.off is not None and doc.ge is not None:
            # "0 (off) or >= the floor": a CEL rule, so the apiserver's refusal says just that
            # (an anyOf of two ranges is refused with "must validate at least one schema").
            schema["minimum"] = doc.off
            unit = f" {doc.unit}" if doc.unit else ""
            schema["x-kubernetes-validations"] = [
                {
                    "rule": f"self == {float(doc.off)!r} || self >= {float(doc.ge)!r}",
                    "message": f"must be {doc.off:g} (off) or >= {doc.ge:g}{unit}",
                }
            ]
    if setting.default is not None:
        default = setting.default
        schema["default"] = default.value if isinstance(default, enum.Enum) else default
    schema["description"] = doc.help
    return schema


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
