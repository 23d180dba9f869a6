"""Imports every built-in system so that it registers itself."""

from .llm import system as _llm  # noqa: F401
