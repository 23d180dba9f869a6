"""The registry of systems: the built-in ones (:data:`tatlas.models._builtin.BUILTIN`, a tuple of
each system's ``SYSTEM`` record) and those a program adds with :func:`register`.
``tatlas.create``/``tatlas.load``, the contract tests and the CLI all go through it."""

from __future__ import annotations

from typing import Any

from .spec import Converter, System, TrainTask

__all__ = ["Converter", "System", "TrainTask", "get_system", "register", "system_of", "systems"]

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


def get_system(name: str) -> System:
    found = systems()
    if name not in found:
        raise ValueError(f"unknown system {name!r}; registered systems: {', '.join(sorted(found))}")
    return found[name]


def system_of(model_or_config: Any) -> System:
    config = getattr(model_or_config, "config", model_or_config)
    for s in systems().values():
        if isinstance(config, s.config_cls):
            return s
    raise ValueError(f"{type(config).__name__} is not the config of any registered system")
