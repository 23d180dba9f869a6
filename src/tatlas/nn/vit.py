"""The Vision Transformer encoder (Dosovitskiy et al. 2020, "An Image is Worth 16x16 Words", §3.1):
patches linearly embedded, an optional class token, learned absolute positions, an optional
LayerNorm before the blocks (OpenAI CLIP's ``ln_pre``), pre-norm transformer blocks, and an
optional final LayerNorm. One encoder serves CLIP, SigLIP (Gemma 3's vision tower), LLaVA's and
InternVL's towers and ImageBind's image encoder. InternViT (Chen et al. 2024, "InternVL") adds
RMS or layer norms, QK-norm over the whole width, q/k/v without bias and layer scale, all options
here."""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from .block import classic_block
from .checks import check_finite
from .norms import LayerNorm, RMSNorm
from .patch import PatchEmbed2d
from .positions import LearnedPositions


class VisionTransformer(nn.Module):
    """``pixels [B, C_in, H, W] -> tokens [B, N (+1 class token), C]``, ``N = (H/p)(W/p)``."""

    def __init__(
        self,
        *,
        image_size: int,
        patch: int,
        dim: int,
        layers: int,
        heads: int,
        mlp_hidden: int,
        channels: int = 3,
        act: str = "gelu",
        eps: float = 1e-5,
        class_token: bool = False,
        pre_norm: bool = False,
        post_norm: bool = True,
        patch_bias: bool = True,
        norm: str = "layer",
        qkv_bias: bool = True,
        qk_norm: bool = False,
        layer_scale: float | None = None,
    ) -> None:
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image_size ({image_size}) must be a multiple of the patch ({patch})")
        self.image_size, self.patch = image_size, patch
        self.grid = image_size // patch
        self.patch_embed = PatchEmbed2d(in_channels=channels, dim=dim, patch=patch, bias=patch_bias)
        self.class_token = nn.Parameter(torch.randn(dim) * dim**-0.5) if class_token else None
        self.positions = LearnedPositions(self.grid**2 + int(class_token), dim)
        if norm not in ("layer", "rms"):
            raise ValueError(f"norm: expected 'layer' or 'rms', got {norm!r}")
        block_norm = partial(LayerNorm if norm == "layer" else RMSNorm, eps=eps)
        self.pre_norm = LayerNorm(dim, eps=eps) if pre_norm else None
        self.blocks = nn.ModuleList(
            classic_block(dim=dim, heads=heads, mlp_hidden=mlp_hidden, act=act, norm=block_norm, qkv_bias=qkv_bias,
                          qk_norm=partial(RMSNorm, eps=1e-6) if qk_norm else None, layer_scale=layer_scale)
            for _ in range(layers)
        )
        self.post_norm = LayerNorm(dim, eps=eps) if post_norm else None

    def forward(self, pixels: Tensor, *, layer: int | None = None) -> Tensor:
        """All tokens after block ``layer`` (negative counts from the end; ``None``: after every
        block and the final norm). ``[B, C_in, H, W] -> [B, N, C]``."""
        if pixels.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"pixels: expected [B, C, {self.image_size}, {self.image_size}], got {list(pixels.shape)}"
            )
        check_finite(pixels)
        n_layers = len(self.blocks)
        stop = n_layers if layer is None else (layer % n_layers) + 1
        if layer is not None and not -n_layers <= layer < n_layers:
            raise ValueError(f"layer: expected -{n_layers}..{n_layers - 1}, got {layer}")
        x = self.patch_embed(pixels)  # [B, N, C]
        if self.class_token is not None:
            x = torch.cat([self.class_token.expand(x.shape[0], 1, -1).to(x.dtype), x], dim=1)
        x = x + self.positions.weight.to(x.dtype)
        if self.pre_norm is not None:
            x = self.pre_norm(x)
        for block in self.blocks[:stop]:
            x = block(x)
        if layer is None and self.post_norm is not None:
            x = self.post_norm(x)
        return x
