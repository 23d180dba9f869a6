"""LLaVA and LLaVA-NeXT: image features from a CLIP tower's chosen layer, a two-layer MLP connector
into the decoder's width, spliced in place of the ``<image>`` tokens.

- LLaVA-1.5 (Liu et al. 2024, §3.1 "MLP vision-language connector"): tower read at the
  penultimate layer, class token dropped (``"default"``) or kept (``"full"``), ``Linear -> GELU ->
  Linear``; one image is ``grid²`` tokens.
- LLaVA-NeXT "anyres" (Liu et al. 2024, blog and ``llava/model/llava_arch.py``): the processor cuts
  an image into the tiles of its best-fitting grid resolution plus a downscaled whole; the tiles'
  features are laid back out as one feature map, the padding the processor added is cut off so the
  map keeps the image's aspect ratio, and a learned ``image_newline`` ends each row of it. The
  whole image's ``grid²`` features come first.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...nn import MLP, VisionTransformer
from ..vlm import VisionLanguageModel
from .config import LlavaConfig
from .preprocess import anyres_grid, anyres_token_count, unpadded_shape


class Llava(VisionLanguageModel):
    """``forward(tokens [B, T], pixels=...) -> logits [B, T, V]`` (:class:`~tatlas.models.vlm.VisionLanguageModel`).

    ``pixels``: LLaVA-1.5 ``[N_images, 3, S, S]``; LLaVA-NeXT the tiles of every image
    ``[N_tiles, 3, S, S]`` (each image's base image first, then its tiles in row-major order) or
    transformers' padded ``[N_images, P_max, 3, S, S]``, with ``image_sizes [N_images, 2]`` (each
    original (height, width))."""

    def __init__(self, config: LlavaConfig) -> None:
        super().__init__(config)
        c, v = config, config.vision
        self.vision = VisionTransformer(
            image_size=v.image_size, patch=v.patch, dim=v.dim, layers=v.layers, heads=v.heads,
            mlp_hidden=v.mlp_hidden, channels=v.channels, act=v.act, eps=v.eps,
            class_token=True, pre_norm=True, post_norm=False, patch_bias=False,  # ln_post is never read
        )
        self.projector = MLP(dim=v.dim, hidden=c.text.dim, out_dim=c.text.dim, act=c.projector_act,
                             bias=c.projector_bias)
        self.image_newline = nn.Parameter(torch.randn(c.text.dim) * c.text.dim**-0.5) if c.grid_pinpoints else None
        self.freeze_unread_blocks()
        self.tie_weights()

    def tile_features(self, tiles: Tensor) -> Tensor:
        """``tiles [N, 3, S, S]`` -> projected features ``[N, P, C_text]`` (``P = grid²``, + 1 with ``"full"``)."""
        x = self.vision(tiles, layer=self.config.vision_layer)  # [N, 1 + grid², C_v]
        if self.config.feature_strategy == "default":
            x = x[:, 1:]
        return self.projector(x)

    def tiles_per_image(self, image_sizes: Tensor) -> list[int]:
        """How many tiles (the base image included) each image of ``image_sizes [N, 2]`` was cut into."""
        c = self.config
        return [1 + rows * cols for rows, cols in
                (anyres_grid((int(h), int(w)), c.grid_pinpoints, c.vision.image_size) for h, w in image_sizes.tolist())]

    def image_token_count(self, image_hw: tuple[int, int]) -> int:
        """How many ``<image>`` tokens an image of original ``(height, width)`` becomes."""
        c = self.config
        if c.grid_pinpoints is None:
            return c.tokens_per_tile
        return anyres_token_count(image_hw, tile=c.vision.image_size, patch=c.vision.patch, pinpoints=c.grid_pinpoints)

    def image_features(self, pixels: Tensor, image_sizes: Tensor | None = None) -> Tensor:
        c = self.config
        if c.grid_pinpoints is None:
            if pixels.dim() != 4:
                raise ValueError(f"pixels: expected [N_images, 3, {c.vision.image_size}, {c.vision.image_size}], got "
                                 f"{list(pixels.shape)}")
            return self.tile_features(pixels).flatten(0, 1)
        if image_sizes is None:
            raise ValueError("LLaVA-NeXT needs image_sizes [N_images, 2] (each image's original height, width)")
        image_sizes = torch.as_tensor(image_sizes).reshape(-1, 2)
        counts = self.tiles_per_image(image_sizes)
        if pixels.dim() == 5:  # transformers' layout: [N_images, P_max, 3, S, S], padded with zero tiles
            if pixels.shape[0] != len(counts):
                raise ValueError(f"pixels: {pixels.shape[0]} images but {len(counts)} image_sizes")
            pixels = torch.cat([p[:n] for p, n in zip(pixels, counts, strict=True)])
        if pixels.dim() != 4 or pixels.shape[0] != sum(counts):
            raise ValueError(f"pixels: the image_sizes make {sum(counts)} tiles ({counts} per image), got pixels of "
                             f"shape {list(pixels.shape)}")
        feats = self.tile_features(pixels).split(counts)  # per image [n_i, grid², C]
        return torch.cat([self.pack(f, (int(h), int(w))) for f, (h, w) in zip(feats, image_sizes.tolist(), strict=True)])

    def pack(self, feats: Tensor, image_hw: tuple[int, int]) -> Tensor:
        """One image's tile features ``[n, grid², C]`` -> its token sequence: the base image's
        ``grid²`` features, then the tiles' feature map (``rows·grid x cols·grid``, unpadded to the
        image's aspect ratio) row by row, each row followed by ``image_newline``."""
        c, g = self.config, self.config.vision.grid
        base = feats[0]  # [grid², C]
        if feats.shape[0] == 1:
            return torch.cat([base, self.image_newline[None].to(base.dtype)])
        rows, cols = anyres_grid(image_hw, c.grid_pinpoints, c.vision.image_size)
        grid = feats[1:].reshape(rows, cols, g, g, -1).permute(0, 2, 1, 3, 4).reshape(rows * g, cols * g, -1)  # [H, W, C]
        h, w = unpadded_shape(rows * g, cols * g, image_hw)
        top, left = (rows * g - h) // 2, (cols * g - w) // 2
        grid = grid[top : top + h, left : left + w]  # [h, w, C]
        newline = self.image_newline.to(grid.dtype).expand(h, 1, -1)
        return torch.cat([base, torch.cat([grid, newline], dim=1).flatten(0, 1)])
