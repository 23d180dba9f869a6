"""Imports every built-in system so that it registers itself."""

from .llm import system as _llm  # noqa: F401
from .imagegpt import system as _imagegpt  # noqa: F401
from .clip import system as _clip  # noqa: F401
from .whisper import system as _whisper  # noqa: F401
from .decision_transformer import system as _decision_transformer  # noqa: F401
