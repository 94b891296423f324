"""Generic `key=value` overrides and plain-dict views for any frozen config dataclass (STYLE E4).

`apply_overrides(cfg, ["epochs=3", "model.preset=compact"])` returns a new config: each value is parsed with
the field's annotation (bool, int, float, str, Path, Literal, Optional, tuple, dict, nested dataclass),
dotted paths reach into nested configs, and an unknown key raises `ConfigError` naming the closest valid
keys. `to_dict`/`from_dict` turn a config into JSON-able data and back. This module knows no stage.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from lead_stream.core.errors import ConfigError

C = TypeVar("C")

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_NONE = {"none", "null", "~", ""}


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def all_keys(cfg_or_cls: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a config dataclass, nested configs expanded."""
    cls = cfg_or_cls if isinstance(cfg_or_cls, type) else type(cfg_or_cls)
    keys = []
    hints = _field_types(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            keys.extend(all_keys(kind, prefix=f"{prefix}{f.name}."))
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def _type_name(kind: Any) -> str:
    if typing.get_origin(kind) is Literal:
        return "one of " + "|".join(str(a) for a in typing.get_args(kind))
    return getattr(kind, "__name__", None) or str(kind).replace("typing.", "")


def parse_value(text: str, kind: Any, *, key: str) -> Any:
    """Parse `text` as a value of annotation `kind`; `ConfigError` naming `key` and the expected type."""
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    expected = _type_name(kind)
    try:
        if kind is Any:
            return json.loads(text) if text[:1] in '[{"' else text
        if origin in (Union, types.UnionType):
            non_none = [a for a in args if a is not type(None)]
            if type(None) in args and text.strip().lower() in _NONE:
                return None
            for option in non_none:
                try:
                    return parse_value(text, option, key=key)
                except ConfigError:
                    continue
            raise ValueError("no alternative matched")
        if origin is Literal:
            for option in args:
                if str(option) == text or (
                    isinstance(option, bool) and text.lower() in (_TRUE if option else _FALSE)
                ):
                    return option
            raise ValueError(f"not one of {list(args)}")
        if kind is bool:
            low = text.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError("not a boolean")
        if kind is int:
            return int(text.replace("_", ""))
        if kind is float:
            return float(text)
        if kind is str:
            return text
        if kind is Path:
            return Path(text)
        if origin in (tuple, list):
            items = (
                json.loads(text) if text.strip().startswith("[") else [t for t in text.split(",") if t != ""]
            )
            if not isinstance(items, list):
                raise ValueError("not a list")
            if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
                item_types = [args[0]] * len(items)
            elif origin is tuple and args:
                if len(args) != len(items):
                    raise ValueError(f"needs {len(args)} items, got {len(items)}")
                item_types = list(args)
            else:
                item_types = [args[0] if args else Any] * len(items)
            parsed = [
                parse_value(item if isinstance(item, str) else json.dumps(item), t, key=key)
                for item, t in zip(items, item_types)
            ]
            return tuple(parsed) if origin is tuple else parsed
        if origin is dict or kind is dict:
            value = json.loads(text)
            if not isinstance(value, dict):
                raise ValueError("not a JSON object")
            return value
    except (ValueError, TypeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{key}={text!r}: expected {expected} ({error})") from None
    raise ConfigError(f"{key}: annotation {expected} cannot be set from the command line")


def _closest(key: str, valid: list[str]) -> str:
    matches = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    if not matches:  # also try the last component ("batchsize" → "batch_size")
        leaf = key.rsplit(".", 1)[-1]
        matches = difflib.get_close_matches(leaf, valid, n=3, cutoff=0.5)
    return f"; did you mean {', '.join(matches)}?" if matches else ""


def _set_path(cfg: Any, path: list[str], text: str, full_key: str, valid: list[str]) -> Any:
    hints = _field_types(type(cfg))
    name = path[0]
    if name not in {f.name for f in dataclasses.fields(cfg)}:
        raise ConfigError(f"unknown config key {full_key!r}{_closest(full_key, valid)}")
    kind = hints[name]
    if len(path) > 1:
        if not dataclasses.is_dataclass(kind):
            raise ConfigError(f"unknown config key {full_key!r}: {name!r} has no sub-keys")
        value = _set_path(getattr(cfg, name), path[1:], text, full_key, valid)
    elif dataclasses.is_dataclass(kind):
        raise ConfigError(f"{full_key}: is a section; set one of its keys ({name}.<key>=...)")
    else:
        value = parse_value(text, kind, key=full_key)
    try:
        return dataclasses.replace(cfg, **{name: value})
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{full_key}={text!r}: {error}") from None


def apply_overrides(cfg: C, overrides: list[str] | tuple[str, ...] | None) -> C:
    """Return a copy of `cfg` with each `key=value` (dotted keys for nested configs) applied in order.

    Args:
        cfg: a (frozen) config dataclass instance.
        overrides: tokens like `"epochs=3"`, `"model.preset=compact"`, `"use_planning_decoder=true"`.

    Returns:
        The new config (validated by the dataclasses' `__post_init__`).

    Raises:
        ConfigError: a token without `=`, an unknown key (with suggestions), or an unparsable/invalid value.
    """
    for token in overrides or ():
        if "=" not in token:
            raise ConfigError(f"override {token!r}: expected key=value")
        key, text = token.split("=", 1)
        key = key.strip()
        cfg = _set_path(cfg, key.split("."), text, key, all_keys(cfg))
    return cfg


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-able dict of a config dataclass (nested configs as dicts, Paths as str, tuples as lists)."""
    return _plain(cfg)


def _from_plain(value: Any, kind: Any, key: str) -> Any:
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if value is None:
        return None
    if dataclasses.is_dataclass(kind):
        return from_dict(kind, value, prefix=f"{key}.")
    if origin in (Union, types.UnionType):
        for option in (a for a in args if a is not type(None)):
            try:
                return _from_plain(value, option, key)
            except (ConfigError, TypeError, ValueError):
                continue
        raise ConfigError(f"{key}={value!r}: expected {_type_name(kind)}")
    if kind is Path:
        return Path(value)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_from_plain(v, args[0], key) for v in value)
        return tuple(_from_plain(v, t, key) for v, t in zip(value, args)) if args else tuple(value)
    if kind is float and isinstance(value, int):
        return float(value)
    return value


def from_dict(cls: type[C], data: dict[str, Any], *, prefix: str = "", strict: bool = False) -> C:
    """Rebuild a config dataclass from `to_dict` output; unknown keys raise only when `strict`."""
    hints = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if strict and unknown:
        raise ConfigError(f"unknown config key {prefix}{unknown[0]!r}{_closest(unknown[0], sorted(names))}")
    kwargs = {name: _from_plain(data[name], hints[name], f"{prefix}{name}") for name in names if name in data}
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{prefix or cls.__name__}: {error}") from None


def format_config(cfg: Any) -> str:
    """The resolved config as indented JSON, for printing at start-up."""
    return json.dumps(to_dict(cfg), indent=2, sort_keys=False)
