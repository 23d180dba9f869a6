"""The decoder-only language model family (``llm``)."""

from .config import PRESETS, LLMConfig
from .model import LLM

__all__ = ["LLM", "LLMConfig", "PRESETS"]
