"""The ``internvl`` system's record (:class:`~tatlas.models.spec.System`)."""

from __future__ import annotations

import torch

from ..spec import System
from ..vlm_task import train_task
from .config import PRESETS, InternVLConfig
from .convert import from_hf
from .model import InternVL


def _sample(model: InternVL, gen: torch.Generator) -> dict:
    """Two prompts, one single-tile image each (tiles of one prompt stay in one row of ``pixels``)."""
    c = model.config
    device = model.language_model.embed.weight.device
    s, n = c.vision.image_size, c.tokens_per_tile
    rows = []
    for _ in range(2):
        text = torch.randint(0, c.image_token_id, (8,), generator=gen)
        rows.append(torch.cat([text[:2], torch.full((n,), c.image_token_id), text[2:]]))
    pixels = torch.randn(2, c.vision.channels, s, s, generator=gen)
    return {"tokens": torch.stack(rows).to(device), "pixels": pixels.to(device)}


SYSTEM = System(
    name="internvl",
    summary="InternVL 2.5/3: InternViT -> pixel shuffle (1/4 tokens) -> LayerNorm-MLP connector -> Qwen2/Llama, dynamic tiling",
    config_cls=InternVLConfig,
    model_cls=InternVL,
    presets=PRESETS,
    sample_input=_sample,
    train_task=train_task,
    train_preset="tiny-world",
    hf_model_types={"internvl": from_hf},
    diagram=(
        "image -> 1..max_tiles tiles of the closest aspect ratio (+ thumbnail) -> InternViT (layer scale) per tile\n"
        "      -> drop class token -> pixel shuffle 2x2 -> [tile tokens / 4, 4 C] -> LayerNorm -> Linear -> GELU -> Linear\n"
        "      -> replace <IMG_CONTEXT> tokens (tile by tile) -> Qwen2 / Llama decoder -> logits"
    ),
    idea=(
        'A large vision encoder (InternViT) aligned to an LLM through a light connector, and high resolution made'
        ' affordable: the image is cut into up to 12 tiles of the closest aspect ratio plus a thumbnail, and '
        'pixel shuffle merges each 2x2 group of patch features into one token, so a tile costs a quarter of the '
        'tokens.'
    ),
    paper=(
        'Chen et al. 2024, How Far Are We to GPT-4V? (InternVL 1.5, arXiv:2404.16821); Zhu et al. 2025, InternVL3'
        ' (arXiv:2504.10479)'
    ),
    question=(
        'What does pixel shuffle do to the number and the width of the visual tokens, and how is the tile grid '
        'chosen for a given image?'
    ),
    highlight=('projector', 'projector_norm'),
)
