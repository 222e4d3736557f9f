"""A `RunConfig` from a preset, a JSON/YAML file and `section.field=value` overrides, and back to JSON."""

from __future__ import annotations

import copy
import dataclasses
import json
import typing
from typing import Iterable, Optional

import yaml

from pump_keras.config.presets import preset
from pump_keras.config.schema import RunConfig, to_dict
from pump_keras.errors import ConfigError


def read_config_file(path: str) -> dict:
    """The dict in a JSON or YAML config file (by extension; YAML otherwise)."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as error:
        raise ConfigError(f"Cannot read config file {path}: {error.strerror}.") from error
    try:
        values = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"Config file {path} is not valid {'JSON' if path.endswith('.json') else 'YAML'}: {error}") from error
    if not isinstance(values, dict):
        raise ConfigError(f"Config file {path} must hold a mapping of sections, got {type(values).__name__}.")
    return values


def parse_override(text: str) -> tuple:
    """`"train.epochs=3"` -> `(("train", "epochs"), 3)`; values are read as YAML scalars/lists."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"Override {text!r} must look like section.field=value (e.g. train.epochs=3).")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(f"Override {text!r}: cannot read the value: {error}") from error
    return tuple(part.strip() for part in key.split(".")), parsed


def _merge(base: dict, update: dict, where: str = "") -> dict:
    """`base` updated recursively by `update`; unknown keys are reported by `from_dict`."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "options":
            merged[key] = _merge(merged[key], value, f"{where}{key}.")
        else:
            merged[key] = value
    return merged


def _coerce(value, annotation, where: str):
    """Lists to tuples where the field is a tuple; ints to floats where it is a float."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union:
        if value is None:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _coerce(value, non_none[0], where) if len(non_none) == 1 else value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}.")
        return tuple(value)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float, bool, str) and not isinstance(value, annotation):
        raise ConfigError(f"{where} must be {annotation.__name__}, got {value!r}.")
    return value


def from_dict(cls, values: dict, where: str = ""):
    """Builds dataclass `cls` from nested dicts; unknown or ill-typed keys are errors."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where or cls.__name__} must be a mapping, got {values!r}.")
    if hasattr(cls, "upgrade"):  # settings in an older layout
        values = cls.upgrade(values)
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"Unknown option {where}{unknown[0]}; {cls.__name__} has: {', '.join(sorted(fields))}.")
    kwargs = {}
    for name, value in values.items():
        annotation = hints[name]
        if dataclasses.is_dataclass(annotation):
            kwargs[name] = from_dict(annotation, value, f"{where}{name}.")
        else:
            kwargs[name] = _coerce(value, annotation, f"{where}{name}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where.rstrip('.') or cls.__name__}: {error}") from error


def load_config(preset_name: str = "quick", path: Optional[str] = None,
                overrides: Iterable[str] = ()) -> RunConfig:
    """The run config: preset, then the file (if any), then each override in order."""
    values = to_dict(preset(preset_name))
    if path:
        values = _merge(values, read_config_file(path))
    for text in overrides:
        keys, value = parse_override(text)
        update = value
        for key in reversed(keys):
            update = {key: update}
        values = _merge(values, update)
    return from_dict(RunConfig, values)


def config_from_json(text: str) -> RunConfig:
    """A `RunConfig` from the JSON a run directory holds."""
    return from_dict(RunConfig, json.loads(text))


def config_to_json(config: RunConfig) -> str:
    """The JSON of a `RunConfig`, keys in field order."""
    return json.dumps(to_dict(config), indent=2) + "\n"


__all__ = ["ConfigError", "load_config", "read_config_file", "parse_override", "from_dict", "config_from_json",
           "config_to_json"]
