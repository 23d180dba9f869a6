"""A Llama-style decoder-only language model (Touvron et al. 2023, "LLaMA", §2.2): token embedding,
pre-RMSNorm blocks of rotary grouped-query attention and a SwiGLU MLP, final RMSNorm, LM head.
Mistral's sliding-window attention and Qwen2's q/k/v biases are config switches of the same model."""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from ...nn import (
    Attention,
    CachedDecoderMixin,
    DecoderCache,
    GatedMLP,
    RMSNorm,
    RotaryEmbedding,
    TransformerBlock,
    causal_mask,
)
from .config import LLMConfig


class LLM(CachedDecoderMixin, nn.Module):
    def __init__(self, config: LLMConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.dim)
        self.rotary = RotaryEmbedding(dim=c.head_size, theta=c.rope_theta, scaling=c.rope_scaling)
        self.layers = nn.ModuleList(
            TransformerBlock(
                dim=c.dim,
                attn=Attention(dim=c.dim, heads=c.heads, kv_heads=c.kv_heads, head_dim=c.head_size,
                               qkv_bias=c.qkv_bias),
                mlp=GatedMLP(dim=c.dim, hidden=c.mlp_hidden, act=c.act),
                norm=partial(RMSNorm, eps=c.norm_eps),
            )
            for _ in range(c.layers)
        )
        self.norm = RMSNorm(c.dim, eps=c.norm_eps)
        self.lm_head = nn.Linear(c.dim, c.vocab_size, bias=False)
        self.tie_weights()

    def tie_weights(self) -> None:
        if self.config.tie_embeddings:
            self.lm_head.weight = self.embed.weight

    def new_cache(
        self, batch: int, max_len: int, *, static: bool = True, dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> DecoderCache:
        if max_len > self.config.max_positions:
            raise ValueError(f"cache of {max_len} slots exceeds the model's {self.config.max_positions} positions")
        return DecoderCache(
            batch=batch, max_len=max_len, layers=self.config.layers, kv_heads=self.config.kv_heads,
            head_dim=self.config.head_size, static=static, dtype=dtype or self.embed.weight.dtype,
            device=device or self.embed.weight.device,
        )

    def forward(
        self, tokens: Tensor, *, cache: DecoderCache | None = None, input_pos: Tensor | None = None
    ) -> Tensor:
        """``tokens [B, T]`` -> logits ``[B, T, V]``. With a ``cache``, the tokens go to slots
        ``input_pos [T]`` and attend everything cached before them."""
        if tokens.dim() != 2 or tokens.dtype not in (torch.long, torch.int32, torch.int64):
            raise ValueError(f"tokens: expected an integer tensor [B, T], got {tokens.dtype} {list(tokens.shape)}")
        b, t = tokens.shape
        window = self.config.sliding_window
        if cache is None:
            if t > self.config.max_positions:
                raise ValueError(f"sequence of {t} tokens exceeds the model's {self.config.max_positions} positions")
            positions = torch.arange(t, device=tokens.device)
            mask, causal = None, True
            if window is not None and t > window:
                mask, causal = causal_mask(t, t, window=window, device=tokens.device), False
        else:
            if input_pos is None:
                raise ValueError("decoding with a cache needs input_pos (the slots of these tokens)")
            positions = cache.positions(input_pos)  # [B, T]
            mask, causal = cache.mask(input_pos, window=window), False
        rope = self.rotary(positions)
        x = self.embed(tokens)  # [B, T, C]
        for i, layer in enumerate(self.layers):
            x = layer(x, mask=mask, causal=causal, rope=rope,
                      cache=None if cache is None else cache.layers[i], input_pos=input_pos)
        return self.lm_head(self.norm(x))
