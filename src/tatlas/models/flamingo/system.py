"""The ``flamingo`` system's record (:class:`~tatlas.models.spec.System`)."""

from __future__ import annotations

import torch

from ..spec import System
from .config import PRESETS, FlamingoConfig
from .convert import from_hf, from_open_flamingo
from .model import Flamingo
from .task import train_task


def _sample(model: Flamingo, gen: torch.Generator) -> dict:
    """Two interleaved prompts over two images each: row 0 ``<image> text <image> text``, row 1
    text before its first image (which sees no image)."""
    c = model.config
    device = model.language_model.embed.weight.device
    text_max = min(i for i in (c.media_token_id, c.eoc_token_id, c.text.vocab_size) if i is not None)
    tokens = torch.randint(0, text_max, (2, 12), generator=gen)
    tokens[0, 0] = tokens[0, 6] = tokens[1, 3] = tokens[1, 8] = c.media_token_id
    v = c.vision
    pixels = torch.randn(2, 2, v.channels, v.image_size, v.image_size, generator=gen)
    return {"tokens": tokens.to(device), "pixels": pixels.to(device)}


SYSTEM = System(
    name="flamingo",
    summary="Flamingo / IDEFICS / OpenFlamingo: CLIP ViT -> Perceiver resampler -> tanh-gated cross-attention into a "
            "frozen LM",
    config_cls=FlamingoConfig,
    model_cls=Flamingo,
    presets=PRESETS,
    sample_input=_sample,
    hf_model_types={"idefics": from_hf},
    formats={"open_flamingo": from_open_flamingo},
    train_task=train_task,
    train_preset="tiny-world",
    diagram=(
        "each image -> CLIP ViT -> Perceiver resampler (latents attend [features; latents]) -> n visual tokens\n"
        "text: ... <image> caption <|endofchunk|> <image> ... -> frozen LM layers, and before every k-th:\n"
        "  x + tanh(a) * xattn(norm(x), tokens of the latest image before x)   (a = 0 at init)\n"
        "  x + tanh(b) * mlp(norm(x))                                           (b = 0 at init) -> logits"
    ),
    idea=(
        "Keep a pretrained vision encoder and a pretrained LM frozen; between the LM's layers insert new cross-"
        'attention blocks that read a fixed number of visual tokens (a Perceiver resampler compresses each '
        'image), each scaled by tanh of a learned gate that starts at 0, so at the start of training the model is'
        ' exactly the frozen LM. Trained on interleaved image-text web pages, it learns new tasks from a few '
        'examples in its prompt.'
    ),
    paper='Alayrac et al. 2022, Flamingo: a Visual Language Model for Few-Shot Learning (NeurIPS 2022)',
    question=(
        'Why do the new cross-attention blocks start with their gates at zero, and which image does a text token '
        'attend to?'
    ),
    highlight=('GatedCrossAttentionBlock', 'PerceiverResampler'),
)
