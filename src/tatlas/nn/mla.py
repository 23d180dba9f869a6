"""Multi-head latent attention (DeepSeek-AI 2024, "DeepSeek-V2", §2.1; used by DeepSeek-V3).

Keys and values are produced from a small shared latent ``c_kv = RMSNorm(W_a x)`` (rank
``kv_rank``) plus one rotary key ``k_rope`` shared by all heads; queries optionally through their
own low-rank bottleneck. Only ``c_kv`` and ``k_rope`` are cached: per token ``kv_rank + rope_dim``
numbers instead of ``2 * H * D``. Each head's key is ``[k_nope_h | k_rope]`` with
``k_nope_h, v_h = W_b c_kv``; rotary positions touch only the ``rope_dim`` part.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .attention import causal_mask, sdpa
from .norms import RMSNorm
from .positions import Rope, apply_rotary


class LatentAttention(nn.Module):
    """``x [B, T, C] -> [B, T, C]``. Cache layout: ``k`` slot = latent ``[B, 1, S, kv_rank]``,
    ``v`` slot = rotary key ``[B, 1, S, rope_dim]`` (a :class:`StaticKVCache` with ``v_dim``)."""

    def __init__(
        self, *, dim: int, heads: int, kv_rank: int, nope_dim: int, rope_dim: int, v_dim: int,
        q_rank: int | None = None, bias: bool = False, eps: float = 1e-6, scale: float | None = None,
    ) -> None:
        super().__init__()
        self.heads, self.kv_rank, self.nope_dim, self.rope_dim, self.v_dim = heads, kv_rank, nope_dim, rope_dim, v_dim
        qk_dim = nope_dim + rope_dim
        self.scale = scale if scale is not None else qk_dim**-0.5
        if q_rank is None:
            self.q = nn.Linear(dim, heads * qk_dim, bias=False)
            self.q_a = self.q_norm = self.q_b = None
        else:
            self.q = None
            self.q_a = nn.Linear(dim, q_rank, bias=bias)
            self.q_norm = RMSNorm(q_rank, eps=eps)
            self.q_b = nn.Linear(q_rank, heads * qk_dim, bias=False)
        self.kv_a = nn.Linear(dim, kv_rank + rope_dim, bias=bias)
        self.kv_norm = RMSNorm(kv_rank, eps=eps)
        self.kv_b = nn.Linear(kv_rank, heads * (nope_dim + v_dim), bias=False)
        self.out = nn.Linear(heads * v_dim, dim, bias=bias)

    def forward(
        self, x: Tensor, *, mask: Tensor | None = None, causal: bool = False, rope: Rope | None = None,
        cache=None, input_pos: Tensor | None = None,
    ) -> Tensor:
        b, t, _ = x.shape
        q = self.q(x) if self.q is not None else self.q_b(self.q_norm(self.q_a(x)))
        q = q.unflatten(-1, (self.heads, self.nope_dim + self.rope_dim)).transpose(1, 2)  # [B, H, T, Dqk]
        q_nope, q_rope = q.split([self.nope_dim, self.rope_dim], dim=-1)
        latent, k_rope = self.kv_a(x).split([self.kv_rank, self.rope_dim], dim=-1)
        latent = self.kv_norm(latent)[:, None]  # [B, 1, T, kv_rank]
        k_rope = k_rope[:, None]  # [B, 1, T, rope_dim]
        if rope is not None:
            q_rope, k_rope = apply_rotary(q_rope, rope), apply_rotary(k_rope, rope)
        if cache is not None:
            latent, k_rope = cache.update(latent, k_rope, input_pos)  # [B, 1, S, *]
        s = latent.shape[-2]
        kv = self.kv_b(latent[:, 0]).unflatten(-1, (self.heads, self.nope_dim + self.v_dim)).transpose(1, 2)
        k_nope, v = kv.split([self.nope_dim, self.v_dim], dim=-1)  # [B, H, S, *]
        k = torch.cat([k_nope, k_rope.expand(b, self.heads, s, self.rope_dim)], dim=-1)
        q = torch.cat([q_nope, q_rope], dim=-1)
        is_causal = causal and mask is None and t == s
        if causal and not is_causal:
            cm = causal_mask(t, s, device=x.device)
            mask = cm if mask is None else mask & cm
        out = sdpa(q, k, v, attn_mask=mask, is_causal=is_causal, scale=self.scale)  # [B, H, T, Dv]
        return self.out(out.transpose(1, 2).flatten(2))

    def extra_repr(self) -> str:
        return f"heads={self.heads}, kv_rank={self.kv_rank}, nope={self.nope_dim}, rope={self.rope_dim}, v={self.v_dim}"
