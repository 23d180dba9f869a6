"""Configuration of the decoder-only language model family (Llama, Mistral, Qwen2)."""

from __future__ import annotations

from dataclasses import dataclass

from ...nn.positions import Llama3Scaling


@dataclass(frozen=True, kw_only=True)
class LLMConfig:
    vocab_size: int
    dim: int
    layers: int
    heads: int
    kv_heads: int
    mlp_hidden: int
    head_dim: int | None = None  # default dim // heads
    max_positions: int = 2048
    rope_theta: float = 10_000.0
    rope_scaling: Llama3Scaling | None = None
    norm_eps: float = 1e-5
    qkv_bias: bool = False  # Qwen2
    sliding_window: int | None = None  # Mistral
    tie_embeddings: bool = False
    act: str = "silu"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "dim", "layers", "heads", "kv_heads", "mlp_hidden", "max_positions"):
            if getattr(self, name) <= 0:
                raise ValueError(f"LLMConfig.{name} must be positive, got {getattr(self, name)}")
        if self.heads % self.kv_heads:
            raise ValueError(f"LLMConfig: heads ({self.heads}) must be divisible by kv_heads ({self.kv_heads})")
        if self.head_dim is None and self.dim % self.heads:
            raise ValueError(f"LLMConfig: dim ({self.dim}) must be divisible by heads ({self.heads})")
        if self.sliding_window is not None and self.sliding_window <= 0:
            raise ValueError(f"LLMConfig.sliding_window must be positive, got {self.sliding_window}")

    @property
    def head_size(self) -> int:
        return self.head_dim or self.dim // self.heads


PRESETS: dict[str, LLMConfig] = {
    "tiny": LLMConfig(vocab_size=259, dim=64, layers=2, heads=4, kv_heads=2, mlp_hidden=172, max_positions=512),
    "Llama-3.2-1B": LLMConfig(
        vocab_size=128_256, dim=2048, layers=16, heads=32, kv_heads=8, mlp_hidden=8192, head_dim=64,
        max_positions=131_072, rope_theta=500_000.0, norm_eps=1e-5, tie_embeddings=True,
        rope_scaling=Llama3Scaling(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                   original_max_positions=8192),
    ),
    "Llama-3.2-3B": LLMConfig(
        vocab_size=128_256, dim=3072, layers=28, heads=24, kv_heads=8, mlp_hidden=8192, head_dim=128,
        max_positions=131_072, rope_theta=500_000.0, norm_eps=1e-5, tie_embeddings=True,
        rope_scaling=Llama3Scaling(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                   original_max_positions=8192),
    ),
    "Llama-3.1-8B": LLMConfig(
        vocab_size=128_256, dim=4096, layers=32, heads=32, kv_heads=8, mlp_hidden=14_336,
        max_positions=131_072, rope_theta=500_000.0, norm_eps=1e-5,
        rope_scaling=Llama3Scaling(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                   original_max_positions=8192),
    ),
    "Mistral-7B": LLMConfig(
        vocab_size=32_000, dim=4096, layers=32, heads=32, kv_heads=8, mlp_hidden=14_336,
        max_positions=32_768, rope_theta=10_000.0, norm_eps=1e-5, sliding_window=4096,
    ),
    "Qwen2.5-0.5B": LLMConfig(
        vocab_size=151_936, dim=896, layers=24, heads=14, kv_heads=2, mlp_hidden=4864,
        max_positions=32_768, rope_theta=1_000_000.0, norm_eps=1e-6, qkv_bias=True, tie_embeddings=True,
    ),
}
