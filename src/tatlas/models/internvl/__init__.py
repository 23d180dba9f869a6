"""InternVL: the InternViT tower, pixel shuffle, an MLP connector and a decoder LM (see :mod:`.model`)."""

from .config import PRESETS, InternViTConfig, InternVLConfig
from .model import InternVL

__all__ = ["PRESETS", "InternVL", "InternViTConfig", "InternVLConfig"]
