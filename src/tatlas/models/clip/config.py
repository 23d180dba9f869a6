"""Configuration of CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural
Language Supervision"): a ViT image tower, a causal text transformer, and one shared embedding
space. Presets carry the exact shapes of OpenAI's released models (Table 19/20 of the paper; the
same numbers as open_clip's ``ViT-B-32.json`` etc.)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..vision import ViTConfig

# OpenAI's pre-training image statistics (open_clip ``OPENAI_DATASET_MEAN/STD``, HF ``OPENAI_CLIP_MEAN/STD``)
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

ACTS = ("quick_gelu", "gelu")
POOLS = ("argmax", "eos")


def _positive(owner: str, obj: object, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{owner}.{name} must be a positive int, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class CLIPVisionConfig(ViTConfig):
    """The image tower: a ViT with a class token, ``ln_pre`` and ``ln_post`` on the class token,
    and the preprocessing statistics its inputs are normalised with (OpenAI's, by default)."""

    act: str = "quick_gelu"
    eps: float = 1e-5
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD


@dataclass(frozen=True, kw_only=True)
class CLIPTextConfig:
    """The text tower: token embedding, learned positions, causal pre-norm blocks, final LayerNorm,
    the state at the end-of-text token pooled.

    ``pool`` says how the end-of-text position is found: ``"argmax"`` takes the largest token id of
    each row (OpenAI and open_clip: ``<end_of_text>`` = 49407 is the largest id of the CLIP BPE);
    ``"eos"`` takes the first position holding ``eos_token_id`` (Hugging Face ``CLIPTextModel``
    when its config's ``eos_token_id`` is not the legacy 2). With the CLIP tokenizer both pick the
    same position. ``eos_token_id`` is only read by ``pool="eos"``.
    """

    vocab_size: int = 49_408
    context_length: int = 77
    dim: int
    layers: int
    heads: int
    mlp_hidden: int
    act: str = "quick_gelu"
    eps: float = 1e-5
    pool: str = "argmax"
    eos_token_id: int = 49_407

    def __post_init__(self) -> None:
        _positive("CLIPTextConfig", self, ("vocab_size", "context_length", "dim", "layers", "heads", "mlp_hidden"))
        if self.dim % self.heads:
            raise ValueError(f"CLIPTextConfig: dim ({self.dim}) must be divisible by heads ({self.heads})")
        if self.act not in ACTS:
            raise ValueError(f"CLIPTextConfig.act: expected one of {ACTS}, got {self.act!r}")
        if self.pool not in POOLS:
            raise ValueError(f"CLIPTextConfig.pool: expected one of {POOLS}, got {self.pool!r}")
        if self.pool == "eos" and not 0 <= self.eos_token_id < self.vocab_size:
            raise ValueError(
                f"CLIPTextConfig.eos_token_id ({self.eos_token_id}) must be a token id below vocab_size ({self.vocab_size})"
            )


@dataclass(frozen=True, kw_only=True)
class CLIPConfig:
    """Both towers and the joint embedding. ``logit_scale_init`` is the initial log inverse
    temperature, ``ln(1 / 0.07)`` as in the paper (§2.5)."""

    embed_dim: int
    vision: CLIPVisionConfig
    text: CLIPTextConfig
    logit_scale_init: float = math.log(1 / 0.07)

    def __post_init__(self) -> None:
        _positive("CLIPConfig", self, ("embed_dim",))
        if not isinstance(self.vision, CLIPVisionConfig) or not isinstance(self.text, CLIPTextConfig):
            raise ValueError("CLIPConfig: vision and text must be CLIPVisionConfig and CLIPTextConfig")


def _openai(*, embed: int, image: int, patch: int, v_width: int, v_layers: int, t_width: int, t_layers: int) -> CLIPConfig:
    """OpenAI's ViT CLIPs: 64-wide heads in both towers, MLP ratio 4, QuickGELU, 77 tokens."""
    return CLIPConfig(
        embed_dim=embed,
        vision=CLIPVisionConfig(image_size=image, patch=patch, dim=v_width, layers=v_layers, heads=v_width // 64,
                                mlp_hidden=4 * v_width),
        text=CLIPTextConfig(dim=t_width, layers=t_layers, heads=t_width // 64, mlp_hidden=4 * t_width),
    )


PRESETS: dict[str, CLIPConfig] = {
    # for tests and the demo: the real CLIP BPE vocabulary, a short context (world captions are <= 14 tokens)
    "tiny": CLIPConfig(
        embed_dim=32,
        vision=CLIPVisionConfig(image_size=32, patch=8, dim=64, layers=2, heads=4, mlp_hidden=256),
        text=CLIPTextConfig(context_length=32, dim=64, layers=2, heads=4, mlp_hidden=256),
    ),
    "ViT-B/32": _openai(embed=512, image=224, patch=32, v_width=768, v_layers=12, t_width=512, t_layers=12),
    "ViT-B/16": _openai(embed=512, image=224, patch=16, v_width=768, v_layers=12, t_width=512, t_layers=12),
    "ViT-L/14": _openai(embed=768, image=224, patch=14, v_width=1024, v_layers=24, t_width=768, t_layers=12),
    "ViT-L/14@336": _openai(embed=768, image=336, patch=14, v_width=1024, v_layers=24, t_width=768, t_layers=12),
}
