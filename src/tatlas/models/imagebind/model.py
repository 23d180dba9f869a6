"""ImageBind (Girdhar et al. 2023, "ImageBind: One Embedding Space To Bind Them All"), composed as
the official code composes it: per modality a *preprocessor* (a stem that cuts the input into
tokens, a class token, learned positions), a *trunk* (pre-norm transformer blocks), a *head*
(LayerNorm, the class token's state — the end-of-text token's for text — and a bias-free
projection) and a *postprocessor* (L2 normalisation, then a logit scale: learnable for text, fixed
for audio 20, depth 5, thermal 10, IMU 5, none for vision).

Stems (§3 and appendix B of the paper):

- vision: an image is repeated to a 2-frame video and cut into 2x14x14 tubelets (one 3-D conv, no
  bias), so the same weights embed images and videos (§3.2, "we inflate ... to 3D");
- text: CLIP BPE ids embedded; the trunk is causal and the head reads the state at the largest id
  (``<end_of_text>``), as CLIP;
- audio: a 128-bin log-mel spectrogram of 2 s (204 frames) cut into 16x16 patches every 10 bins
  and frames (AST, Gong et al. 2021), then LayerNorm;
- depth, thermal: one-channel images cut into 16x16 patches, then LayerNorm;
- IMU: 6 channels x 2000 steps cut into windows of 8 steps (48 numbers each), linearly embedded,
  then LayerNorm.

The audio, depth, thermal and IMU trunks have a learned extra key/value in every attention
(``nn.MultiheadAttention(add_bias_kv=True)``; :class:`~tatlas.nn.Attention`'s ``kv_bias_token``);
vision's has a LayerNorm before its blocks. Every block is ``x + attn(ln(x))``, ``x + mlp(ln(x))``
(LayerNorm eps 1e-6, GELU), with stochastic depth in training (audio 0.1 and IMU 0.7 at the
deepest block, rising linearly from 0).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...nn import LayerNorm, LearnedPositions, check_tokens, classic_block
from ...nn.patch import PatchEmbed2d, PatchEmbed3d
from .config import MODALITIES, EncoderConfig, ImageBindConfig


class VisionStem(nn.Module):
    """``[B, 3, S, S]`` images (repeated to ``frames`` frames) or ``[B, 3, frames, S, S]`` videos
    -> ``[B, (frames/t)(S/p)², C]`` tubelet tokens."""

    def __init__(self, c: ImageBindConfig, dim: int) -> None:
        super().__init__()
        self.frames, self.size = c.frames, c.image_size
        self.patch = PatchEmbed3d(in_channels=3, dim=dim, patch=c.patch, tubelet=c.frames, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4:
            x = x.unsqueeze(2)
        if x.dim() != 5 or x.shape[1] != 3 or x.shape[-2:] != (self.size, self.size):
            raise ValueError(f"vision: expected [B, 3, {self.size}, {self.size}] images or "
                             f"[B, 3, T, {self.size}, {self.size}] videos, got {list(x.shape)}")
        if x.shape[2] == 1:  # an image: a video of identical frames
            x = x.expand(-1, -1, self.frames, -1, -1)
        if x.shape[2] != self.frames:
            raise ValueError(f"vision: expected 1 or {self.frames} frames, got {x.shape[2]}")
        return self.patch(x)


class MapStem(nn.Module):
    """One-channel maps (a spectrogram, a depth or thermal image) ``[B, 1, H, W]`` -> patches, then
    LayerNorm: ``[B, N, C]``."""

    def __init__(self, name: str, size: tuple[int, int], patch: int, stride: int, dim: int) -> None:
        super().__init__()
        self.name, self.size = name, size
        self.patch = PatchEmbed2d(in_channels=1, dim=dim, patch=patch, stride=stride, bias=False)
        self.norm = LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if x.dim() != 4 or x.shape[1] != 1 or tuple(x.shape[-2:]) != self.size:
            raise ValueError(f"{self.name}: expected [B, 1, {self.size[0]}, {self.size[1]}], got {list(x.shape)}")
        return self.norm(self.patch(x))


class IMUStem(nn.Module):
    """``[B, channels, steps]`` -> windows of ``patch`` steps (all channels of a window in one
    token, channel-major) -> Linear -> LayerNorm: ``[B, steps / patch, C]``."""

    def __init__(self, c: ImageBindConfig, dim: int) -> None:
        super().__init__()
        self.channels, self.steps, self.patch = c.imu_channels, c.imu_steps, c.imu_patch
        self.proj = nn.Linear(c.imu_channels * c.imu_patch, dim, bias=False)
        self.norm = LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or tuple(x.shape[1:]) != (self.channels, self.steps):
            raise ValueError(f"imu: expected [B, {self.channels}, {self.steps}], got {list(x.shape)}")
        windows = x.unflatten(-1, (self.steps // self.patch, self.patch)).transpose(1, 2)  # [B, N, ch, p]
        return self.norm(self.proj(windows.flatten(2)))


class TextStem(nn.Module):
    """``[B, T]`` ids -> ``[B, T, C]`` embeddings (``T = context_length``: positions are learned for
    exactly that many; pad with 0 after ``<end_of_text>`` as the official tokenizer does)."""

    def __init__(self, c: ImageBindConfig, dim: int) -> None:
        super().__init__()
        self.vocab_size, self.context_length = c.vocab_size, c.context_length
        self.token_embed = nn.Embedding(c.vocab_size, dim)

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.dim() != 2 or tokens.shape[1] != self.context_length:
            raise ValueError(f"text: expected [B, {self.context_length}] token ids, got {list(tokens.shape)}")
        check_tokens(tokens, self.vocab_size)
        return self.token_embed(tokens)


def _stem(c: ImageBindConfig, modality: str, dim: int) -> tuple[nn.Module, int]:
    """The modality's stem and how many tokens it makes."""
    if modality == "vision":
        return VisionStem(c, dim), (c.image_size // c.patch) ** 2
    if modality == "text":
        return TextStem(c, dim), c.context_length
    if modality == "audio":
        grid = [(n - c.audio_patch) // c.audio_stride + 1 for n in (c.mel_bins, c.audio_frames)]
        return MapStem("audio", (c.mel_bins, c.audio_frames), c.audio_patch, c.audio_stride, dim), grid[0] * grid[1]
    if modality in ("depth", "thermal"):
        size, patch = getattr(c, f"{modality}_size"), getattr(c, f"{modality}_patch")
        return MapStem(modality, (size, size), patch, patch, dim), (size // patch) ** 2
    return IMUStem(c, dim), c.imu_steps // c.imu_patch


class Encoder(nn.Module):
    """One modality: stem -> [class token] + positions -> [pre-norm] -> blocks -> head (LayerNorm,
    the pooled token, dropout, projection) -> ``[B, out_dim]``, before the postprocessor."""

    def __init__(self, c: ImageBindConfig, modality: str) -> None:
        super().__init__()
        e: EncoderConfig = c.encoder(modality)
        self.modality, self.causal = modality, modality == "text"
        self.stem, n = _stem(c, modality, e.dim)
        self.class_token = None if self.causal else nn.Parameter(torch.randn(e.dim) * e.dim**-0.5)
        self.positions = LearnedPositions(n + (0 if self.causal else 1), e.dim)
        norm = partial(LayerNorm, eps=1e-6)
        self.pre_norm = norm(e.dim) if e.pre_norm else None
        rates = [e.drop_path * i / max(1, e.layers - 1) for i in range(e.layers)]  # 0 at the first, rising
        self.blocks = nn.ModuleList(
            classic_block(dim=e.dim, heads=e.heads, mlp_hidden=e.mlp_ratio * e.dim, norm=norm, act="gelu",
                          fused_qkv=True, kv_bias_token=e.kv_bias, drop_path=rate)
            for rate in rates
        )
        self.head_norm = norm(e.dim)
        self.head_dropout = nn.Dropout(e.head_dropout)
        self.proj = nn.Linear(e.dim, c.out_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (the modality's input, see :class:`ImageBindConfig`) -> ``[B, out_dim]``."""
        pool = x.argmax(dim=-1) if self.causal else None  # text: <end_of_text>, the largest id
        h = self.stem(x)
        if self.class_token is not None:
            h = torch.cat([self.class_token.to(h.dtype).expand(h.shape[0], 1, -1), h], dim=1)
        h = h + self.positions.weight.to(h.dtype)
        if self.pre_norm is not None:
            h = self.pre_norm(h)
        for block in self.blocks:
            h = block(h, causal=self.causal)
        h = h[:, 0] if pool is None else h[torch.arange(h.shape[0], device=h.device), pool]
        return self.proj(self.head_dropout(self.head_norm(h)))


class ImageBind(nn.Module):
    """Six encoders into one space. ``model({"vision": pixels, "audio": mels, ...})`` -> the same keys,
    each ``[B, out_dim]``: unit embeddings times the modality's logit scale (vision: unit), clip axes
    averaged — the official ``ImageBindModel.forward``. :meth:`encode` gives one modality."""

    def __init__(self, config: ImageBindConfig) -> None:
        super().__init__()
        self.config = config
        self.encoders = nn.ModuleDict({m: Encoder(config, m) for m in config.modalities})
        for m in config.modalities:
            e = config.encoder(m)
            if e.logit_scale is None:
                continue
            log_scale = torch.tensor(float(e.logit_scale)).log()
            if e.learnable_scale:
                self.register_parameter(f"log_scale_{m}", nn.Parameter(log_scale))
            else:
                self.register_buffer(f"log_scale_{m}", log_scale)

    def logit_scale(self, modality: str) -> Tensor | None:
        """The postprocessor's multiplier ``min(exp(log_scale), max_logit_scale)``, or ``None`` (vision)."""
        log_scale = getattr(self, f"log_scale_{modality}", None)
        return None if log_scale is None else log_scale.exp().clamp(max=self.config.max_logit_scale)

    def encode(self, modality: str, x: Tensor, *, normalize: bool = True, scale: bool = True) -> Tensor:
        """One modality's embeddings ``[B, out_dim]``: the head's output, L2-normalised with
        ``normalize``, times the logit scale with ``scale`` too. ``x`` with a clip axis (``ndim >= 5``,
        ``[B, clips, ...]``) is encoded clip by clip and the clips' embeddings averaged."""
        if modality not in self.encoders:
            raise ValueError(f"modality: expected one of {tuple(self.encoders)}, got {modality!r}")
        clips = x.dim() >= 5
        if clips:
            b, n = x.shape[:2]
            x = x.flatten(0, 1)
        out = self.encoders[modality](x)
        if normalize:
            out = F.normalize(out, dim=-1)
            s = self.logit_scale(modality) if scale else None
            if s is not None:
                out = s.to(out.dtype) * out
        if clips:
            out = out.unflatten(0, (b, n)).mean(dim=1)
        return out

    def forward(self, inputs: dict[str, Tensor] | None = None, **kwargs: Tensor) -> dict[str, Tensor]:
        inputs = {**(inputs or {}), **kwargs}
        unknown = [m for m in inputs if m not in MODALITIES]
        if unknown:
            raise ValueError(f"unknown modality {unknown[0]!r}; expected some of {MODALITIES}")
        return {m: self.encode(m, x) for m, x in inputs.items()}
