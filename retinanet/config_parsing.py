"""Reading a configuration: the top-level mapping of a user's YAML file, ``--set KEY=VALUE`` overrides, and a
nested mapping into typed dataclasses (:mod:`retinanet.config`'s), with errors that name the file and the dotted
field path.

Generic: which fields exist and which values are valid is :mod:`retinanet.config`'s business.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


def where(path: str, source: str | None) -> str:
    """A field's place for an error message: ``file: loss.gamma``, or the path alone."""
    return f"{source}: {path}" if source else path


def check_scalar(value: Any, tp: Any, path: str, source: str | None) -> Any:
    """Return ``value`` converted to the type hint ``tp`` (bool, int, float, str, a Literal, a list or a union of
    them) or raise ConfigError naming ``path``."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return check_scalar(value, arg, path, source)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[-1] if errors else f"{where(path, source)}: must not be null")
    if origin is Literal:
        if value not in get_args(tp):
            choices = ", ".join(repr(a) for a in get_args(tp))
            raise ConfigError(f"{where(path, source)}: {value!r} is not one of {choices}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where(path, source)}: expected a list, got {type(value).__name__} {value!r}")
        (item_tp,) = get_args(tp)
        return [check_scalar(v, item_tp, f"{path}[{i}]", source) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where(path, source)}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where(path, source)}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where(path, source)}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where(path, source)}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {path}")


def build_dataclass(cls: type, data: Any, prefix: str, source: str | None) -> Any:
    """The dataclass ``cls`` from a nested mapping, field by field through its type hints: ConfigError naming the
    dotted path (under ``prefix``) of an unknown key or a value of the wrong type."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where(prefix or '<root>', source)}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        path = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"{where(path, source)}: unknown config key (known: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in data.items():
        path = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = build_dataclass(tp, value, path, source)
        else:
            kwargs[name] = check_scalar(value, tp, path, source)
    return cls(**kwargs)


def not_utf8(exc: UnicodeDecodeError) -> str:
    """Where a file failed to decode, for a message after its path: ``not UTF-8 (byte 0xe9 on line 2, offset 24)``."""
    data = exc.object
    line = data.count(b"\n", 0, exc.start) + 1 if isinstance(data, bytes) else "?"
    byte = f"0x{data[exc.start]:02x}" if isinstance(data, bytes) else repr(data[exc.start])
    return f"not UTF-8 (byte {byte} on line {line}, offset {exc.start})"


def read_yaml_mapping(path: Path, what: str, error: type[ValueError] = ConfigError, hint: str = "") -> dict:
    """The top-level mapping of a user's YAML file (``what``: ``config file``, ``scale config``...).

    Raises ``error`` naming the file when it cannot be read, is not UTF-8 (with the byte offset), is not valid
    YAML, is empty (nothing, only comments, or ``null``: an empty run config would otherwise silently be the full
    paper configuration) or whose top level is not a mapping. ``hint`` ends the message of an empty file.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"{path}: cannot read {what} ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: {what} is {not_utf8(exc)}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{path}: invalid YAML: {exc}") from None
    if data is None:
        raise error(f"{path}: empty {what} (no settings, only comments or null){hint}")
    if not isinstance(data, dict):
        raise error(f"{path}: <root>: expected a mapping of fields, got {type(data).__name__} {data!r:.60}")
    return data


def parse_overrides(items: list[str]) -> dict:
    """``["solver.iterations=10", "loss.alpha=null"]`` -> nested dict (values parsed as YAML scalars)."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value (e.g. solver.iterations=100)")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        try:
            node[parts[-1]] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"--set {item!r}: value is not valid YAML") from None
    return out
