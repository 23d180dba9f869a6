"""The configuration every ViT image tower shares (:class:`tatlas.nn.VisionTransformer`): CLIP's
image tower and the vision encoder of the image-text LLM (Gemma 3's SigLIP) subclass it with their
own defaults and extras, so the fields and their checks are written once."""

from __future__ import annotations

from dataclasses import dataclass

from ..nn import ACTIVATIONS


@dataclass(frozen=True, kw_only=True)
class ViTConfig:
    """``image_size``² images of ``channels`` cut into ``patch``² patches (a ``grid``² of tokens),
    ``layers`` pre-norm blocks of width ``dim``, and the per-channel statistics inputs are
    normalised with."""

    image_size: int
    patch: int
    dim: int
    layers: int
    heads: int
    mlp_hidden: int
    channels: int = 3
    act: str = "gelu"
    eps: float = 1e-6
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        name = type(self).__name__
        for field in ("image_size", "patch", "dim", "layers", "heads", "mlp_hidden", "channels"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name}.{field} must be a positive int, got {value!r}")
        if self.image_size % self.patch:
            raise ValueError(f"{name}: image_size ({self.image_size}) must be a multiple of patch ({self.patch})")
        if self.dim % self.heads:
            raise ValueError(f"{name}: dim ({self.dim}) must be divisible by heads ({self.heads})")
        if self.act not in ACTIVATIONS:
            raise ValueError(f"{name}.act: expected one of {sorted(ACTIVATIONS)}, got {self.act!r}")
        if len(self.image_mean) != self.channels or len(self.image_std) != self.channels:
            raise ValueError(f"{name}: image_mean/image_std need {self.channels} values each")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch
