"""The Perceiver resampler (Alayrac et al. 2022, "Flamingo", §2.1 and Algorithm 1; after Jaegle et
al. 2021, "Perceiver"): a fixed set of learned latent queries attends to a variable number of visual
features, so every image (or video) becomes the same small number of visual tokens.

Per layer, the keys and values are the concatenation of the (normalised) visual features and the
(normalised) latents themselves, ``x + attn(q=latents, kv=[features; latents])``, then a
feed-forward ``x + ff(norm(x))``; a final LayerNorm. Before the layers, a learned embedding per
frame of a video (``max_frames``) and one per media item of a sequence (``max_media``, the paper's
time embeddings) are added to the features. OpenFlamingo's and IDEFICS's resamplers are this one
(IDEFICS: ReLU feed-forward, optional LayerNorm over each head's queries and keys)."""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from .attention import Attention
from .mlp import MLP
from .norms import LayerNorm


class PerceiverAttention(nn.Module):
    """``latents [*, n, C]`` attend to ``[features; latents]`` (``features [*, V, C]``) -> ``[*, n, C]``."""

    def __init__(self, *, dim: int, heads: int, head_dim: int, qk_norm: bool = False, eps: float = 1e-5) -> None:
        super().__init__()
        self.media_norm = LayerNorm(dim, eps=eps)
        self.latent_norm = LayerNorm(dim, eps=eps)
        self.attn = Attention(dim=dim, heads=heads, head_dim=head_dim, qk_norm=partial(LayerNorm, eps=1e-5) if qk_norm
                              else None)

    def forward(self, features: Tensor, latents: Tensor) -> Tensor:
        lat = self.latent_norm(latents)
        return self.attn(lat, torch.cat([self.media_norm(features), lat], dim=-2))


class ResamplerLayer(nn.Module):
    """``latents + attn(features, latents)``, then ``+ mlp(mlp_norm(.))``."""

    def __init__(self, *, dim: int, heads: int, head_dim: int, mlp_hidden: int, act: str, qk_norm: bool,
                 eps: float) -> None:
        super().__init__()
        self.attn = PerceiverAttention(dim=dim, heads=heads, head_dim=head_dim, qk_norm=qk_norm, eps=eps)
        self.mlp_norm = LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim=dim, hidden=mlp_hidden, act=act, bias=False)

    def forward(self, features: Tensor, latents: Tensor) -> Tensor:
        latents = latents + self.attn(features, latents)
        return latents + self.mlp(self.mlp_norm(latents))


class PerceiverResampler(nn.Module):
    """Visual features -> ``latents`` tokens per media item.

    ``forward(features)``: ``[B, T, F, V, C]`` (``T`` media items of ``F`` frames of ``V`` tokens)
    -> ``[B, T, n, C]``; or ``[N, V, C]`` (``N`` single images) -> ``[N, n, C]``."""

    def __init__(
        self, *, dim: int, depth: int, heads: int, head_dim: int, latents: int, mlp_hidden: int, act: str = "gelu",
        max_media: int | None = None, max_frames: int | None = None, qk_norm: bool = False, eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(latents, dim))
        self.frame_embed = nn.Parameter(torch.randn(max_frames, dim)) if max_frames else None
        self.time_embed = nn.Parameter(torch.randn(max_media, dim)) if max_media else None
        self.layers = nn.ModuleList(
            ResamplerLayer(dim=dim, heads=heads, head_dim=head_dim, mlp_hidden=mlp_hidden, act=act, qk_norm=qk_norm,
                           eps=eps)
            for _ in range(depth)
        )
        self.norm = LayerNorm(dim, eps=eps)

    def forward(self, features: Tensor) -> Tensor:
        if features.dim() == 3:
            return self(features[:, None, None])[:, 0]
        if features.dim() != 5:
            raise ValueError(f"resampler input: expected [B, T, F, V, C] or [N, V, C], got {list(features.shape)}")
        b, t, f, v, c = features.shape
        if self.frame_embed is not None:
            if f > self.frame_embed.shape[0]:
                raise ValueError(f"{f} frames per media item exceed the resampler's {self.frame_embed.shape[0]}")
            features = features + self.frame_embed[:f, None].to(features.dtype)  # [F, 1, C]
        features = features.reshape(b, t, f * v, c)  # frames' tokens side by side
        if self.time_embed is not None:
            if t > self.time_embed.shape[0]:
                raise ValueError(f"{t} media items exceed the resampler's {self.time_embed.shape[0]} time embeddings")
            features = features + self.time_embed[:t, None].to(features.dtype)  # [T, 1, C]
        latents = self.latents.to(features.dtype).expand(b, t, *self.latents.shape)  # [B, T, n, C]
        for layer in self.layers:
            latents = layer(features, latents)
        return self.norm(latents)
