"""AlphaFold2 (Jumper et al. 2021): the Evoformer trunk, templates, the structure module (``evoformer``)."""

from .config import PRESETS, BlockConfig, EvoformerConfig, StructureConfig, TemplateConfig
from .model import Evoformer, EvoformerOutput, Recycled
from .templates import TemplateFeatures

__all__ = ["BlockConfig", "Evoformer", "EvoformerConfig", "EvoformerOutput", "PRESETS", "Recycled", "StructureConfig",
           "TemplateConfig", "TemplateFeatures"]
