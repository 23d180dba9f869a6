"""Frozen dataclass configs to and from plain JSON-able dicts (nested dataclasses, tuples, optionals)."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any


def config_to_dict(config: Any) -> dict[str, Any]:
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"expected a dataclass config, got {type(config).__name__}")
    return dataclasses.asdict(config)


def _build(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(tp):
            if arm is type(None):
                continue
            if dataclasses.is_dataclass(arm) and isinstance(value, dict):
                return config_from_dict(arm, value)
            if not dataclasses.is_dataclass(arm):
                return _build(arm, value)
        return value
    if dataclasses.is_dataclass(tp):
        return config_from_dict(tp, value)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_build(args[0], v) for v in value)
        return tuple(_build(a, v) for a, v in zip(args, value, strict=True)) if args else tuple(value)
    return value


def config_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys are an error naming them. A class whose
    fields changed offers ``upgrade_saved(data) -> data``, which turns what older files hold into
    today's fields first."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
    if hasattr(cls, "upgrade_saved"):
        data = cls.upgrade_saved(data)
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown config fields {unknown}; valid fields are {sorted(fields)}")
    return cls(**{k: _build(hints[k], v) for k, v in data.items()})
