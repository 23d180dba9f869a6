"""LLaVA-1.5 and LLaVA-NeXT: a CLIP tower, an MLP connector and a decoder LM (see :mod:`.model`)."""

from .config import PRESETS, LlavaConfig
from .model import Llava

__all__ = ["PRESETS", "Llava", "LlavaConfig"]
