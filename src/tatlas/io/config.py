"""Frozen dataclass configs to and from plain JSON-able dicts (nested dataclasses, tuples, optionals),
and the one type check of config values (:func:`check_fields`) that every way of making a config
passes through: ``tatlas.create`` overrides, ``--config KEY=VALUE`` and configs read from files."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any


class ConfigValueError(ValueError):
    """A config value of the wrong type; the message names the field, the type expected and the value."""


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "None"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a tuple of {_type_name(args[0])}"
        return f"a tuple of {len(args)} ({', '.join(_type_name(a) for a in args)})" if args else "a tuple"
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _fits(tp: Any, value: Any) -> bool:
    """Whether ``value`` has type ``tp`` (an int is a float; a bool is not a number; a list is a tuple,
    as JSON stores one; a dict fits a dataclass it would build; ``Any`` and other hints fit anything)."""
    if tp is Any or isinstance(tp, typing.TypeVar):
        return True
    if tp is type(None) or value is None:
        return value is None and (tp is type(None) or _optional(tp))
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(arm, value) for arm in typing.get_args(tp))
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            return False
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(args[0], v) for v in value)
        return not args or (len(args) == len(value) and all(_fits(a, v) for a, v in zip(args, value)))
    if dataclasses.is_dataclass(tp):
        return isinstance(value, (tp, dict))
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True  # a hint this check does not understand (a Callable, a Protocol ...)


def _optional(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    return origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


def check_fields(cls: type, values: dict[str, Any]) -> None:
    """Raise :class:`ConfigValueError` for the first of ``values`` whose type does not fit the type of
    ``cls``'s field of that name (names that are not fields are left to the caller), e.g.
    ``LLMConfig.dim: expected int, got 'abc' (str)``. Called before the dataclass is built, so its
    own checks (``dim > 0``) never see a string."""
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        if name in hints and not _fits(hints[name], value):
            raise ConfigValueError(f"{cls.__name__}.{name}: expected {_type_name(hints[name])}, "
                                   f"got {value!r} ({type(value).__name__})")


def check_config(config: Any) -> None:
    """:func:`check_fields` over every field of a built config, nested configs included (a config
    made by hand skips :func:`config_from_dict`; this catches it before a model is built from it)."""
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    check_fields(type(config), values)
    for value in values.values():
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_config(value)


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
    missing = sorted(f.name for f in dataclasses.fields(cls) if f.init and f.name not in data
                     and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    if missing:
        raise ConfigValueError(f"{cls.__name__}: missing config fields {missing}")
    check_fields(cls, data)
    return cls(**{k: _build(hints[k], v) for k, v in data.items()})
