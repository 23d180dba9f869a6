"""The systems: one package each (config, model, converters), registered in :mod:`.registry`."""

from .registry import System, get_system, register, system_of, systems

__all__ = ["System", "get_system", "register", "system_of", "systems"]
