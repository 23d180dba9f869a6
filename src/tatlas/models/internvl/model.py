"""InternVL: InternViT features of each 448-px tile, pixel-shuffled to a quarter of the tokens,
projected by ``LayerNorm -> Linear -> GELU -> Linear`` into the decoder (Chen et al. 2024,
"How Far Are We to GPT-4V?", §3.1 Fig. 3: "InternViT-6B ... pixel shuffle ... MLP projector").
The processor (:mod:`.preprocess`) cuts an image into 1..``max_tiles`` tiles of the closest aspect
ratio plus a thumbnail; every tile is ``tokens_per_tile`` image tokens, in tile order."""

from __future__ import annotations

from torch import Tensor

from ...nn import MLP, LayerNorm, VisionTransformer, pixel_shuffle_tokens
from ..vlm import VisionLanguageModel
from .config import InternVLConfig


class InternVL(VisionLanguageModel):
    """``forward(tokens [B, T], pixels [N_tiles, 3, S, S]) -> logits [B, T, V]``
    (:class:`~tatlas.models.vlm.VisionLanguageModel`); every image's tiles, in prompt order."""

    def __init__(self, config: InternVLConfig) -> None:
        super().__init__(config)
        c, v = config, config.vision
        self.vision = VisionTransformer(
            image_size=v.image_size, patch=v.patch, dim=v.dim, layers=v.layers, heads=v.heads,
            mlp_hidden=v.mlp_hidden, channels=v.channels, act=v.act, eps=v.eps, class_token=True, pre_norm=False,
            post_norm=v.final_norm, patch_bias=True, norm=v.norm, qkv_bias=v.qkv_bias, qk_norm=v.qk_norm,
            layer_scale=v.layer_scale,
        )
        width = v.dim * round(1 / c.downsample_ratio) ** 2
        self.projector_norm = LayerNorm(width, eps=1e-5)
        self.projector = MLP(dim=width, hidden=c.text.dim, out_dim=c.text.dim, act=c.projector_act)
        if c.feature_layer != -1:
            self.freeze_unread_blocks()
        self.tie_weights()

    def image_token_count(self, tiles: int) -> int:
        """How many image tokens ``tiles`` tiles (the thumbnail included) become."""
        return tiles * self.config.tokens_per_tile

    def image_features(self, pixels: Tensor, image_sizes: Tensor | None = None) -> Tensor:
        c, s = self.config, self.config.vision.image_size
        if pixels.dim() != 4:
            raise ValueError(f"pixels: expected the tiles of every image [N_tiles, 3, {s}, {s}], got {list(pixels.shape)}")
        x = self.vision(pixels) if c.feature_layer == -1 else self.vision(pixels, layer=c.vision_layer)
        if c.feature_strategy == "default":
            x = x[:, 1:]  # [N, grid², C_v]
        g = c.vision.grid
        x = pixel_shuffle_tokens(x.reshape(x.shape[0], g, g, -1), c.downsample_ratio).flatten(1, 2)  # [N, (g r)², C_v / r²]
        return self.projector(self.projector_norm(x)).flatten(0, 1)
