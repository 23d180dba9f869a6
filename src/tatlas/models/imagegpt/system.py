"""The ``imagegpt`` system's record (:class:`~tatlas.models.spec.System`)."""

from __future__ import annotations

import torch

from ..spec import System
from .config import PRESETS, ImageGPTConfig
from .convert import from_hf
from .model import ImageGPT
from .task import train_task


def _sample(model: ImageGPT, gen: torch.Generator) -> dict:
    pixels = torch.randint(0, model.config.clusters, (2, 11), generator=gen)
    tokens = torch.cat([torch.full((2, 1), model.config.sos_token), pixels], dim=1)
    return {"tokens": tokens.to(model.embed.weight.device)}


SYSTEM = System(
    name="imagegpt",
    summary="ImageGPT: k-means colour tokens, GPT-2 over pixels, image completion, linear probes",
    config_cls=ImageGPTConfig,
    model_cls=ImageGPT,
    presets=PRESETS,
    sample_input=_sample,
    hf_model_types={"imagegpt": from_hf},
    train_task=train_task,
    diagram=(
        "image [3,S,S] -> k-means palette -> colour tokens [S*S] -> [SOS, p0 .. p(N-2)]\n"
        "  -> embed + learned positions -> [ RMSNorm -> causal MHA (fused qkv, KV cache) -> + ->\n"
        "     RMSNorm -> MLP (quick_gelu) -> + ] x layers -> RMSNorm -> head over K colours -> next pixel\n"
        "  linear probe: mean over pixels of rms-normalised block-l output -> logistic regression"
    ),
    idea=(
        'Treat an image as a sequence: quantise every pixel to one of 512 colour clusters, read the pixels in '
        'raster order and train a GPT-2 to predict the next one. Nothing in the model knows it is looking at an '
        'image, yet to predict pixels well it must learn objects and shapes: completions of half images look '
        'plausible, and a linear classifier on its mid-layer features beats one on raw pixels.'
    ),
    paper='Chen et al. 2020, Generative Pretraining from Pixels (ICML 2020)',
    question=(
        'Why are the best features for a linear probe found in the middle layers rather than the last one, and '
        'what does the colour palette trade away to make the sequence short enough?'
    ),
    highlight=('Palette', 'lm_head'),
)
