"""Configuration of ImageGPT (Chen et al. 2020, "Generative Pretraining from Pixels", §2
"Architecture" and the model sizes of §4): a GPT-2 decoder over colour-cluster tokens of a
raster-ordered image."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class ImageGPTConfig:
    """``clusters`` colours (the palette, K); the vocabulary is ``K + 1``: token ``K`` is the
    start-of-sequence token, and the head predicts only the ``K`` colours. An image of
    ``image_size x image_size`` pixels is a sequence of ``image_size**2`` tokens, one learned
    position each."""

    clusters: int
    image_size: int
    dim: int
    layers: int
    heads: int
    mlp_hidden: int | None = None  # default 4 * dim (GPT-2)
    norm_eps: float = 1e-5
    act: str = "quick_gelu"

    def __post_init__(self) -> None:
        for name in ("clusters", "image_size", "dim", "layers", "heads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ImageGPTConfig.{name} must be positive, got {getattr(self, name)}")
        if self.dim % self.heads:
            raise ValueError(f"ImageGPTConfig: dim ({self.dim}) must be divisible by heads ({self.heads})")
        if self.mlp_hidden is not None and self.mlp_hidden <= 0:
            raise ValueError(f"ImageGPTConfig.mlp_hidden must be positive or None, got {self.mlp_hidden}")

    @property
    def vocab_size(self) -> int:
        return self.clusters + 1

    @property
    def sos_token(self) -> int:
        return self.clusters

    @property
    def max_positions(self) -> int:
        return self.image_size * self.image_size

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def mlp_width(self) -> int:
        return self.mlp_hidden or 4 * self.dim


# The released checkpoints (openai/imagegpt-small, -medium, -large on the Hugging Face hub): 512
# colour clusters, 32x32 images, widths and depths of the paper's iGPT-S/M/L (76M, 455M, 1.4B parameters).
PRESETS: dict[str, ImageGPTConfig] = {
    "tiny": ImageGPTConfig(clusters=16, image_size=12, dim=64, layers=4, heads=4),
    "iGPT-S": ImageGPTConfig(clusters=512, image_size=32, dim=512, layers=24, heads=8),
    "iGPT-M": ImageGPTConfig(clusters=512, image_size=32, dim=1024, layers=36, heads=8),
    "iGPT-L": ImageGPTConfig(clusters=512, image_size=32, dim=1536, layers=48, heads=16),
}
