"""ImageGPT (Chen et al. 2020): colour-cluster tokens, a GPT over pixels, completion, linear probes."""

from .config import PRESETS, ImageGPTConfig
from .model import ImageGPT
from .palette import Palette, fit_palette

__all__ = ["PRESETS", "ImageGPT", "ImageGPTConfig", "Palette", "fit_palette"]
