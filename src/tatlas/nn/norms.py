"""Normalisation layers, computed in float32 and cast back to the input dtype.

- ``LayerNorm``: Ba et al. 2016, "Layer Normalization" (optionally without bias).
- ``RMSNorm``: Zhang & Sennrich 2019, "Root Mean Square Layer Normalization". ``offset=1.0`` gives
  the Gemma variant that scales by ``(1 + w)`` with ``w`` initialised to zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LayerNorm(nn.Module):
    """LayerNorm over the last dimension, in float32. ``x: [*, C] -> [*, C]``."""

    def __init__(self, dim: int, *, eps: float = 1e-5, bias: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight.float()
        b = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), w.shape, w, b, self.eps).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, bias={self.bias is not None}"


class RMSNorm(nn.Module):
    """RMSNorm over the last dimension, in float32: ``x / rms(x) * (offset + w)``. ``[*, C] -> [*, C]``."""

    def __init__(self, dim: int, *, eps: float = 1e-6, offset: float = 0.0) -> None:
        super().__init__()
        self.eps = eps
        self.offset = offset
        self.weight = nn.Parameter(torch.full((dim,), 1.0 - offset))

    def forward(self, x: Tensor) -> Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (h * (self.offset + self.weight.float())).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, offset={self.offset}"
