"""Generic machinery for typed dataclass configs: build from dicts/YAML, dotted overrides, dumps.

Every component owns a dataclass; this module only knows how to fill one in safely:

* unknown keys are errors that suggest the closest field name,
* values are coerced to the annotated type (``"3e-4"`` -> float, ``"16,64,64"`` -> tuple[int, ...]),
* a dataclass with a ``validate()`` method is validated after every change.

``vidgen_ray.config`` composes the components into the experiment config.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from vidgen_ray.errors import UserError


class ConfigError(UserError, ValueError):
    """A config value is wrong; the message names the field and the fix."""


def suggest(name: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Turn ``value`` (from YAML or a ``--set`` string) into type ``tp``, or raise ConfigError."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: cannot use {value!r}: " + "; ".join(errors))
    if origin is Literal:
        allowed = get_args(tp)
        if value in allowed:
            return value
        raise ConfigError(f"{where}: {value!r} is not one of {list(allowed)}{suggest(str(value), map(str, allowed))}")
    if origin in (tuple, list):
        args = get_args(tp)
        if isinstance(value, str):
            # "16x64x64" is a natural way to write a shape; only for integer tuples.
            text = value.replace("x", ",") if args and args[0] is int else value
            value = [v.strip() for v in text.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], where) for v in value)
        if origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)} ({value!r})")
            return tuple(coerce(v, a, where) for v, a in zip(value, args))
        inner = args[0] if args else Any
        return [coerce(v, inner, where) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                try:
                    as_float = float(value)  # "1e6"
                except ValueError:
                    as_float = None
                if as_float is not None and as_float.is_integer():
                    return int(as_float)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{where}: cannot convert {value!r} to {tp}")


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from a (possibly partial) mapping; defaults fill the rest."""
    obj = cls()
    update(obj, data, where)
    return obj


def update(obj: Any, data: dict[str, Any], where: str = "") -> Any:
    """Set fields of dataclass ``obj`` from a nested mapping, coercing and checking names."""
    hints = _hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj) if f.init]
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            raise ConfigError(f"unknown config field {path!r}{suggest(key, names)}; valid fields: {', '.join(names)}")
        current = getattr(obj, key)
        parse = getattr(type(obj), f"parse_{key}", None)  # a field with more than one spelling
        if parse is not None:
            try:
                fields = parse(value)
            except ValueError as exc:
                raise ConfigError(str(exc)) from exc
            for name, v in fields.items():
                setattr(obj, name, coerce(v, hints[name], f"{where}.{name}" if where else name))
        elif dataclasses.is_dataclass(current) and isinstance(value, dict):
            update(current, value, path)
        else:
            setattr(obj, key, coerce(value, hints[key], path))
    return obj


def set_dotted(obj: Any, dotted: str, value: Any) -> None:
    """``set_dotted(cfg, "train.lr", "3e-4")``: one ``--set key=value`` override."""
    head, _, rest = dotted.partition(".")
    if rest:
        names = [f.name for f in dataclasses.fields(obj)]
        if head not in names:
            raise ConfigError(f"unknown config section {head!r}{suggest(head, names)}")
        child = getattr(obj, head)
        if not dataclasses.is_dataclass(child):
            raise ConfigError(f"{head!r} is a value, not a section; use --set {head}=VALUE")
        set_dotted(child, rest, value)
    else:
        update(obj, {head: value})


def parse_set_args(pairs: typing.Iterable[str]) -> list[tuple[str, Any]]:
    """``["train.lr=3e-4", "model.depth=12"]`` -> ``[("train.lr", "3e-4"), ...]`` (YAML-typed values)."""
    out = []
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set wants KEY=VALUE, got {pair!r} (example: --set train.lr=3e-4)")
        value = yaml.safe_load(raw) if raw.strip() else ""
        out.append((key.strip(), value))
    return out


def to_dict(obj: Any) -> dict[str, Any]:
    """A plain nested dict (tuples as lists) that round-trips through ``from_dict``/YAML."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v) if f.init}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(obj)


def to_yaml(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False)


def load_yaml(path: str | Path) -> dict[str, Any]:
    from vidgen_ray import storage

    text = storage.read_text(str(path))
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping at the top level")
    return data


def validate_all(obj: Any) -> None:
    """Call ``validate()`` on ``obj`` and on every nested dataclass that has one (children first)."""
    for f in dataclasses.fields(obj):
        child = getattr(obj, f.name)
        if dataclasses.is_dataclass(child):
            validate_all(child)
    check = getattr(obj, "validate", None)
    if callable(check):
        try:
            check()
        except ConfigError:
            raise
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
