"""Configuration of the decoder-only language model family: Llama, Mistral, Qwen2 and Gemma 3
(text, and image-text with interleaved image tokens)."""

from __future__ import annotations

import operator
from dataclasses import dataclass, replace

from ...nn.positions import Llama3Scaling
from ..vision import ViTConfig

LAYER_TYPES = ("full", "sliding")


@dataclass(frozen=True, kw_only=True)
class VisionConfig(ViTConfig):
    """The vision encoder (a ViT, SigLIP-style in Gemma 3) and its projection to image tokens."""

    act: str = "gelu_tanh"
    tokens_per_image: int = 256  # patches average-pooled to this many tokens (a square number)

    def __post_init__(self) -> None:
        super().__post_init__()
        side = round(self.tokens_per_image**0.5)
        if side * side != self.tokens_per_image or self.grid % side:
            raise ValueError(
                f"VisionConfig: tokens_per_image must be a square whose side divides the {self.grid}x{self.grid} "
                f"patch grid, got {self.tokens_per_image}"
            )


@dataclass(frozen=True, kw_only=True)
class MoEConfig:
    """Mixture-of-experts feed-forward layers (:class:`tatlas.nn.moe.MoE`) in place of the dense MLP.

    ``router``: ``"topk"`` (Mixtral; Qwen2-MoE with ``normalize=False`` and a gated shared expert)
    or ``"deepseek"`` (DeepSeek-V3: sigmoid scores, bias-corrected group-limited top-k, ``scaling``).
    ``layers``: indices of the MoE layers (``None``: every layer); the others keep the dense MLP.
    ``aux_loss_weight``: weight of the load-balancing loss added by the training task."""

    experts: int
    k: int
    hidden: int
    router: str = "topk"
    normalize: bool = True
    shared_hidden: int = 0
    shared_gate: bool = False
    groups: int = 1
    topk_groups: int = 1
    scaling: float = 1.0
    layers: tuple[int, ...] | None = None
    aux_loss_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.router not in ("topk", "deepseek"):
            raise ValueError(f"MoEConfig.router: expected 'topk' or 'deepseek', got {self.router!r}")
        if not 1 <= self.k <= self.experts:
            raise ValueError(f"MoEConfig: k must be in 1..experts ({self.experts}), got {self.k}")

    def is_moe(self, layer: int) -> bool:
        return self.layers is None or layer in self.layers


@dataclass(frozen=True, kw_only=True)
class LatentConfig:
    """Multi-head latent attention (DeepSeek-V2/V3): latent rank of keys/values (and queries), and
    the per-head widths of the position-free part, the rotary part and the values."""

    kv_rank: int
    nope_dim: int
    rope_dim: int
    v_dim: int
    q_rank: int | None = None


