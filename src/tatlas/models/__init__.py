"""The systems: one package each (config, model, converters, task, and its ``SYSTEM`` record),
listed in :mod:`.registry`."""

from .registry import System, TrainTask, get_system, register, system_of, systems

__all__ = ["System", "TrainTask", "get_system", "register", "system_of", "systems"]
