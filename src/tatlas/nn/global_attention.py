"""Global attention (Jumper et al. 2021, AlphaFold2 Supplement Alg. 19 "MSAColumnGlobalAttention"
lines 2-7): one query per head — the masked mean of all queries — against keys and values of a
single shared head, gated per query row. Its cost is linear in the number of rows, which is what
lets AlphaFold2 attend over thousands of extra MSA sequences."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class GlobalAttention(nn.Module):
    """``x [*, N, C]`` (N rows, e.g. the sequences of one MSA column), ``mask [*, N]`` -> ``[*, N, C_out]``.

    Parameters: ``q`` (``C -> H*D``), ``k`` and ``v`` (``C -> D``, one head shared by all), ``gate``
    (``C -> H*D``, with bias), ``out`` (``H*D -> C_out``, with bias)."""

    def __init__(self, *, dim: int, heads: int, head_dim: int | None = None, out_dim: int | None = None) -> None:
        super().__init__()
        if head_dim is None:
            if dim % heads:
                raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
            head_dim = dim // heads
        self.heads, self.head_dim = heads, head_dim
        self.q = nn.Linear(dim, heads * head_dim, bias=False)
        self.k = nn.Linear(dim, head_dim, bias=False)
        self.v = nn.Linear(dim, head_dim, bias=False)
        self.gate = nn.Linear(dim, heads * head_dim, bias=True)
        self.out = nn.Linear(heads * head_dim, out_dim or dim, bias=True)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        mask = mask.to(x.dtype)
        mean = (mask[..., None] * x).sum(-2) / (mask.sum(-1, keepdim=True) + 1e-10)  # [*, C]
        q = self.q(mean).unflatten(-1, (self.heads, self.head_dim)) * self.head_dim**-0.5  # [*, H, D]
        k, v = self.k(x), self.v(x)  # [*, N, D]
        logits = q @ k.transpose(-1, -2) + 1e9 * (mask[..., None, :] - 1.0)  # [*, H, N]
        avg = torch.softmax(logits, dim=-1) @ v  # [*, H, D]
        gate = torch.sigmoid(self.gate(x)).unflatten(-1, (self.heads, self.head_dim))  # [*, N, H, D]
        return self.out((avg[..., None, :, :] * gate).flatten(-2))  # [*, N, C_out]

    def extra_repr(self) -> str:
        return f"heads={self.heads}, head_dim={self.head_dim}"
