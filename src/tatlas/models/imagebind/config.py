"""Configuration of ImageBind (Girdhar et al. 2023, "ImageBind: One Embedding Space To Bind Them
All"): one encoder per modality (vision, text, audio, depth, thermal, IMU), each a pre-norm ViT-style
trunk over its own patch tokens, all projected into one embedding space. The ``imagebind_huge``
preset carries the released model's shapes (the official ``imagebind_huge()``: a ViT-H vision
encoder, OpenCLIP's ViT-H text encoder, and the paper's smaller audio, depth, thermal and IMU
encoders, §B of its appendix)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..clip.config import CLIP_MEAN, CLIP_STD

MODALITIES: tuple[str, ...] = ("vision", "text", "audio", "depth", "thermal", "imu")


@dataclass(frozen=True, kw_only=True)
class EncoderConfig:
    """One modality's trunk and head: ``layers`` pre-norm blocks of width ``dim`` (LayerNorm eps
    1e-6, GELU MLP ``mlp_ratio`` wide), ``kv_bias`` a learned extra key/value per block (the official
    ``add_bias_kv``), ``drop_path`` the deepest block's stochastic-depth rate (rising linearly from
    0 at the first), ``pre_norm`` a LayerNorm before the blocks. The postprocessor multiplies the
    unit embedding by ``logit_scale`` (``None``: by nothing, the vision encoder), learnable or fixed;
    ``head_dropout`` before the projection (IMU)."""

    dim: int
    layers: int
    heads: int
    mlp_ratio: int = 4
    drop_path: float = 0.0
    kv_bias: bool = True
    pre_norm: bool = False
    logit_scale: float | None = None
    learnable_scale: bool = False
    head_dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("dim", "layers", "heads", "mlp_ratio"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        for name in ("drop_path", "head_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name}: expected a probability in [0, 1), got {getattr(self, name)}")
        if self.logit_scale is not None and self.logit_scale <= 0:
            raise ValueError(f"logit_scale must be positive, got {self.logit_scale}")


@dataclass(frozen=True, kw_only=True)
class ImageBindConfig:
    """All six encoders and their inputs.

    - vision: ``[B, 3, image_size, image_size]`` images (repeated to ``frames`` frames) or
      ``[B, 3, frames, S, S]`` videos, cut into ``frames x patch x patch`` tubelets;
    - text: ``[B, context_length]`` CLIP BPE ids, causal, pooled at the largest id (``<end_of_text>``);
    - audio: ``[B, 1, mel_bins, audio_frames]`` log-mel spectrograms, ``audio_patch`` patches every
      ``audio_stride`` bins/frames;
    - depth, thermal: ``[B, 1, S, S]`` maps, ``depth_patch`` / ``thermal_patch`` patches;
    - imu: ``[B, imu_channels, imu_steps]`` accelerometer + gyroscope, ``imu_patch`` steps a token.

    A leading clip axis (``[B, clips, ...]``: audio clips, video clips) is averaged after the
    postprocessor, as the official model does for any input of 5 or more dimensions.
    """

    out_dim: int = 1024
    vision: EncoderConfig
    text: EncoderConfig
    audio: EncoderConfig
    depth: EncoderConfig
    thermal: EncoderConfig
    imu: EncoderConfig
    image_size: int = 224
    patch: int = 14
    frames: int = 2
    vocab_size: int = 49_408
    context_length: int = 77
    mel_bins: int = 128
    audio_frames: int = 204
    audio_patch: int = 16
    audio_stride: int = 10
    depth_size: int = 224
    depth_patch: int = 16
    thermal_size: int = 224
    thermal_patch: int = 16
    imu_channels: int = 6
    imu_steps: int = 2000
    imu_patch: int = 8
    max_logit_scale: float = 100.0
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD
    modalities: tuple[str, ...] = field(default=MODALITIES)

    def __post_init__(self) -> None:
        unknown = [m for m in self.modalities if m not in MODALITIES]
        if unknown or not self.modalities:
            raise ValueError(f"modalities: expected a non-empty subset of {MODALITIES}, got {self.modalities}")
        for name, size, patch in (("image_size", self.image_size, self.patch),
                                  ("depth_size", self.depth_size, self.depth_patch),
                                  ("thermal_size", self.thermal_size, self.thermal_patch),
                                  ("imu_steps", self.imu_steps, self.imu_patch)):
            if patch < 1 or size % patch:
                raise ValueError(f"{name} ({size}) must be a multiple of its patch ({patch}), a positive number")
        if min(self.mel_bins, self.audio_frames) < self.audio_patch:
            raise ValueError(f"the spectrogram ({self.mel_bins}x{self.audio_frames}) is smaller than the audio patch "
                             f"({self.audio_patch})")

    def encoder(self, modality: str) -> EncoderConfig:
        if modality not in self.modalities:
            raise ValueError(f"modality: expected one of {self.modalities}, got {modality!r}")
        return getattr(self, modality)


def _encoders(vision: EncoderConfig, text: EncoderConfig, audio: EncoderConfig, depth: EncoderConfig,
              thermal: EncoderConfig, imu: EncoderConfig) -> dict[str, EncoderConfig]:
    return {"vision": vision, "text": text, "audio": audio, "depth": depth, "thermal": thermal, "imu": imu}


_HUGE = _encoders(
    EncoderConfig(dim=1280, layers=32, heads=16, kv_bias=False, pre_norm=True),
    EncoderConfig(dim=1024, layers=24, heads=16, kv_bias=False, logit_scale=1 / 0.07, learnable_scale=True),
    EncoderConfig(dim=768, layers=12, heads=12, drop_path=0.1, logit_scale=20.0),
    EncoderConfig(dim=384, layers=12, heads=8, logit_scale=5.0),
    EncoderConfig(dim=768, layers=12, heads=12, logit_scale=10.0),
    EncoderConfig(dim=512, layers=6, heads=8, drop_path=0.7, logit_scale=5.0, head_dropout=0.5),
)


def _tiny(dim: int, layers: int, heads: int) -> dict[str, EncoderConfig]:
    """The huge preset's structure (which encoders have pre-norm, bias tokens, which scales) at
    width ``dim``, ``layers`` blocks and ``heads`` heads everywhere."""
    return {m: replace(e, dim=dim, layers=layers, heads=heads) for m, e in _HUGE.items()}


PRESETS: dict[str, ImageBindConfig] = {
    "imagebind_huge": ImageBindConfig(out_dim=1024, **_HUGE),
    # the official input sizes (224-pixel images, 128x204 spectrograms, 6x2000 IMU), tiny encoders
    "tiny": ImageBindConfig(out_dim=16, **_tiny(32, 1, 4)),
    # for the embedded world (tatlas.data.world, 32-pixel scenes): what `tatlas train imagebind` and
    # the demo build
    "tiny-world": ImageBindConfig(
        out_dim=64, **{m: replace(e, drop_path=min(e.drop_path, 0.1)) for m, e in _tiny(64, 2, 4).items()},
        image_size=32, patch=8, depth_size=32, depth_patch=8, thermal_size=32, thermal_patch=8,
        mel_bins=64, audio_frames=100, audio_patch=16, audio_stride=12, imu_steps=200, imu_patch=10,
        context_length=24),
}
