"""Shared blocks: the only place attention, caches, positions, norms, MLPs, patch embeddings,
blocks, chunking and initialisers are written.

Shape legend used in every docstring and beside every reshape:

    B  batch            T  query length       S  key length
    H  query heads      G  key/value heads    D  head dim
    C  width            N_res residues        N_seq sequences (MSA rows)
    N  tokens (flattened)  E experts          k  experts per token   I expert width
    *  any leading dims
"""

from .attention import Attention, causal_mask, combine_mask, sdpa, softmax_attention
from .block import SandwichBlock, TransformerBlock, classic_block
from .cache import CrossKVCache, DecoderCache, DynamicKVCache, StaticKVCache
from .checks import check_finite, check_tokens
from .chunk import cache_chunk, chunked
from .contrastive import contrastive_accuracy, gather_with_grad, info_nce
from .decoder import CachedDecoderMixin
from .gated_xattn import GatedCrossAttentionBlock, media_attention
from .global_attention import GlobalAttention
from .init import init_normal_, initialise
from .linear import TiedLinear
from .mla import LatentAttention
from .moe import (
    CapacityExperts, DeepSeekRouter, ExpertChoiceRouter, Experts, MoE, ParallelExperts, Router, Routing, SwitchRouter,
    TopKRouter, load_balancing_loss, pooled_balance_loss, router_z_loss,
)
from .mlp import ACTIVATIONS, MLP, GatedMLP, activation, gelu_tanh, quick_gelu, relu_mlp
from .norms import LayerNorm, RMSNorm
from .patch import PatchEmbed2d, PatchEmbed3d, pixel_shuffle_tokens
from .quant import Int8Linear, quantize_int8_
from .resampler import PerceiverAttention, PerceiverResampler, ResamplerLayer
from .positions import (
    LearnedPositions,
    Llama3Scaling,
    Rope,
    RotaryEmbedding,
    apply_rotary,
    sinusoidal_positions,
)
from .vit import VisionTransformer

__all__ = [
    "ACTIVATIONS", "MLP", "Attention", "CachedDecoderMixin", "CrossKVCache", "DecoderCache", "DynamicKVCache", "GatedCrossAttentionBlock", "GatedMLP", "PerceiverAttention", "PerceiverResampler", "ResamplerLayer", "media_attention", "GlobalAttention", "CapacityExperts", "DeepSeekRouter", "ExpertChoiceRouter", "Experts", "MoE", "ParallelExperts", "Router", "Routing", "SwitchRouter", "TopKRouter", "load_balancing_loss", "pooled_balance_loss", "router_z_loss", "LatentAttention", "Int8Linear", "quantize_int8_",
    "LayerNorm", "LearnedPositions", "Llama3Scaling", "PatchEmbed2d", "PatchEmbed3d", "RMSNorm", "Rope",
    "RotaryEmbedding", "SandwichBlock", "StaticKVCache", "TiedLinear", "TransformerBlock", "VisionTransformer", "activation", "apply_rotary", "causal_mask", "check_finite", "check_tokens",
    "cache_chunk", "chunked", "classic_block", "contrastive_accuracy", "gather_with_grad", "info_nce", "pixel_shuffle_tokens", "combine_mask", "gelu_tanh", "init_normal_", "initialise", "quick_gelu", "relu_mlp", "sdpa",
    "sinusoidal_positions", "softmax_attention",
]