@dataclass(frozen=True, kw_only=True)
class LLMConfig:
    """A decoder LM: every size stated (as Hugging Face configs state them after construction), so a
    config reads the same everywhere it is used. ``head_dim`` is each attention head's width (Llama:
    ``dim // heads``; Gemma: its own); ``layer_types`` is each layer's attention, ``"full"`` or
    ``"sliding"`` (within ``sliding_window``). :func:`uniform_layers` spells the common cases."""

    vocab_size: int
    dim: int
    layers: int
    heads: int
    kv_heads: int
    mlp_hidden: int
    head_dim: int
    layer_types: tuple[str, ...]
    max_positions: int = 2048
    rope_theta: float = 10_000.0
    rope_scaling: Llama3Scaling | None = None
    rope_local_theta: float | None = None  # rotary theta of sliding-window layers (Gemma 3); None: rope_theta
    norm_eps: float = 1e-5
    norm_offset: float = 0.0  # 1.0: Gemma's RMSNorm scaling by (1 + w)
    embed_scale: bool = False  # multiply token embeddings by sqrt(dim) (Gemma)
    qk_norm: bool = False  # RMSNorm on each head's queries and keys (Gemma 3)
    sandwich_norm: bool = False  # norms after attention and MLP as well as before (Gemma 2/3)
    query_scale: float | None = None  # attention scale = query_scale ** -0.5 (Gemma); None: head_dim
    qkv_bias: bool = False  # Qwen2
    sliding_window: int | None = None  # Mistral, Gemma 3's local layers
    final_softcap: float | None = None  # logits = cap * tanh(logits / cap)
    tie_embeddings: bool = False
    act: str = "silu"
    rope_interleaved: bool = False  # rotate pairs (2i, 2i+1) (DeepSeek-V3) instead of (i, i + D/2)
    moe: MoEConfig | None = None  # mixture-of-experts MLPs
    latent: LatentConfig | None = None  # multi-head latent attention instead of GQA
    vision: VisionConfig | None = None  # an image encoder whose tokens replace image placeholders
    image_token_id: int | None = None

    def __post_init__(self) -> None:
        for name in ("vocab_size", "dim", "layers", "heads", "kv_heads", "mlp_hidden", "head_dim", "max_positions"):
            if getattr(self, name) <= 0:
                raise ValueError(f"LLMConfig.{name} must be positive, got {getattr(self, name)}")
        if self.heads % self.kv_heads:
            raise ValueError(f"LLMConfig: heads ({self.heads}) must be divisible by kv_heads ({self.kv_heads})")
        if self.sliding_window is not None and self.sliding_window <= 0:
            raise ValueError(f"LLMConfig.sliding_window must be positive, got {self.sliding_window}")
        if len(self.layer_types) != self.layers or any(t not in LAYER_TYPES for t in self.layer_types):
            raise ValueError(
                f"LLMConfig.layer_types: expected {self.layers} entries (one per layer) from {LAYER_TYPES}, got "
                f"{tuple(self.layer_types)}"
            )
        if "sliding" in self.layer_types and self.sliding_window is None:
            raise ValueError("LLMConfig.layer_types has sliding layers but sliding_window is None")
        if (self.vision is None) != (self.image_token_id is None):
            raise ValueError("LLMConfig: vision and image_token_id go together (both set or both None)")

    def vary(self, **changes) -> LLMConfig:
        """``dataclasses.replace`` that keeps derived sizes derived: where ``head_dim`` is
        ``dim // heads`` and is not given, it follows new ``dim``/``heads``; where every layer has
        one attention type and ``layer_types`` is not given, it follows new ``layers``/``sliding_window``
        (``tatlas.create("llm", "tiny", layers=4, dim=128)`` is the tiny model made larger)."""
        dim, heads = changes.get("dim", self.dim), changes.get("heads", self.heads)
        if "head_dim" not in changes and self.head_dim * self.heads == self.dim and heads > 0:
            if dim % heads:
                raise ValueError(f"LLMConfig: dim ({dim}) must be divisible by heads ({heads}), or give head_dim")
            changes["head_dim"] = dim // heads
        if "layer_types" not in changes and len(set(self.layer_types)) == 1 and changes.get("layers", self.layers) > 0:
            changes["layer_types"] = uniform_layers(changes.get("layers", self.layers),
                                                    changes.get("sliding_window", self.sliding_window))
        return replace(self, **changes)

    @staticmethod
    def upgrade_saved(data: dict) -> dict:
        """A config saved before ``head_dim`` and ``layer_types`` were always stated (``None`` meant
        ``dim // heads`` and every layer ``"sliding"`` if a window was set, else ``"full"``) -> today's."""
        data = dict(data)
        dim, heads, layers = data.get("dim"), data.get("heads"), data.get("layers")
        count = lambda v: type(v) is int and v > 0  # noqa: E731 - anything else is left to the type checks
        if data.get("head_dim") is None and count(dim) and count(heads):
            data["head_dim"] = dim // heads
        if data.get("layer_types") is None and count(layers):
            data["layer_types"] = uniform_layers(layers, data.get("sliding_window"))
        return data


MAX_LAYERS = 100_000  # a file stating more layers is corrupt (the deepest real models have a few hundred)


def uniform_layers(layers: int, sliding_window: int | None = None) -> tuple[str, ...]:
    """Every layer ``"sliding"`` when a window is set (Mistral), else ``"full"`` (Llama)."""
    try:
        count = operator.index(layers)  # ints, numpy ints; not a float or a string
    except TypeError:
        count = -1
    if not 0 <= count <= MAX_LAYERS:
        raise ValueError(f"LLMConfig.layers: expected a number of layers 0..{MAX_LAYERS:,}, got {layers!r}")
    return ("sliding" if sliding_window is not None else "full",) * count


def _gemma3_types(layers: int, pattern: int = 6) -> tuple[str, ...]:
    return tuple("full" if (i + 1) % pattern == 0 else "sliding" for i in range(layers))


_LLAMA3_SCALING = dict(low_freq_factor=1.0, high_freq_factor=4.0, original_max_positions=8192)

