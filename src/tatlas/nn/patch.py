"""Patch embeddings: images cut into non-overlapping patches (Dosovitskiy et al. 2020, ViT §3.1)
and videos into spatio-temporal tubelets (Arnab et al. 2021, ViViT §3.3), each linearly projected."""

from __future__ import annotations

from torch import Tensor, nn


class PatchEmbed2d(nn.Module):
    """``pixels [B, C_in, H, W] -> tokens [B, (H/p)(W/p), C]`` (row-major patch order). A ``stride``
    below the patch cuts overlapping patches (AST and ImageBind's audio spectrogram: 16x16 every 10),
    ``((H - p) // s + 1) ((W - p) // s + 1)`` of them."""

    def __init__(self, *, in_channels: int, dim: int, patch: int, bias: bool = True, stride: int | None = None) -> None:
        super().__init__()
        self.in_channels, self.patch, self.stride = in_channels, patch, stride or patch
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch, stride=self.stride, bias=bias)

    def forward(self, pixels: Tensor) -> Tensor:
        if pixels.dim() != 4 or pixels.shape[1] != self.in_channels:
            raise ValueError(f"pixels: expected [B, {self.in_channels}, H, W], got {list(pixels.shape)}")
        if self.stride != self.patch:
            if min(pixels.shape[-2:]) < self.patch:
                raise ValueError(f"input size {tuple(pixels.shape[-2:])} is smaller than the patch {self.patch}")
        elif pixels.shape[-1] % self.patch or pixels.shape[-2] % self.patch:
            raise ValueError(f"image size {tuple(pixels.shape[-2:])} is not a multiple of the patch {self.patch}")
        return self.proj(pixels).flatten(2).transpose(1, 2)  # [B, C, h, w] -> [B, h*w, C]


class PatchEmbed3d(nn.Module):
    """``video [B, C_in, T, H, W] -> tokens [B, (T/t)(H/p)(W/p), C]`` with tubelets ``t x p x p``."""

    def __init__(self, *, in_channels: int, dim: int, patch: int, tubelet: int, bias: bool = True) -> None:
        super().__init__()
        self.in_channels, self.patch, self.tubelet = in_channels, patch, tubelet
        self.proj = nn.Conv3d(in_channels, dim, kernel_size=(tubelet, patch, patch),
                              stride=(tubelet, patch, patch), bias=bias)

    def forward(self, video: Tensor) -> Tensor:
        if video.dim() != 5 or video.shape[1] != self.in_channels:
            raise ValueError(f"video: expected [B, {self.in_channels}, T, H, W], got {list(video.shape)}")
        if video.shape[2] % self.tubelet or video.shape[-1] % self.patch or video.shape[-2] % self.patch:
            raise ValueError(
                f"video size {tuple(video.shape[2:])} is not a multiple of the tubelet "
                f"({self.tubelet}, {self.patch}, {self.patch})"
            )
        return self.proj(video).flatten(2).transpose(1, 2)  # [B, C, t, h, w] -> [B, t*h*w, C]


def pixel_shuffle_tokens(grid: Tensor, ratio: float) -> Tensor:
    """InternVL's pixel shuffle (Chen et al. 2024, "How Far Are We to GPT-4V?", §3.1): a token grid
    ``[B, H, W, C]`` -> ``[B, H r, W r, C / r²]`` for ``ratio`` ``r`` (``0.5``: each 2x2 block of
    neighbouring tokens becomes one token of 4x the width, a quarter of the tokens).

    The channel order is InternVL's: the grid is regrouped along its second axis first, transposed,
    regrouped along the other axis and transposed back (so weights trained with the reference load
    unchanged)."""
    b, h, w, c = grid.shape
    if int(h * ratio) != h * ratio or int(w * ratio) != w * ratio or int(c / ratio**2) != c / ratio**2:
        raise ValueError(f"pixel shuffle by {ratio}: token grid {h}x{w} and width {c} must divide evenly")
    x = grid.reshape(b, h, int(w * ratio), int(c / ratio))  # fold columns into channels
    x = x.transpose(1, 2)  # [B, W r, H, C / r]
    x = x.reshape(b, int(w * ratio), int(h * ratio), int(c / ratio**2))  # fold rows into channels
    return x.transpose(1, 2).contiguous()  # [B, H r, W r, C / r²]
