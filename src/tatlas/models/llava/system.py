"""The ``llava`` system's record (:class:`~tatlas.models.spec.System`)."""

from __future__ import annotations

import torch

from ..spec import System
from ..vlm_task import train_task
from .config import PRESETS, LlavaConfig
from .convert import from_hf
from .model import Llava


def _sample(model: Llava, gen: torch.Generator) -> dict:
    """Two prompts, one image each; LLaVA-NeXT's two images of different aspect ratios, in
    transformers' padded layout ``[N_images, P_max, 3, S, S]`` (so each row slices alone)."""
    c = model.config
    device = model.language_model.embed.weight.device
    s = c.vision.image_size
    if c.grid_pinpoints is None:
        sizes, counts, n_tokens = None, [1, 1], [c.tokens_per_tile] * 2
        pixels = torch.randn(2, c.vision.channels, s, s, generator=gen)
    else:
        sizes = torch.tensor([[s, 2 * s], [2 * s + 3, s]])
        counts = model.tiles_per_image(sizes)
        n_tokens = [model.image_token_count((h, w)) for h, w in sizes.tolist()]
        pixels = torch.zeros(2, max(counts), c.vision.channels, s, s)
        for i, n in enumerate(counts):
            pixels[i, :n] = torch.randn(n, c.vision.channels, s, s, generator=gen)
    width = max(n_tokens) + 6
    rows = []
    for n in n_tokens:
        text = torch.randint(0, c.image_token_id, (width - n,), generator=gen)
        rows.append(torch.cat([text[:2], torch.full((n,), c.image_token_id), text[2:]]))
    out = {"tokens": torch.stack(rows).to(device), "pixels": pixels.to(device)}
    if sizes is not None:
        out["image_sizes"] = sizes.to(device)
    return out


SYSTEM = System(
    name="llava",
    summary="LLaVA-1.5 / LLaVA-NeXT: CLIP ViT (penultimate layer) -> MLP connector -> decoder LM, anyres tiling",
    config_cls=LlavaConfig,
    model_cls=Llava,
    presets=PRESETS,
    sample_input=_sample,
    train_task=train_task,
    train_preset="tiny-world",
    hf_model_types={"llava": from_hf, "llava_next": from_hf},
    diagram=(
        "image -> (NeXT: base image + tiles of the best grid) -> CLIP ViT, read at layer -2, class token dropped\n"
        "      -> Linear -> GELU -> Linear -> (NeXT: tiles laid out, unpadded, image_newline per row)\n"
        "      -> replace the <image> tokens -> decoder LM (Llama / Mistral / Qwen2) -> logits"
    ),
    idea=(
        'Connect a pretrained CLIP vision encoder to a pretrained LLM with nothing more than a small MLP that '
        'maps each image patch feature to a word embedding, then train on instruction-following conversations '
        "about images. The image becomes a few hundred 'visual words' in the prompt; LLaVA-NeXT adds tiles of a "
        'high-resolution grid so small details survive.'
    ),
    paper=(
        'Liu et al. 2023, Visual Instruction Tuning (NeurIPS 2023); Liu et al. 2024, Improved Baselines with '
        'Visual Instruction Tuning (CVPR 2024)'
    ),
    question=(
        "How many tokens does one image cost in the LLM's context, and why is the vision encoder read at its "
        'second-to-last layer?'
    ),
    highlight=('projector',),
)
