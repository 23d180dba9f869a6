"""Configuration of InternVL (Chen et al. 2024, "InternVL: Scaling up Vision Foundation Models";
InternVL 1.5, "How Far Are We to GPT-4V?"; InternVL 2.5/3): the InternViT tower, pixel shuffle,
an MLP connector with a LayerNorm in front, a Qwen2 or Llama decoder."""

from __future__ import annotations

from dataclasses import dataclass

from ..llm.config import LLMConfig, uniform_layers
from ..vision import ViTConfig
from ..vlm import VLMConfig

# ImageNet statistics (InternVL's IMAGENET_MEAN / IMAGENET_STD)
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
NORMS = ("layer", "rms")


@dataclass(frozen=True, kw_only=True)
class InternViTConfig(ViTConfig):
    """InternViT: a ViT with a class token, learned positions, layer scale (``layer_scale``: the
    initial value of each block's two per-channel gains), optional QK-norm over the whole width,
    q/k/v without bias by default, LayerNorm or RMSNorm in the blocks, and (``final_norm``) a
    LayerNorm after the last block (transformers' ``use_mean_pooling=False``)."""

    act: str = "gelu"
    eps: float = 1e-6
    norm: str = "layer"
    layer_scale: float = 0.1
    qk_norm: bool = False
    qkv_bias: bool = False
    final_norm: bool = False
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.norm not in NORMS:
            raise ValueError(f"InternViTConfig.norm: expected one of {NORMS}, got {self.norm!r}")


@dataclass(frozen=True, kw_only=True)
class InternVLConfig(VLMConfig):
    """``downsample_ratio``: pixel shuffle's ``r`` (each ``1/r x 1/r`` block of patch tokens becomes
    one token, ``(grid r)²`` tokens per tile); ``feature_layer=-1`` reads the tower's output (after
    ``final_norm``), others a block's output."""

    vision: InternViTConfig
    feature_layer: int = -1
    downsample_ratio: float = 0.5
    projector_act: str = "gelu"

    def __post_init__(self) -> None:
        super().__post_init__()
        side = self.vision.grid * self.downsample_ratio
        if not 0 < self.downsample_ratio <= 1 or side != int(side) or (1 / self.downsample_ratio) % 1:
            raise ValueError(f"InternVLConfig.downsample_ratio: expected 1/k dividing the {self.vision.grid}-patch grid, "
                             f"got {self.downsample_ratio}")
        if self.feature_strategy != "default":
            raise ValueError("InternVLConfig.feature_strategy: only 'default' (the class token dropped before the "
                             "pixel shuffle of the patch grid)")
        if not -self.vision.layers <= self.feature_layer <= self.vision.layers:
            raise ValueError(f"InternVLConfig.feature_layer: the tower has {self.vision.layers} blocks, "
                             f"got {self.feature_layer}")

    @property
    def tokens_per_tile(self) -> int:
        return int(self.vision.grid * self.downsample_ratio) ** 2


def _qwen2(vocab: int, dim: int, layers: int, heads: int, kv: int, hidden: int, **kw) -> LLMConfig:
    return LLMConfig(vocab_size=vocab, dim=dim, layers=layers, heads=heads, kv_heads=kv, mlp_hidden=hidden,
                     head_dim=dim // heads, layer_types=uniform_layers(layers), qkv_bias=True, norm_eps=1e-6, **kw)


_TINY_VIT = InternViTConfig(image_size=32, patch=4, dim=32, layers=2, heads=2, mlp_hidden=64)

PRESETS: dict[str, InternVLConfig] = {
    "tiny": InternVLConfig(vision=_TINY_VIT, image_token_id=258,
                           text=_qwen2(259, 64, 2, 4, 2, 172, max_positions=2048, tie_embeddings=True)),
    # OpenGVLab/InternVL3-1B-hf: InternViT-300M-448px-V2.5 + Qwen2.5-0.5B (<IMG_CONTEXT> = 151667)
    "InternVL3-1B": InternVLConfig(
        vision=InternViTConfig(image_size=448, patch=14, dim=1024, layers=24, heads=16, mlp_hidden=4096, qkv_bias=True),
        image_token_id=151_667,
        text=_qwen2(151_674, 896, 24, 14, 2, 4864, max_positions=32_768, rope_theta=1_000_000.0, tie_embeddings=True),
    ),
}
# the world task's (tatlas.models.vlm_task): byte tokens 0..258, <IMG_CONTEXT> 259
PRESETS["tiny-world"] = InternVLConfig(
    vision=InternViTConfig(image_size=32, patch=4, dim=48, layers=2, heads=2, mlp_hidden=96), image_token_id=259,
    text=_qwen2(260, 64, 2, 4, 2, 172, max_positions=256))