PRESETS: dict[str, LLMConfig] = {
    "tiny": LLMConfig(vocab_size=259, dim=64, layers=2, heads=4, kv_heads=2, head_dim=16, mlp_hidden=172,
                      layer_types=uniform_layers(2), max_positions=512),
    "tiny-gemma3-vision": LLMConfig(
        vocab_size=259, dim=64, layers=2, heads=4, kv_heads=2, head_dim=16, mlp_hidden=128, max_positions=512,
        rope_theta=1_000_000.0, rope_local_theta=10_000.0, norm_eps=1e-6, norm_offset=1.0, embed_scale=True,
        qk_norm=True, sandwich_norm=True, query_scale=16.0, sliding_window=32, layer_types=("sliding", "full"),
        tie_embeddings=True, act="gelu_tanh", image_token_id=258,
        vision=VisionConfig(image_size=32, patch=4, dim=32, layers=2, heads=2, mlp_hidden=64, tokens_per_image=16),
    ),
    "tiny-moe": LLMConfig(
        vocab_size=259, dim=64, layers=2, heads=4, kv_heads=2, head_dim=16, mlp_hidden=172,
        layer_types=uniform_layers(2), max_positions=512, moe=MoEConfig(experts=8, k=2, hidden=86, aux_loss_weight=0.01),
    ),
    "tiny-deepseek": LLMConfig(
        vocab_size=259, dim=64, layers=2, heads=4, kv_heads=4, head_dim=16, mlp_hidden=172,
        layer_types=uniform_layers(2), max_positions=512, norm_eps=1e-6,
        rope_interleaved=True, latent=LatentConfig(kv_rank=32, nope_dim=16, rope_dim=8, v_dim=16, q_rank=48),
        moe=MoEConfig(experts=8, k=2, hidden=32, router="deepseek", groups=2, topk_groups=1, scaling=2.5,
                      shared_hidden=32, layers=(1,)),
    ),
    "Mixtral-8x7B": LLMConfig(
        vocab_size=32_000, dim=4096, layers=32, heads=32, kv_heads=8, head_dim=128, mlp_hidden=14_336,
        layer_types=uniform_layers(32), max_positions=32_768, rope_theta=1_000_000.0, norm_eps=1e-5,
        moe=MoEConfig(experts=8, k=2, hidden=14_336),
    ),
    "Llama-3.2-1B": LLMConfig(
        vocab_size=128_256, dim=2048, layers=16, heads=32, kv_heads=8, mlp_hidden=8192, head_dim=64,
        layer_types=uniform_layers(16), max_positions=131_072, rope_theta=500_000.0, norm_eps=1e-5, tie_embeddings=True,
        rope_scaling=Llama3Scaling(factor=32.0, **_LLAMA3_SCALING),
    ),
    "Llama-3.2-3B": LLMConfig(
        vocab_size=128_256, dim=3072, layers=28, heads=24, kv_heads=8, mlp_hidden=8192, head_dim=128,
        layer_types=uniform_layers(28), max_positions=131_072, rope_theta=500_000.0, norm_eps=1e-5, tie_embeddings=True,
        rope_scaling=Llama3Scaling(factor=32.0, **_LLAMA3_SCALING),
    ),
    "Llama-3.1-8B": LLMConfig(
        vocab_size=128_256, dim=4096, layers=32, heads=32, kv_heads=8, head_dim=128, mlp_hidden=14_336,
        layer_types=uniform_layers(32), max_positions=131_072, rope_theta=500_000.0, norm_eps=1e-5,
        rope_scaling=Llama3Scaling(factor=8.0, **_LLAMA3_SCALING),
    ),
    "Mistral-7B": LLMConfig(
        vocab_size=32_000, dim=4096, layers=32, heads=32, kv_heads=8, head_dim=128, mlp_hidden=14_336,
        layer_types=uniform_layers(32, 4096), max_positions=32_768, rope_theta=10_000.0, norm_eps=1e-5,
        sliding_window=4096,
    ),
    "Qwen2.5-0.5B": LLMConfig(
        vocab_size=151_936, dim=896, layers=24, heads=14, kv_heads=2, head_dim=64, mlp_hidden=4864,
        layer_types=uniform_layers(24), max_positions=32_768, rope_theta=1_000_000.0, norm_eps=1e-6, qkv_bias=True, tie_embeddings=True,
    ),
    "Gemma-3-1B": LLMConfig(
        vocab_size=262_144, dim=1152, layers=26, heads=4, kv_heads=1, head_dim=256, mlp_hidden=6912,
        max_positions=32_768, rope_theta=1_000_000.0, rope_local_theta=10_000.0, norm_eps=1e-6, norm_offset=1.0,
        embed_scale=True, qk_norm=True, sandwich_norm=True, query_scale=256.0, sliding_window=512,
        layer_types=_gemma3_types(26), tie_embeddings=True, act="gelu_tanh",
    ),
}
