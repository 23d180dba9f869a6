"""CLIP (Radford et al. 2021): image and text towers in one embedding space (``clip``)."""

from .config import PRESETS, CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from .model import CLIP, CLIPLogits

__all__ = ["CLIP", "CLIPConfig", "CLIPLogits", "CLIPTextConfig", "CLIPVisionConfig", "PRESETS"]
