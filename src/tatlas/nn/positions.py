"""Position information: rotary, sinusoidal and learned absolute positions.

- Rotary position embedding (RoPE): Su et al. 2021, "RoFormer", §3.4. Two layouts of the rotated
  pairs: ``interleaved=False`` rotates ``(x[i], x[i + D/2])`` (GPT-NeoX, Llama); ``interleaved=True``
  rotates ``(x[2i], x[2i + 1])`` (GPT-J, the RoFormer paper, DeepSeek-V3's checkpoints).
- Llama-3 frequency scaling (Meta, "The Llama 3 Herd of Models", 2024): long wavelengths divided by
  ``factor``, short ones kept, a smooth ramp between.
- Sinusoidal positions: Vaswani et al. 2017, §3.5, in Whisper's ``[sin | cos]`` layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn


@dataclass(frozen=True, kw_only=True)
class Llama3Scaling:
    """Llama-3 rotary frequency scaling (``rope_type="llama3"`` in Hugging Face configs)."""

    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_positions: int = 8192

    def __post_init__(self) -> None:
        if self.factor <= 0 or self.high_freq_factor <= self.low_freq_factor:
            raise ValueError(
                f"Llama3Scaling needs factor > 0 and high_freq_factor > low_freq_factor, got {self}"
            )

    def __call__(self, inv_freq: Tensor) -> Tensor:
        low_wavelen = self.original_max_positions / self.low_freq_factor
        high_wavelen = self.original_max_positions / self.high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_wavelen, inv_freq / self.factor, inv_freq)
        smooth = (self.original_max_positions / wavelen - self.low_freq_factor) / (
            self.high_freq_factor - self.low_freq_factor
        )
        smoothed = (1 - smooth) * scaled / self.factor + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        return torch.where(medium, smoothed, scaled)


class Rope(NamedTuple):
    """Rotary angles for a set of positions: ``cos``/``sin`` are ``[*, T, D_rot]``, already laid out."""

    cos: Tensor
    sin: Tensor
    interleaved: bool


class RotaryEmbedding(nn.Module):
    """Computes rotary angles for integer positions: ``positions [*, T] -> Rope([*, T, D_rot])``.

    ``dim`` is the rotated width (the head dim, or less for partial rotary).
    """

    def __init__(
        self,
        *,
        dim: int,
        theta: float = 10_000.0,
        interleaved: bool = False,
        scaling: Llama3Scaling | None = None,
    ) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"rotary dim must be even, got {dim}")
        self.dim, self.theta, self.interleaved, self.scaling = dim, theta, interleaved, scaling
        # computed on the CPU, then put where the model is being built: on the meta device (a model
        # built to receive a checkpoint) ``theta ** x`` runs through torch's Python references, whose
        # first use costs ~2 s of start-up
        self.register_buffer("inv_freq", self._inv_freq().to(torch.get_default_device()), persistent=False)

    def _inv_freq(self) -> Tensor:
        inv_freq = 1.0 / (self.theta ** (torch.arange(0, self.dim, 2, dtype=torch.int64, device="cpu").float() / self.dim))
        return self.scaling(inv_freq) if self.scaling is not None else inv_freq

    def reset_buffers(self, device: torch.device | str | None = None) -> None:
        """Recompute ``inv_freq`` on ``device`` (after building on the meta device, for example)."""
        device = device or (self.inv_freq.device if not self.inv_freq.is_meta else "cpu")
        self.inv_freq = self._inv_freq().to(device)

    def forward(self, positions: Tensor) -> Rope:
        freqs = positions.float()[..., None] * self.inv_freq.float()  # [*, T, D_rot/2]
        if self.interleaved:
            freqs = freqs.repeat_interleave(2, dim=-1)
        else:
            freqs = torch.cat([freqs, freqs], dim=-1)  # [*, T, D_rot]
        return Rope(freqs.cos(), freqs.sin(), self.interleaved)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, theta={self.theta}, interleaved={self.interleaved}, scaling={self.scaling}"


def _rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def _rotate_pairs(x: Tensor) -> Tensor:
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([-x2, x1], dim=-1).flatten(-2)


def apply_rotary(x: Tensor, rope: Rope) -> Tensor:
    """Rotate ``x [*, H, T, D]`` by ``rope`` (``[*, T, D_rot]`` or ``[T, D_rot]``); the last
    ``D - D_rot`` channels pass through unrotated. Computed in float32, returned in ``x.dtype``."""
    cos, sin = rope.cos.unsqueeze(-3), rope.sin.unsqueeze(-3)  # [*, 1, T, D_rot]
    d_rot = cos.shape[-1]
    x_rot, x_pass = x[..., :d_rot].float(), x[..., d_rot:]
    rotate = _rotate_pairs if rope.interleaved else _rotate_half
    out = (x_rot * cos + rotate(x_rot) * sin).to(x.dtype)
    return torch.cat([out, x_pass], dim=-1) if x_pass.shape[-1] else out


def sinusoidal_positions(length: int, dim: int, *, max_timescale: float = 10_000.0) -> Tensor:
    """Fixed sinusoidal positions in the ``[sin | cos]`` layout (Whisper's encoder). ``-> [length, dim]``."""
    if dim % 2:
        raise ValueError(f"sinusoidal positions need an even width, got {dim}")
    increment = math.log(max_timescale) / (dim // 2 - 1)
    # computed on the CPU and moved: a float arange on the meta device (a model built for loading)
    # goes through torch's Python reference, whose first use imports torch._dynamo (~1 s of start-up)
    inv_timescales = torch.exp(-increment * torch.arange(dim // 2, dtype=torch.float32, device="cpu"))
    scaled = torch.arange(length, dtype=torch.float32, device="cpu")[:, None] * inv_timescales[None, :]
    return torch.cat([scaled.sin(), scaled.cos()], dim=1).to(torch.get_default_device())


class LearnedPositions(nn.Module):
    """Learned absolute positions (GPT-2, CLIP, ViT). ``positions [*, T] -> [*, T, C]``."""

    def __init__(self, max_positions: int, dim: int) -> None:
        super().__init__()
        self.max_positions = max_positions
        self.weight = nn.Parameter(torch.empty(max_positions, dim).normal_(std=0.02))

    def forward(self, positions: Tensor) -> Tensor:
        if not torch.compiler.is_compiling() and positions.numel() and int(positions.max()) >= self.max_positions:
            raise ValueError(
                f"position {int(positions.max())} is beyond the {self.max_positions} learned positions"
            )
        return self.weight[positions]
