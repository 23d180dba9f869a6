"""Configuration of LLaVA (Liu et al. 2023, "Visual Instruction Tuning"; LLaVA-1.5, Liu et al.
2024, "Improved Baselines with Visual Instruction Tuning") and LLaVA-NeXT's "anyres" high
resolution (Liu et al. 2024, "LLaVA-NeXT: Improved reasoning, OCR, and world knowledge"): a CLIP
ViT tower read at one layer, a two-layer MLP connector, a decoder LM."""

from __future__ import annotations

from dataclasses import dataclass

from ..clip.config import CLIPVisionConfig
from ..llm.config import LLMConfig, uniform_layers
from ..vlm import VLMConfig

PROJECTOR_ACTS = ("gelu", "gelu_tanh", "silu", "relu", "quick_gelu")


@dataclass(frozen=True, kw_only=True)
class LlavaConfig(VLMConfig):
    """``vision``: the CLIP tower (class token, ``ln_pre``); ``projector_act``/``projector_bias``:
    the connector ``Linear -> act -> Linear``. ``grid_pinpoints`` (each ``(height, width)``, in
    pixels) makes it LLaVA-NeXT: an image is cut into the tiles of its best-fitting resolution
    plus a downscaled whole, its features unpadded to the image's aspect ratio and a learned
    ``image_newline`` appended to each row of tile features; ``None`` is LLaVA-1.5 (one image, one
    tile, ``grid²`` tokens)."""

    vision: CLIPVisionConfig
    projector_act: str = "gelu"
    projector_bias: bool = True
    grid_pinpoints: tuple[tuple[int, int], ...] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.projector_act not in PROJECTOR_ACTS:
            raise ValueError(f"LlavaConfig.projector_act: expected one of {PROJECTOR_ACTS}, got {self.projector_act!r}")
        if self.grid_pinpoints is not None:
            size = self.vision.image_size
            bad = [p for p in self.grid_pinpoints if len(p) != 2 or p[0] % size or p[1] % size or min(p) <= 0]
            if not self.grid_pinpoints or bad:
                raise ValueError(f"LlavaConfig.grid_pinpoints: expected (height, width) pairs, multiples of the tower's "
                                 f"{size} px, got {bad or 'none'}")
            if self.feature_strategy != "default":
                raise ValueError("LlavaConfig: anyres (grid_pinpoints) needs feature_strategy='default' (the tiles' "
                                 "features are laid out on the patch grid, without the class token)")
        if not -self.vision.layers <= self.feature_layer <= self.vision.layers:
            raise ValueError(f"LlavaConfig.feature_layer: the tower has {self.vision.layers} blocks, got {self.feature_layer}")

    @property
    def tokens_per_tile(self) -> int:
        return self.vision.grid**2 + (self.feature_strategy == "full")


def _text(vocab: int, dim: int, layers: int, heads: int, kv: int, hidden: int, **kw) -> LLMConfig:
    return LLMConfig(vocab_size=vocab, dim=dim, layers=layers, heads=heads, kv_heads=kv, mlp_hidden=hidden,
                     head_dim=dim // heads, layer_types=uniform_layers(layers, kw.get("sliding_window")), **kw)


_VIT_L_336 = CLIPVisionConfig(image_size=336, patch=14, dim=1024, layers=24, heads=16, mlp_hidden=4096)
_TINY_VIT = CLIPVisionConfig(image_size=32, patch=4, dim=32, layers=2, heads=2, mlp_hidden=64)
_TINY_TEXT = _text(259, 64, 2, 4, 2, 172, max_positions=1024)

PRESETS: dict[str, LlavaConfig] = {
    "tiny": LlavaConfig(vision=_TINY_VIT, text=_TINY_TEXT, image_token_id=258),
    "tiny-next": LlavaConfig(vision=_TINY_VIT, text=_TINY_TEXT, image_token_id=258,
                             grid_pinpoints=((32, 64), (64, 32), (64, 64), (32, 96), (96, 32))),
    # llava-hf/llava-1.5-7b-hf: ViT-L/14-336 + Vicuna-7B (Llama 2 shapes, 32064 tokens with <image> at 32000)
    "llava-1.5-7b": LlavaConfig(vision=_VIT_L_336, image_token_id=32000,
                                text=_text(32064, 4096, 32, 32, 32, 11008, max_positions=4096, norm_eps=1e-5)),
    # llava-hf/llava-v1.6-mistral-7b-hf: the same tower, anyres up to 672 px, Mistral-7B-Instruct-v0.2
    "llava-v1.6-mistral-7b": LlavaConfig(
        vision=_VIT_L_336, image_token_id=32000,
        grid_pinpoints=((336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008)),
        text=_text(32064, 4096, 32, 32, 8, 14336, max_positions=32768, rope_theta=1_000_000.0, norm_eps=1e-5)),
}
# the world task's (tatlas.models.vlm_task): byte tokens 0..258, <image> 259; a third tower block so
# that the penultimate layer read is the second
PRESETS["tiny-world"] = LlavaConfig(vision=CLIPVisionConfig(image_size=32, patch=4, dim=48, layers=3, heads=2,
                                                            mlp_hidden=96),
                                    text=_text(260, 64, 2, 4, 2, 172, max_positions=256), image_token_id=259)
