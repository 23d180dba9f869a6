"""Decision Transformer (Chen et al. 2021): return-conditioned control learned from offline data."""

from .act import ActOptions, ReturnConditionedPolicy
from .config import PRESETS, DecisionTransformerConfig
from .model import DecisionOutput, DecisionTransformer

__all__ = ["PRESETS", "ActOptions", "DecisionOutput", "DecisionTransformer", "DecisionTransformerConfig",
           "ReturnConditionedPolicy"]
