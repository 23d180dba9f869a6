"""Flamingo (Alayrac et al. 2022): Perceiver resampler and tanh-gated cross-attention into a frozen LM."""

from .config import PRESETS, CrossConfig, FlamingoConfig, ResamplerConfig
from .model import Flamingo, FlamingoCache

__all__ = ["PRESETS", "CrossConfig", "Flamingo", "FlamingoCache", "FlamingoConfig", "ResamplerConfig"]
