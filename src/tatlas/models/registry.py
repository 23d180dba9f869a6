"""The registry of systems: the built-in ones (:data:`tatlas.models._builtin.BUILTIN`, a tuple of
each system's ``SYSTEM`` record) and those a program adds with :func:`register`.
``tatlas.create``/``tatlas.load``, the contract tests and the CLI all go through it."""

from __future__ import annotations

import importlib
from typing import Any

from ._index import MODULES, OWNERS
from .spec import Converter, System, TrainTask

__all__ = ["Converter", "System", "TrainTask", "get_system", "owner_of", "register", "system_of", "systems"]

_ADDED: dict[str, System] = {}


def _builtin() -> dict[str, System]:
    from ._builtin import BUILTIN  # imported on first use: `import tatlas` builds no system

    return {s.name: s for s in BUILTIN}


def register(system: System) -> System:
    """Add a system of your own (a third-party package's ``SYSTEM`` record); names are unique."""
    if system.name in _builtin() or system.name in _ADDED:
        raise ValueError(f"system {system.name!r} is registered twice")
    _ADDED[system.name] = system
    return system


def systems() -> dict[str, System]:
    return {**_builtin(), **_ADDED}


def _one(name: str) -> System:
    """A built-in system by name, importing only its own package (:mod:`._index`)."""
    return importlib.import_module(MODULES[name]).SYSTEM


def get_system(name: str) -> System:
    if name in _ADDED:
        return _ADDED[name]
    if name in MODULES:
        return _one(name)
    found = systems()
    raise ValueError(f"unknown system {name!r}; registered systems: {', '.join(sorted(found))}")


def owner_of(table: str, key: Any) -> System | None:
    """The system whose ``table`` (``formats``, ``ct2_specs``, ``hf_model_types``) holds ``key``:
    the index's owner first (one package imported), else every registered system; ``None`` if none."""
    hinted = OWNERS.get((table, key))
    if hinted is not None and key in getattr(_one(hinted), table):
        return _one(hinted)
    return next((s for s in systems().values() if key in getattr(s, table)), None)


def system_of(model_or_config: Any) -> System:
    config = getattr(model_or_config, "config", model_or_config)
    parts = type(config).__module__.split(".")  # tatlas.models.<name>.config: try that system first
    if len(parts) > 2 and parts[:2] == ["tatlas", "models"] and parts[2] in MODULES:
        guess = _one(parts[2])
        if isinstance(config, guess.config_cls):
            return guess
    for s in systems().values():
        if isinstance(config, s.config_cls):
            return s
    raise ValueError(f"{type(config).__name__} is not the config of any registered system")
